"""Resized variants at rest, content-addressed by the source's SHA-256 in the shared artifact store.

`cache/variants/<sha[:2]>/<sha>/<file>` holds the encoded variants and `meta.json` (written last, so
its presence means every file is there) lists them. An image that cannot be resized gets
`error.json` instead, so a corrupt file is not decoded again by every job that meets it.
A job on a repository whose images did not change therefore encodes nothing.
"""

from __future__ import annotations

from pipeline.images.variants import Variant, VariantInfo, variant_filename
from pipeline.stores.artifacts import ArtifactStore

# Bumped when the encoding changes (sizes, quality), so old variants are not served as new ones.
VARIANTS_VERSION = 2  # 2: webp method 2 (was 4), JPEGs decoded at reduced scale, reduce() before LANCZOS


class VariantCache:
    def __init__(self, artifacts: ArtifactStore) -> None:
        self.artifacts = artifacts

    def _prefix(self, sha: str) -> str:
        return f"cache/variants/v{VARIANTS_VERSION}/{sha[:2]}/{sha}"

    def file_key(self, sha: str, filename: str) -> str:
        return f"{self._prefix(sha)}/{filename}"

    def infos(self, sha: str) -> list[VariantInfo] | None:
        key = f"{self._prefix(sha)}/meta.json"
        if not self.artifacts.exists(key):
            return None
        return [VariantInfo(**v) for v in self.artifacts.get_json(key)["variants"]]

    def error(self, sha: str) -> str | None:
        key = f"{self._prefix(sha)}/error.json"
        return str(self.artifacts.get_json(key)["reason"]) if self.artifacts.exists(key) else None

    def known(self, sha: str) -> bool:
        """Resized before, or known not to resize."""
        prefix = self._prefix(sha)
        return self.artifacts.exists(f"{prefix}/meta.json") or self.artifacts.exists(f"{prefix}/error.json")

    def put(self, sha: str, variants: list[Variant]) -> list[VariantInfo]:
        written: set[str] = set()
        for v in variants:
            name = variant_filename(sha, v)
            if name not in written:
                self.artifacts.put_bytes(self.file_key(sha, name), v.data)
                written.add(name)
        infos = [v.info() for v in variants]
        self.artifacts.put_json(f"{self._prefix(sha)}/meta.json", {"variants": [i._asdict() for i in infos]})
        return infos

    def put_error(self, sha: str, reason: str) -> None:
        self.artifacts.put_json(f"{self._prefix(sha)}/error.json", {"reason": reason})

    def get_file(self, sha: str, info: VariantInfo) -> bytes:
        return self.artifacts.get_bytes(self.file_key(sha, variant_filename(sha, info)))
