"""CLIP image preprocessing with Pillow and numpy, read from a model's `preprocessor_config.json`.

It follows Hugging Face's CLIPImageProcessor (what Xenova's exports are described by): resize the
shortest side with the configured filter (bicubic for CLIP), centre crop, scale to 0..1, normalise
per channel, NCHW float32. A model sees inputs exactly like those it was trained on only if every step
matches, so each one reads its setting rather than assuming OpenAI's defaults.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from pipeline.errors import PermanentError

Pixels = npt.NDArray[np.float32]
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# Above this many pixels the resized image is not made whole: see _resized_crop.
FULL_RESIZE_MAX_PIXELS = 4 * 1024 * 1024


@dataclass(frozen=True)
class ClipImageConfig:
    shortest_edge: int | None = 224  # resize so the short side is this long, aspect kept
    resize_to: tuple[int, int] | None = None  # or exactly (height, width), when `size` says so
    crop: tuple[int, int] | None = (224, 224)  # (height, width); None = no centre crop
    resample: Image.Resampling = Image.Resampling.BICUBIC
    rescale: float | None = 1 / 255
    mean: tuple[float, float, float] | None = OPENAI_MEAN
    std: tuple[float, float, float] | None = OPENAI_STD
    bgr: bool = False  # MobileViT-style processors flip channels

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        if self.crop:
            return self.crop
        if self.resize_to:
            return self.resize_to
        raise PermanentError("preprocessor_config.json gives no fixed input size (no crop_size, no height/width)")

    def needed(self, width: int, height: int) -> tuple[int, int]:
        """The smallest (width, height) of a width x height picture that pixel_values resizes down, not up."""
        if self.resize_to:
            return min(width, self.resize_to[1]), min(height, self.resize_to[0])
        if self.shortest_edge:
            scale = self.shortest_edge / min(width, height)
            return min(width, math.ceil(width * scale)), min(height, math.ceil(height * scale))
        return width, height

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ClipImageConfig:
        try:
            shortest: int | None = None
            resize_to: tuple[int, int] | None = None
            if raw.get("do_resize", True):
                size = raw.get("size", 224)
                if isinstance(size, int):
                    shortest = size
                elif "shortest_edge" in size:
                    shortest = int(size["shortest_edge"])
                else:
                    resize_to = (int(size["height"]), int(size["width"]))
            crop: tuple[int, int] | None = None
            if raw.get("do_center_crop", True):
                c = raw.get("crop_size", shortest or 224)
                crop = (int(c), int(c)) if isinstance(c, int) else (int(c["height"]), int(c["width"]))
            normalize = bool(raw.get("do_normalize", True))
            return cls(
                shortest_edge=shortest,
                resize_to=resize_to,
                crop=crop,
                resample=Image.Resampling(int(raw.get("resample", Image.Resampling.BICUBIC))),
                rescale=float(raw.get("rescale_factor", 1 / 255)) if raw.get("do_rescale", True) else None,
                mean=_triple(raw.get("image_mean", OPENAI_MEAN)) if normalize else None,
                std=_triple(raw.get("image_std", OPENAI_STD)) if normalize else None,
                bgr=bool(raw.get("do_flip_channel_order", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PermanentError(f"preprocessor_config.json is not a CLIP image processor config: {exc!r}") from exc


def _triple(v: Any) -> tuple[float, float, float]:
    if isinstance(v, int | float):
        return (float(v),) * 3
    a, b, c = (float(x) for x in v)
    return a, b, c


def to_rgb(img: Image.Image) -> Image.Image:
    """Transparent pixels onto white, as HF's convert_to_rgb does: logos keep their shape instead of
    turning into whatever colour hides under alpha 0 (often black)."""
    if img.mode == "RGB":
        return img
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def pixel_values(img: Image.Image, cfg: ClipImageConfig) -> Pixels:
    """One image as the model's (3, H, W) float32 input."""
    img = to_rgb(img)
    if cfg.resize_to:
        img = img.resize((cfg.resize_to[1], cfg.resize_to[0]), cfg.resample)
    elif cfg.shortest_edge:
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        # int(), not round(): the rounding HF's get_resize_output_image_size uses.
        new_short, new_long = cfg.shortest_edge, int(cfg.shortest_edge * long / short)
        size = (new_short, new_long) if w <= h else (new_long, new_short)
        huge = size[0] * size[1] > FULL_RESIZE_MAX_PIXELS
        if cfg.crop and huge and size[0] >= cfg.crop[1] and size[1] >= cfg.crop[0]:
            img = _resized_crop(img, size, cfg.crop, cfg.resample)
        elif size != img.size:
            img = img.resize(size, cfg.resample)
    if cfg.crop and img.size != (cfg.crop[1], cfg.crop[0]):
        ch, cw = cfg.crop
        top, left = (img.height - ch) // 2, (img.width - cw) // 2
        # Pillow fills outside the image with 0, as HF pads an image smaller than the crop.
        img = img.crop((left, top, left + cw, top + ch))
    arr = np.asarray(img, dtype=np.float32)
    if cfg.rescale is not None:
        arr = arr * np.float32(cfg.rescale)
    if cfg.mean is not None and cfg.std is not None:
        mean, std = np.asarray(cfg.mean, dtype=np.float32), np.asarray(cfg.std, dtype=np.float32)
        arr = np.divide(np.subtract(arr, mean, dtype=np.float32), std, dtype=np.float32)
    if cfg.bgr:
        arr = arr[..., ::-1]
    out: Pixels = np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)
    return out


def _resized_crop(img: Image.Image, size: tuple[int, int], crop: tuple[int, int],
                  resample: Image.Resampling) -> Image.Image:
    """The centre crop of `img` resized to `size`, without making the whole resized image.

    The short side goes to 224 and the long one with it, so a thin strip (2 x 20,000 pixels) would become
    224 x 2,240,000 (1.5 GB) for the 224 x 224 the crop keeps. Pillow's `box` resizes only that part; its
    filter still reads the source pixels around the box, so the pixels are those of the whole resize but for
    rounding (a row whose kernel centre falls on a half pixel may take its window one pixel over). Only images
    beyond FULL_RESIZE_MAX_PIXELS take this path, so no picture of ordinary proportions changes.
    """
    (w, h), (rw, rh), (ch, cw) = img.size, size, crop
    left, top = (rw - cw) // 2, (rh - ch) // 2
    sx, sy = w / rw, h / rh
    box = (left * sx, top * sy, (left + cw) * sx, (top + ch) * sy)
    return img.resize((cw, ch), resample, box=box)
