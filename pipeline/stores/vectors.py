"""Vectors at rest: the shared embedding cache and the matrices stages hand to each other.

The cache is content-addressed by (model id, SHA-256 of the exact input text), so any job on any
worker reuses a vector once computed: a rebuild after a one-post edit embeds about one post.
Matrices are raw little-endian float32 (`<name>.f32`) beside a JSON header (`<name>.json`:
model, dim, ids and per-row metadata), cheap to write, to read and to memory-map.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import PermanentError
from pipeline.stores.artifacts import ArtifactStore

Matrix = npt.NDArray[np.float32]


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_folder(model_id: str) -> str:
    """`model_id` as one safe folder name."""
    return re.sub(r"[^A-Za-z0-9._@-]", "_", model_id)


class VectorCache:
    """`dim` None: the stage does not know it yet (an ONNX session not loaded, an OpenAI model not probed); a
    vector is then checked only for being one, and a matrix's rows against each other (`stack`)."""

    def __init__(self, artifacts: ArtifactStore, model_id: str, dim: int | None = None) -> None:
        self.artifacts = artifacts
        self.model_id = model_id
        self.dim = dim
        self.prefix = f"cache/vectors/{model_folder(model_id)}"

    def key(self, digest: str) -> str:
        return f"{self.prefix}/{digest[:2]}/{digest}.f32"

    def has(self, digest: str) -> bool:
        return self.artifacts.exists(self.key(digest))

    def get(self, digest: str) -> Matrix:
        vec = np.frombuffer(self.artifacts.get_bytes(self.key(digest)), dtype="<f4")
        if vec.size == 0 or (self.dim is not None and vec.shape != (self.dim,)):
            raise PermanentError(f"cached vector {digest} has {vec.size} values, expected {self.dim or 'some'}")
        return vec.astype(np.float32)

    def stack(self, digests: Iterable[str]) -> Matrix:
        """The vectors of `digests` as the rows of one matrix, all of the first one's size (or `dim`'s)."""
        rows: list[Matrix] = []
        for digest in digests:
            rows.append(vec := self.get(digest))
            if vec.shape != rows[0].shape:
                raise PermanentError(f"cached vector {digest} has {vec.size} values, the one before it "
                                     f"{rows[0].size}: the cache of {self.model_id} mixes sizes")
        return np.stack(rows) if rows else np.zeros((0, self.dim or 0), dtype=np.float32)

    def put(self, digest: str, vector: Matrix) -> None:
        self.artifacts.put_bytes(self.key(digest), np.asarray(vector, dtype="<f4").tobytes())


def write_matrix(artifacts: ArtifactStore, key: str, matrix: Matrix, header: dict[str, Any]) -> None:
    """`key`.f32 holds the rows; `key`.json the header (written last: its presence means complete)."""
    rows = np.asarray(matrix, dtype="<f4")
    artifacts.put_bytes(f"{key}.f32", rows.tobytes())
    artifacts.put_json(f"{key}.json", {**header, "rows": int(rows.shape[0]), "dim": int(rows.shape[1])})


def read_matrix(artifacts: ArtifactStore, key: str) -> tuple[Matrix, dict[str, Any]]:
    header: dict[str, Any] = artifacts.get_json(f"{key}.json")
    data = np.frombuffer(artifacts.get_bytes(f"{key}.f32"), dtype="<f4")
    rows, dim = int(header["rows"]), int(header["dim"])
    if data.size != rows * dim:
        raise PermanentError(f"matrix {key} holds {data.size} values, header says {rows}x{dim}")
    return data.reshape(rows, dim).astype(np.float32), header


BLOCK_ROWS = 512  # rows read at a time: a block of the matrix in memory, never all of it


def matrix_header(artifacts: ArtifactStore, key: str) -> dict[str, Any]:
    header: dict[str, Any] = artifacts.get_json(f"{key}.json")
    return header


def matrix_rows(artifacts: ArtifactStore, key: str, header: dict[str, Any], start: int, stop: int) -> Matrix:
    """Rows `start` to `stop` (exclusive) of the matrix, read with one ranged read."""
    dim = int(header["dim"])
    stop = min(stop, int(header["rows"]))
    if stop <= start:
        return np.zeros((0, dim), dtype=np.float32)
    data = artifacts.get_range(f"{key}.f32", start * dim * 4, (stop - start) * dim * 4)
    if len(data) != (stop - start) * dim * 4:
        raise PermanentError(f"matrix {key} is shorter than its header says ({header['rows']}x{dim}): rows "
                             f"{start}..{stop} give {len(data)} bytes")
    return np.frombuffer(data, dtype="<f4").reshape(stop - start, dim)


def matrix_blocks(artifacts: ArtifactStore, key: str, header: dict[str, Any],
                  rows: int = BLOCK_ROWS) -> Iterator[Matrix]:
    """The matrix in order, `rows` rows at a time."""
    for start in range(0, int(header["rows"]), rows):
        yield matrix_rows(artifacts, key, header, start, start + rows)


def has_matrix(artifacts: ArtifactStore, key: str) -> bool:
    return artifacts.exists(f"{key}.json")
