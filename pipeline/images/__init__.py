"""Repository images: safe decoding, the published `_medias/` variants, and CLIP model input."""

from pipeline.images.decode import DEFAULT_MAX_PIXELS, DecodedImage, open_image
from pipeline.images.variants import (
    PASSTHROUGH_EXTS,
    SIZES,
    Variant,
    VariantInfo,
    is_passthrough,
    make_variants,
    media_sizes_entry,
    passthrough_filename,
    target_sizes,
    variant_filename,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "PASSTHROUGH_EXTS",
    "SIZES",
    "DecodedImage",
    "Variant",
    "VariantInfo",
    "is_passthrough",
    "make_variants",
    "media_sizes_entry",
    "open_image",
    "passthrough_filename",
    "target_sizes",
    "variant_filename",
]
