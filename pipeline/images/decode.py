"""Untrusted image bytes → one loaded, upright, 8-bit RGB or RGBA picture, or an ItemError.

Every way a repository image can be bad (empty, not an image, truncated, corrupt, a decompression
bomb) ends here as an ItemError naming the file, so one bad image is skipped and recorded instead of
failing the stage or taking the worker's memory.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageOps, UnidentifiedImageError

from pipeline.errors import ItemError

# 80 MP is a 10000x8000 photo (~320 MB as RGBA); anything bigger in a markdown repository is far more
# likely a crafted file than a picture someone meant to publish.
DEFAULT_MAX_PIXELS = 80_000_000

# Pillow's resampling filters hold a table of weights for every output pixel, each covering the source pixels
# under the kernel: about 48 bytes per pixel of the side being reduced, whatever the output size (measured on
# LANCZOS, which the variants use). The pixel cap leaves that unbounded for a thin image: 1 x 60,000,000 pixels
# is under it, yet asks for ~2.9 GB to resize. This caps the table, so a side may be about 1.4 million pixels.
RESAMPLE_BYTES_PER_PIXEL = 48
MAX_RESAMPLE_BYTES = 64 * 1024 * 1024
MAX_SIDE = MAX_RESAMPLE_BYTES // RESAMPLE_BYTES_PER_PIXEL

# Only the formats the media discovery accepts; Pillow's exotic plugins (PSD, EPS, FITS...) are a larger
# attack surface for no gain. "JPEG" also opens cameras' MPO files (MPO has no opener of its own).
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "BMP", "TIFF")

# What Pillow's decoders raise on malformed input (measured by truncating and bit-flipping samples of every
# accepted format): the plugins are old code and do not all funnel through OSError (AVIF raises RuntimeError).
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError,
    ZeroDivisionError, RuntimeError, Image.DecompressionBombError,
)


@lru_cache(maxsize=1)
def _openable_formats() -> tuple[str, ...]:
    # Image.open raises KeyError for a listed format that has no opener (AVIF on a Pillow built without
    # libavif), and would then reject every file tried after it; list only what this Pillow can open.
    Image.init()
    return tuple(f for f in ACCEPTED_FORMATS if f in Image.OPEN)


_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
# EXIF orientations that turn the picture a quarter: the stored width is the upright height.
_QUARTER_TURNS = frozenset({5, 6, 7, 8})

# The upright (width, height) of a source → the smallest (width, height) its users need decoded.
SizeNeeded = Callable[[int, int], tuple[int, int]]


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # mode RGB or RGBA, fully loaded, EXIF orientation applied
    format: str  # what the bytes were (JPEG, PNG...), not what the file name says
    icc_profile: bytes | None  # kept so wide-gamut photos keep their colours in the variants
    # The upright size of the whole picture. `image` is smaller when a JPEG was decoded at a reduced scale.
    source_size: tuple[int, int]


def open_image(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS,
               needed: SizeNeeded | None = None) -> DecodedImage:
    """Decode the first frame of `data`; `name` only labels errors.

    With `needed`, a JPEG is decoded at the smallest of 1/2, 1/4, 1/8 scale that still covers what `needed` asks
    for (its DCT allows it): a 24 MP photo whose largest variant is 2160 px wide decodes in a third of the time
    and memory. Other formats have no such scale and decode whole.
    """
    if not data:
        raise ItemError(name, "empty file (0 bytes)")
    with _bomb_warnings_refused():
        return _decode(data, name, max_pixels, needed)


@contextmanager
def _bomb_warnings_refused() -> Iterator[None]:
    # warnings.catch_warnings is process-wide, not per thread; two threads interleaving here can at worst
    # leave these two filters installed, and both are harmless outside this function.
    with warnings.catch_warnings():
        # Pillow only warns between its limit and twice that; a warning is not a refusal, so make it one.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        # Pillow warns about damaged metadata (EXIF, TIFF tags) of pictures that decode fine; under an
        # "error" warnings filter those would escape as exceptions and lose a good image.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        yield


def check_decodable(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of an image that will decode, else the ItemError `open_image` would raise.

    Cheaper than decoding: a JPEG is decoded at 1/8 scale (its DCT allows it), which still reads every
    byte, so a truncated file is caught before any post links to variants that cannot be made.
    """
    if not data:
        raise ItemError(name, "empty file (0 bytes)")
    with _bomb_warnings_refused():
        img = _open_checked(data, name, max_pixels)
        width, height = img.size
        try:
            if img.format == "JPEG":
                img.draft(img.mode, (max(1, width // 8), max(1, height // 8)))
            img.load()
        except DECODE_ERRORS as exc:
            raise ItemError(name, f"corrupt or truncated {img.format} image: {exc.__class__.__name__}: {exc}") from exc
    return width, height


def _open_checked(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """The opened (not yet decoded) image, its header and size checked."""
    try:
        img = Image.open(io.BytesIO(data), formats=_openable_formats())
    except UnidentifiedImageError as exc:
        claimed = _magic_format(data)
        if claimed:  # the plugin recognised its signature and then choked: say so, not "unknown format"
            raise ItemError(name, f"corrupt {claimed} image: its header cannot be read") from exc
        raise ItemError(name, f"not an image in a supported format ({', '.join(ACCEPTED_FORMATS)})") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ItemError(name, f"image too large, refused as a possible decompression bomb ({exc})") from exc
    except DECODE_ERRORS as exc:
        raise ItemError(name, f"corrupt image header: {exc.__class__.__name__}: {exc}") from exc
    width, height = img.size
    # Checked on the header, before a single pixel is decoded: this is what keeps memory bounded.
    if width * height > max_pixels:
        raise ItemError(name, f"image too large: {width}x{height} is {width * height:,} pixels, "
                              f"more than the limit of {max_pixels:,} (possible decompression bomb)")
    if width <= 0 or height <= 0:
        raise ItemError(name, f"image has no pixels ({width}x{height})")
    if max(width, height) > MAX_SIDE:
        raise ItemError(name, f"image too long and thin to resize: {width}x{height} has a side of more than "
                              f"{MAX_SIDE:,} pixels, which would take over {MAX_RESAMPLE_BYTES >> 20} MB to resample")
    return img


def _decode(data: bytes, name: str, max_pixels: int, needed: SizeNeeded | None) -> DecodedImage:
    img = _open_checked(data, name, max_pixels)
    fmt = img.format or "unknown"
    stored = img.size
    try:
        if needed is not None and fmt == "JPEG":
            turned = _orientation(img) in _QUARTER_TURNS
            w, h = needed(*(stored[::-1] if turned else stored))
            # The mode stays as it is: draft only picks the scale, so the pixels go through the same steps.
            img.draft(img.mode, (h, w) if turned else (w, h))
        img.load()  # the first frame only: GIF/APNG/WebP animations are published as their first frame
        drafted = img.size
        icc = img.info.get("icc_profile")
        out, icc = _to_rgb(_to_8bit(_upright(img)), icc if isinstance(icc, bytes) and icc else None)
    except DECODE_ERRORS as exc:
        raise ItemError(name, f"corrupt or truncated {fmt} image: {exc.__class__.__name__}: {exc}") from exc
    # Turned by its EXIF orientation or not: what _upright did, not what the tag claims (it may be mangled).
    return DecodedImage(out, fmt, icc, stored if out.size == drafted else (stored[1], stored[0]))


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(ExifTags.Base.Orientation, 1))
    except DECODE_ERRORS:
        return 1  # as _upright: a mangled EXIF block leaves the picture as stored


_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
          (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def _magic_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:12] in (b"ftypavif", b"ftypavis"):
        return "AVIF"
    return next((fmt for magic, fmt in _MAGIC if data.startswith(magic)), None)


def _upright(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except DECODE_ERRORS:
        # A mangled EXIF block should not cost the picture; unrotated is what browsers showed for years.
        return img


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale scaled into 0..255 (Pillow's own convert('L') clips at 255 instead)."""
    if img.mode not in _SIXTEEN_BIT and img.mode not in ("I", "F"):
        return img
    a = np.asarray(img).astype(np.float64)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if img.mode in _SIXTEEN_BIT or (img.mode == "I" and lo >= 0 and hi <= 65535):
        # PNG and TIFF 16-bit greyscale open as I;16 or I: the full 0..65535 range maps onto 0..255.
        a = a / 257.0
    elif img.mode == "F" and lo >= 0 and hi <= 1:
        a = a * 255.0
    elif hi > lo:
        a = (a - lo) * (255.0 / (hi - lo))  # no known range: stretch what is there
    else:
        a = np.zeros_like(a)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")


def _to_rgb(img: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    if img.mode == "CMYK":
        return _cmyk_to_srgb(img, icc), None
    alpha = img.mode in _ALPHA_MODES or "transparency" in img.info
    target = "RGBA" if alpha else "RGB"
    out = img if img.mode == target else img.convert(target)
    if target == "RGBA" and out.getchannel("A").getextrema() == (255, 255):
        # Fully opaque alpha (common in screenshots) only costs encoder time and bytes.
        out = out.convert("RGB")
    # Only an RGB profile describes the RGB pixels we now hold; a grey one (L images) would be wrong.
    return out, icc if icc and _is_rgb_profile(icc) else None


def _cmyk_to_srgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    """Through the embedded profile when there is one: naive CMYK→RGB turns print colours muddy."""
    converted: Image.Image | None = None
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            converted = None  # a broken or mismatched profile: the naive conversion is still a usable picture
    return converted if converted is not None else img.convert("RGB")


def _is_rgb_profile(icc: bytes) -> bool:
    # Bytes 16..20 of an ICC header name the colour space of the data it describes.
    return len(icc) >= 20 and icc[16:20] == b"RGB "
