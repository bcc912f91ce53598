"""The resized copies of a repository image published under `_medias/` (CONTRACT §3).

`<sha256>-{xs,sm,md,lg,xl}.webp`, widths 100/300/700/1400/2160, fitted inside the width with the aspect
kept and never enlarged: a 500-px image still gets all five names, md/lg/xl at 500 px, because clients
build URLs from the size name without knowing the source width. svg/mp4/webm are not re-encoded; they
are published as `<sha256>.<ext>`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Literal, NamedTuple

from PIL import Image

from pipeline.errors import ItemError
from pipeline.images.decode import DECODE_ERRORS, DEFAULT_MAX_PIXELS, DecodedImage, open_image

SIZES: tuple[tuple[str, int], ...] = (("xs", 100), ("sm", 300), ("md", 700), ("lg", 1400), ("xl", 2160))
WEBP_QUALITY = 80
# libwebp's effort (0 fastest .. 6 smallest). Measured on the 45 rasters of opensource-guide and til (screenshots,
# cards, a few photos), all five sizes: method 2 encodes in about half the time of 4 (0.057 vs 0.104 s/image) for
# 4.6 % more bytes at the same quality setting (PSNR 40.37 vs 40.45 dB); 1 saves little more time for 24 % more
# bytes, 6 takes six times as long to save 3 %. Encoding is most of the stage's work, so 2.
WEBP_METHOD = 2
JPEG_QUALITY = 85
REDUCING_GAP = 2.0
# libwebp's hard limit per side; a very tall image at its capped width could exceed it otherwise.
WEBP_MAX_SIDE = 16383
PASSTHROUGH_EXTS = frozenset({"svg", "mp4", "webm", "mov", "m4v", "ogv", "mp3", "m4a", "ogg", "oga", "wav", "flac"})
_EXTENSIONS = {"webp": "webp", "jpeg": "jpg"}

OutputFormat = Literal["webp", "jpeg"]


class VariantInfo(NamedTuple):
    """What the bundle says about a variant; kept in the variant cache beside the file."""

    size_name: str
    width: int
    height: int
    format: str  # "webp" or "jpeg"
    nbytes: int


class Variant(NamedTuple):
    size_name: str
    width: int
    height: int
    format: str  # "webp" or "jpeg"
    data: bytes

    @property
    def nbytes(self) -> int:
        return len(self.data)

    def info(self) -> VariantInfo:
        return VariantInfo(self.size_name, self.width, self.height, self.format, len(self.data))


def is_passthrough(ext: str) -> bool:
    """True for the media published byte-for-byte (vector images, video and audio)."""
    return ext.lower().lstrip(".") in PASSTHROUGH_EXTS


def passthrough_filename(sha256: str, ext: str) -> str:
    return f"{sha256}.{ext.lower().lstrip('.')}"


def variant_filename(sha256: str, variant: Variant | VariantInfo) -> str:
    return f"{sha256}-{variant.size_name}.{_EXTENSIONS[variant.format]}"


def target_sizes(width: int, height: int, fmt: OutputFormat = "webp") -> list[tuple[str, int, int]]:
    """(size name, width, height) of every variant of a width x height source."""
    out = []
    for size_name, max_width in SIZES:
        w = min(max_width, width)
        h = max(1, round(height * w / width))
        if fmt == "webp" and h > WEBP_MAX_SIDE:
            w, h = max(1, round(width * WEBP_MAX_SIDE / height)), WEBP_MAX_SIDE
        out.append((size_name, w, h))
    return out


def largest_size(width: int, height: int, fmt: OutputFormat = "webp") -> tuple[int, int]:
    """(width, height) of the largest variant of a width x height source: all a decoder needs to produce."""
    _, w, h = target_sizes(width, height, fmt)[-1]
    return w, h


def make_variants(data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                  fmt: OutputFormat = "webp") -> list[Variant]:
    """Every size of one image, smallest first. Bad input raises ItemError(name, reason); nothing else escapes."""
    return variants_of(open_image(data, name, max_pixels, needed=lambda w, h: largest_size(w, h, fmt)), name, fmt)


def variants_of(decoded: DecodedImage, name: str, fmt: OutputFormat = "webp") -> list[Variant]:
    """make_variants of an image already decoded (at least at its largest size), for a caller that needs the
    picture for something else too."""
    encoded: dict[tuple[int, int], bytes] = {}
    variants: list[Variant] = []
    try:
        for size_name, img in resized(decoded, fmt):
            if img.size not in encoded:  # md/lg/xl of a small image are the same picture: encode it once
                encoded[img.size] = _encode(img, fmt, decoded.icc_profile)
            variants.append(Variant(size_name, img.width, img.height, fmt, encoded[img.size]))
    except DECODE_ERRORS as exc:
        raise ItemError(name, f"could not resize or encode: {exc.__class__.__name__}: {exc}") from exc
    variants.reverse()
    return variants


def resized(decoded: DecodedImage, fmt: OutputFormat = "webp") -> Iterator[tuple[str, Image.Image]]:
    """(size name, picture) of every variant, largest first; sizes that come out equal share one picture.

    Each from the previous one: on the 45 rasters of opensource-guide and til 0.028 s/image instead of 0.044 from
    the source each time, a channel 0.16 levels of 255 off on average (screenshots' sharp edges up to 26). The sizes
    come from the whole picture's size, not from the decoded one, so a JPEG decoded at a reduced scale gets the
    same variant sizes as one decoded whole.
    """
    prev = decoded.image
    for size_name, w, h in reversed(target_sizes(*decoded.source_size, fmt)):
        if (w, h) != prev.size:
            # reduce() by a whole factor first, leaving LANCZOS a step of REDUCING_GAP or more (as Image.thumbnail
            # does): a 9000-px screenshot to 2160 px in 0.35 s instead of 0.78, a channel at most 6 levels of 255
            # off, 0.14 on average. The steps between sizes are all under 4, so only the first one, from a large
            # source, is ever reduced.
            prev = prev.resize((w, h), Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)
        yield size_name, prev


def _encode(img: Image.Image, fmt: OutputFormat, icc: bytes | None) -> bytes:
    buf = io.BytesIO()
    # No EXIF is written: it would carry GPS positions and camera serials into a public bundle, and the
    # orientation it held is already applied to the pixels.
    extra: dict[str, bytes] = {"icc_profile": icc} if icc else {}
    if fmt == "webp":
        img.save(buf, "WEBP", quality=WEBP_QUALITY, method=WEBP_METHOD, **extra)
    else:
        if img.mode == "RGBA":  # JPEG has no alpha; transparent areas become the usual page white
            flat = Image.new("RGB", img.size, (255, 255, 255))
            flat.paste(img, mask=img.getchannel("A"))
            img = flat
        img.save(buf, "JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True, **extra)
    return buf.getvalue()


def media_sizes_entry(sha256: str, variants: Sequence[Variant | VariantInfo],
                      url_prefix: str) -> dict[str, list[dict[str, object]]]:
    """The `sizes` field of a medias.json entry: {xs..xl: [{width, height, format, publicPath, size}]}.

    `url_prefix` is where `_medias/` is served, e.g. "/_repo/medias" or "https://example.org/_repo/medias".
    """
    prefix = url_prefix.rstrip("/")
    sizes: dict[str, list[dict[str, object]]] = {}
    for v in variants:
        sizes.setdefault(v.size_name, []).append({
            "width": v.width,
            "height": v.height,
            "format": v.format,
            "publicPath": f"{prefix}/{variant_filename(sha256, v)}",
            "size": v.nbytes,
        })
    return sizes
