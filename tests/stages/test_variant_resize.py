"""Tier 1: how the variants are made cheaply — each size from the one before, JPEGs decoded at a reduced scale —
gives the sizes and the picture that resizing the whole decoded source each time gives."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.images import Variant, make_variants, open_image, target_sizes
from pipeline.images.variants import largest_size, resized

pytestmark = pytest.mark.timeout(60)


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def picture(width: int, height: int) -> Image.Image:
    """Smooth gradients with a few hard-edged blocks: what photos and screenshots are made of."""
    y, x = np.mgrid[0:height, 0:width]
    wave = 128 + 100 * np.sin(x / 40) * np.cos(y / 55)
    arr = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), wave], axis=-1).astype(np.uint8)
    for k in range(4):
        top, left = height * k // 5, width * k // 5
        arr[top:top + height // 10, left:left + width // 10] = (255 * (k % 2), 40 * k, 255 - 60 * k)
    return Image.fromarray(arr)


def sizes(variants: list[Variant]) -> list[tuple[str, int, int]]:
    return [(v.size_name, v.width, v.height) for v in variants]


@pytest.mark.parametrize("size", [(4321, 3001), (2161, 17), (17, 2161), (3000, 3000), (701, 301), (800, 20000)])
def test_each_size_from_the_previous_has_the_sizes_of_target_sizes(size: tuple[int, int]) -> None:
    width, height = size
    img = Image.new("RGB", size, (90, 160, 30)) if width * height > 13_000_000 else picture(width, height)
    got = sizes(make_variants(encode(img, "PNG"), "a.png"))
    assert got == target_sizes(width, height)


def test_each_size_from_the_previous_looks_like_each_from_the_source() -> None:
    src = picture(3000, 2000)
    decoded = open_image(encode(src, "PNG"), "a.png")
    for name, img in resized(decoded):
        direct = np.asarray(src.resize(img.size, Image.Resampling.LANCZOS), dtype=float)
        diff = np.abs(np.asarray(img, dtype=float) - direct)
        # Measured 0.0-0.14 on average and at most 8 levels (of 255); webp at quality 80 itself is 1-7 off.
        assert diff.mean() < 0.5 and diff.max() <= 16, name


def test_large_jpeg_is_decoded_at_a_reduced_scale_that_still_covers_the_largest_variant() -> None:
    data = encode(picture(4400, 1000), "JPEG", quality=90)
    whole = open_image(data, "wide.jpg")
    assert whole.image.size == whole.source_size == (4400, 1000)
    drafted = open_image(data, "wide.jpg", needed=largest_size)
    assert largest_size(4400, 1000) == (2160, 491)
    assert drafted.image.size == (2200, 500)  # half scale: 2160 x 491 still fits, a quarter would not
    assert drafted.source_size == (4400, 1000)
    assert sizes(make_variants(data, "wide.jpg")) == target_sizes(4400, 1000)


def test_draft_scale_follows_the_exif_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 1000 x 4400, shown 4400 x 1000
    data = encode(picture(1000, 4400), "JPEG", quality=90, exif=exif.tobytes())
    decoded = open_image(data, "turned.jpg", needed=largest_size)
    assert decoded.image.size == (2200, 500) and decoded.source_size == (4400, 1000)
    assert sizes(make_variants(data, "turned.jpg")) == target_sizes(4400, 1000)


def test_a_jpeg_smaller_than_twice_its_largest_variant_and_other_formats_decode_whole() -> None:
    jpeg = encode(picture(4000, 1000), "JPEG", quality=90)  # 4000 // 2160 = 1: no smaller scale covers xl
    assert open_image(jpeg, "a.jpg", needed=largest_size).image.size == (4000, 1000)
    png = encode(picture(4400, 1000), "PNG")
    assert open_image(png, "a.png", needed=largest_size).image.size == (4400, 1000)


def test_variants_are_deterministic() -> None:
    data = encode(picture(2600, 1700), "JPEG", quality=90)
    assert make_variants(data, "a.jpg") == make_variants(data, "a.jpg")
