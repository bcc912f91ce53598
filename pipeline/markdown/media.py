"""Media files: content hash, pixel size, and the `medias.json` entry."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from posixpath import basename

from pipeline.errors import ItemError
from pipeline.images.decode import check_decodable
from pipeline.markdown.discovery import MEDIA_TYPES, media_ext
from pipeline.markdown.hashing import file_sha256
from pipeline.models import JSON

_RASTERS = frozenset({"png", "jpg", "jpeg", "gif", "webp", "avif", "bmp", "tiff", "tif"})
_SVG_TAG = re.compile(rb"<svg\b[^>]*>", re.IGNORECASE | re.DOTALL)
_SVG_ATTR = re.compile(rb"""\b(width|height|viewBox)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)
_LENGTH = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(px)?\s*$")


@dataclass(frozen=True)
class MediaInfo:
    path: str
    hash: str
    ext: str
    size: int
    width: int | None
    height: int | None
    problem: str | None = None

    @property
    def resized(self) -> bool:
        """Whether embed_images makes `_medias/` variants of it (a raster that decodes)."""
        return self.ext in _RASTERS and self.problem is None

    def to_index(self) -> JSON:
        return {"hash": self.hash, "ext": self.ext, "width": self.width, "height": self.height,
                "resized": self.resized}

    def entry(self) -> JSON:
        """The `medias.json` entry; `sizes` stays empty until resized variants exist."""
        return {
            "originalPath": self.path,
            "fileName": basename(self.path),
            "fileExt": self.ext,
            "mimeType": MEDIA_TYPES[self.ext],
            "effectivePath": self.path,
            "hashPath": f"{self.hash}.{self.ext}",
            "sizes": {},
            "metadata": {"format": self.ext, "hash": self.hash, "width": self.width, "height": self.height,
                         "size": self.size},
            "hash": self.hash,
        }


def entry_resized(entry: JSON) -> bool:
    """`MediaInfo.resized` of a `medias.json` entry: a raster that decodes."""
    return str(entry.get("fileExt")) in _RASTERS and (entry.get("metadata") or {}).get("width") is not None


def probe(root: Path, rel: str) -> MediaInfo:
    """Hash and pixel size of one media file. A file Pillow cannot read keeps null sizes and names the problem."""
    path = root / rel
    ext = media_ext(rel) or ""
    width: int | None = None
    height: int | None = None
    problem: str | None = None
    if ext in _RASTERS:
        try:
            # A full (cheap) decode check, not just the header: a post must only link to `-lg.webp`
            # variants that embed_images can make; an image that cannot be resized is published as is.
            width, height = check_decodable(path.read_bytes(), rel)
        except ItemError as exc:
            problem = f"unreadable image: {exc.reason}"
    elif ext == "svg":
        width, height = svg_size(path)
    return MediaInfo(rel, file_sha256(path), ext, path.stat().st_size, width, height, problem)


def svg_size(path: Path) -> tuple[int | None, int | None]:
    """Size from the root element's width/height, else its viewBox; None where neither says (e.g. `100%`)."""
    with path.open("rb") as fh:
        head = fh.read(16384)
    tag = _SVG_TAG.search(head)
    if tag is None:
        return None, None
    attrs = {k.decode().lower(): v.decode("utf-8", "replace") for k, v in _SVG_ATTR.findall(tag.group(0))}
    width, height = _length(attrs.get("width")), _length(attrs.get("height"))
    box = attrs.get("viewbox", "").replace(",", " ").split()
    if (width is None or height is None) and len(box) == 4:
        try:
            bw, bh = float(box[2]), float(box[3])
        except ValueError:
            return width, height
        if bw > 0 and bh > 0:
            if width is None and height is None:
                return round(bw), round(bh)
            if width is None and height is not None:
                return round(height * bw / bh), height
            if height is None and width is not None:
                return width, round(width * bh / bw)
    return width, height


def _length(value: str | None) -> int | None:
    m = _LENGTH.match(value or "")
    return round(float(m.group(1))) if m else None
