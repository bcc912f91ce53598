"""Tier 1: the `_medias/` variants of every kind of repository image, and every kind of bad one."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, features

from pipeline.errors import ItemError
from pipeline.images import (
    SIZES,
    Variant,
    is_passthrough,
    make_variants,
    media_sizes_entry,
    passthrough_filename,
    variant_filename,
)
from pipeline.images.variants import WEBP_MAX_SIDE

pytestmark = pytest.mark.timeout(60)


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def decode(v: Variant) -> Image.Image:
    img = Image.open(io.BytesIO(v.data))
    img.load()
    assert img.format == v.format.upper()
    assert img.size == (v.width, v.height)
    return img


def by_size(variants: list[Variant]) -> dict[str, Variant]:
    assert [v.size_name for v in variants] == [name for name, _ in SIZES]
    return {v.size_name: v for v in variants}


def png_header_only(width: int, height: int) -> bytes:
    """A 1-bit PNG claiming width x height, with a token IDAT: costs nothing to make, a lot to decode."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_large_jpeg_with_exif_orientation_6_is_rotated_and_fitted() -> None:
    # Stored landscape 2400x1600 with a red block top-left; orientation 6 means "rotate 90° clockwise to view".
    arr = np.full((1600, 2400, 3), 200, dtype=np.uint8)
    arr[:400, :400] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(arr), "JPEG", quality=90, exif=exif.tobytes())
    sizes = by_size(make_variants(data, "photos/big.jpg"))
    assert [(v.width, v.height) for v in sizes.values()] == [(100, 150), (300, 450), (700, 1050), (1400, 2100),
                                                            (1600, 2400)]  # portrait now; xl capped at 1600
    xs = np.asarray(decode(sizes["xs"]).convert("RGB"), dtype=int)
    # Clockwise rotation moves the stored top-left corner to the top-right.
    assert xs[5, 95, 0] > 200 and xs[5, 95, 1] < 80
    assert xs[5, 5, 0] < 230 and xs[5, 5, 1] > 150
    # The EXIF block (and its orientation) is not carried into the public file.
    assert "exif" not in decode(sizes["md"]).info


def test_small_image_is_never_enlarged_and_every_size_is_emitted() -> None:
    data = encode(Image.new("RGB", (500, 250), (10, 120, 200)), "PNG")
    sizes = by_size(make_variants(data, "small.png"))
    assert [(v.width, v.height) for v in sizes.values()] == [(100, 50), (300, 150), (500, 250), (500, 250),
                                                            (500, 250)]
    assert sizes["md"].data == sizes["lg"].data == sizes["xl"].data
    assert all(v.format == "webp" for v in sizes.values())


def test_animated_gif_publishes_its_first_frame() -> None:
    frames = [Image.new("RGB", (120, 80), (255, 0, 0)), Image.new("RGB", (120, 80), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    xs = decode(by_size(make_variants(data, "anim.gif"))["xs"])
    r, g, b = xs.convert("RGB").getpixel((50, 30))  # type: ignore[misc]
    assert r > 200 and b < 60


def test_palette_image_with_transparency_keeps_alpha() -> None:
    img = Image.new("P", (200, 100), 0)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.paste(1, (100, 0, 200, 100))
    data = encode(img, "PNG", transparency=0)  # palette index 0 (the left half) is transparent
    xl = decode(by_size(make_variants(data, "p.png"))["xl"])
    assert xl.mode == "RGBA"
    assert xl.getpixel((20, 50))[3] == 0  # type: ignore[index]
    assert xl.getpixel((180, 50))[3] == 255  # type: ignore[index]


def test_rgba_keeps_alpha_and_opaque_alpha_is_dropped() -> None:
    img = Image.new("RGBA", (300, 200), (0, 128, 0, 255))
    img.paste((0, 128, 0, 64), (0, 0, 150, 200))
    xl = decode(by_size(make_variants(encode(img, "PNG"), "half.png"))["xl"])
    assert xl.mode == "RGBA"
    assert abs(xl.getpixel((20, 100))[3] - 64) <= 2  # type: ignore[index]
    opaque = decode(by_size(make_variants(encode(Image.new("RGBA", (50, 50), (1, 2, 3, 255)), "PNG"), "o.png"))["xl"])
    assert opaque.mode == "RGB"


def test_la_greyscale_with_alpha_becomes_rgba() -> None:
    img = Image.new("LA", (64, 64), (128, 0))
    img.paste((128, 255), (32, 0, 64, 64))
    xl = decode(by_size(make_variants(encode(img, "PNG"), "la.png"))["xl"])
    assert xl.mode == "RGBA" and xl.getpixel((5, 5))[3] == 0  # type: ignore[index]


def test_cmyk_jpeg_becomes_rgb() -> None:
    img = Image.new("CMYK", (320, 240), (0, 255, 255, 0))  # full magenta + yellow = red
    data = encode(img, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    xl = decode(by_size(make_variants(data, "print.jpg"))["xl"])
    assert xl.mode == "RGB"
    r, g, b = xl.getpixel((160, 120))  # type: ignore[misc]
    assert r > 200 and g < 60 and b < 60


def test_16_bit_png_is_scaled_not_clipped() -> None:
    arr = np.zeros((64, 128), dtype=np.uint16)
    arr[:, :64] = 32896  # mid grey in 16 bits: 128 in 8 bits; Pillow's convert("L") would clip it to 255
    arr[:, 64:] = 65535
    data = encode(Image.fromarray(arr), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    xl = decode(by_size(make_variants(data, "deep.png"))["xl"]).convert("L")
    assert abs(xl.getpixel((20, 32)) - 128) <= 3  # type: ignore[operator]
    assert xl.getpixel((110, 32)) >= 250  # type: ignore[operator]


@pytest.mark.parametrize("fmt", ["WEBP", "BMP", "TIFF", "AVIF"])
def test_other_accepted_formats_decode(fmt: str) -> None:
    if fmt == "AVIF" and not features.check("avif"):
        pytest.skip("this Pillow has no AVIF codec")
    data = encode(Image.new("RGB", (150, 90), (30, 60, 90)), fmt)
    sizes = by_size(make_variants(data, f"x.{fmt.lower()}"))
    assert (sizes["xl"].width, sizes["xl"].height) == (150, 90)


def test_very_tall_image_stays_within_webp_limits() -> None:
    data = encode(Image.new("L", (1000, 20000), 90), "PNG")
    xl = by_size(make_variants(data, "tall.png"))["xl"]
    assert xl.height == WEBP_MAX_SIDE and xl.width == round(1000 * WEBP_MAX_SIDE / 20000)
    decode(xl)


def test_jpeg_output_flattens_alpha_on_white() -> None:
    img = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    variants = make_variants(encode(img, "PNG"), "clear.png", fmt="jpeg")
    xs = decode(variants[0])
    assert variants[0].format == "jpeg" and xs.getpixel((50, 25)) == (255, 255, 255)
    assert variant_filename("ab" * 32, variants[0]) == "ab" * 32 + "-xs.jpg"


def test_media_sizes_entry_has_the_contract_shape() -> None:
    data = encode(Image.new("RGB", (800, 400), (5, 5, 5)), "PNG")
    sha = "0f" * 32
    sizes = media_sizes_entry(sha, make_variants(data, "a.png"), "https://example.org/_repo/medias/")
    assert list(sizes) == ["xs", "sm", "md", "lg", "xl"]
    md = sizes["md"][0]
    assert md == {"width": 700, "height": 350, "format": "webp",
                  "publicPath": f"https://example.org/_repo/medias/{sha}-md.webp", "size": md["size"]}
    assert isinstance(md["size"], int) and md["size"] > 0
    assert sizes["xl"][0]["publicPath"] == f"https://example.org/_repo/medias/{sha}-xl.webp"


def test_passthrough_media() -> None:
    assert is_passthrough("svg") and is_passthrough(".SVG") and is_passthrough("mp4") and is_passthrough("webm")
    assert not is_passthrough("png") and not is_passthrough("gif")
    assert passthrough_filename("ab" * 32, ".SVG") == "ab" * 32 + ".svg"


# --- bad input: always an ItemError naming the file, never a crash ---------------------------------------

def _photo() -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))


BAD = {
    "zero-byte": (b"", "empty"),
    "random bytes": (bytes(np.random.default_rng(5).integers(0, 255, 4000, dtype=np.uint8)), "supported format"),
    "text": (b"<html>not an image</html>", "supported format"),
    "corrupt png": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, "corrupt PNG"),
    "corrupt gif": (b"GIF89a" + b"\xff" * 50, "GIF"),
    "unknown format (ico)": (encode(Image.new("RGB", (32, 32)), "ICO"), "supported format"),
    "truncated jpeg": (encode(_photo(), "JPEG")[: len(encode(_photo(), "JPEG")) // 2], "truncated"),
    "truncated png": (encode(_photo(), "PNG")[: len(encode(_photo(), "PNG")) // 2], "truncated"),
    "bomb beyond Pillow's hard limit": (png_header_only(20000, 20000), "decompression bomb"),
    "bomb in Pillow's warning band": (png_header_only(10000, 10000), "decompression bomb"),
    "bomb over our limit only": (png_header_only(9000, 9000), "decompression bomb"),
    "zero width": (png_header_only(0, 10), "PNG"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_images_raise_item_error_with_the_file_name(kind: str) -> None:
    data, reason = BAD[kind]
    name = f"posts/images/{kind.replace(' ', '-')}.png"
    with pytest.raises(ItemError) as err:
        make_variants(data, name)
    assert err.value.path == name
    assert str(err.value).startswith(f"{name}: ")
    assert reason in err.value.reason


def test_pixel_limit_is_configurable() -> None:
    data = encode(Image.new("RGB", (200, 100)), "PNG")
    with pytest.raises(ItemError, match="more than the limit of 10,000"):
        make_variants(data, "a.png", max_pixels=10_000)
    assert len(make_variants(data, "a.png", max_pixels=20_000)) == 5


def test_every_truncation_of_a_jpeg_is_an_item_error_or_a_picture() -> None:
    data = encode(_photo().resize((80, 60)), "JPEG")
    for cut in range(0, len(data), 97):
        try:
            make_variants(data[:cut], "cut.jpg")
        except ItemError as exc:
            assert exc.path == "cut.jpg"
