"""The streamed forms of what publish and build_db used to hold whole give the same bytes and rows."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.canonical_json import canonical_json
from pipeline.errors import PermanentError
from pipeline.stages.bundle_writer import BundleWriter
from pipeline.stores.artifacts import LocalArtifactStore
from pipeline.stores.vectors import matrix_blocks, matrix_header, matrix_rows, read_matrix, write_matrix

POSTS = [{"hash": "b", "title": "Ünïcode \u2028", "n": 1.5}, {"hash": "a", "links": [], "z": None}, {}]


def test_json_list_and_map_write_what_the_whole_value_would(tmp_path: Path) -> None:
    w = BundleWriter(tmp_path)
    passed = list(w.json_list("posts.json", iter(POSTS)))
    assert passed == POSTS
    assert (tmp_path / "posts.json").read_bytes() == canonical_json(POSTS)
    assert list(w.json_list("empty.json", [])) == []
    assert (tmp_path / "empty.json").read_bytes() == canonical_json([])
    entries = {"é": [0.25], "a-b": [1.0, -2.5e-08], "A": []}
    w.json_map("map.json", sorted(entries.items()))
    assert (tmp_path / "map.json").read_bytes() == canonical_json(entries)
    for rel in ("posts.json", "empty.json", "map.json"):
        data = (tmp_path / rel).read_bytes()
        assert w.files[rel] == (hashlib.sha256(data).hexdigest(), len(data))


def test_from_store_copies_and_hashes(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "a")
    data = bytes(range(256)) * 5000
    store.put_bytes("jobs/j/build_db/content.sqlite", data)
    w = BundleWriter(tmp_path / "bundle")
    w.from_store("content.sqlite", store, "jobs/j/build_db/content.sqlite")
    assert (tmp_path / "bundle" / "content.sqlite").read_bytes() == data
    assert w.files["content.sqlite"] == (hashlib.sha256(data).hexdigest(), len(data))


def test_matrix_blocks_are_the_matrix(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    rows = np.random.default_rng(1).standard_normal((1100, 8)).astype(np.float32)
    write_matrix(store, "m", rows, {"ids": list(range(1100))})
    header = matrix_header(store, "m")
    blocks = list(matrix_blocks(store, "m", header, rows=512))
    assert [len(b) for b in blocks] == [512, 512, 76]
    assert np.array_equal(np.concatenate(blocks), read_matrix(store, "m")[0])
    assert matrix_rows(store, "m", header, 1099, 2000).shape == (1, 8)
    store.put_bytes("m.f32", rows[:1000].tobytes())  # cut short
    with pytest.raises(PermanentError, match="shorter than its header"):
        list(matrix_blocks(store, "m", header))
