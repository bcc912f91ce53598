"""enrich's similarity, computed and encoded a block of rows at a time, equals the whole-matrix computation."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from pipeline.canonical_json import canonical_json
from pipeline.stages.enrich import BLOCK_ROWS, TOP_K, _sorted_by_pair, similarity_json


def whole_matrix(ids: list[str], vectors: np.ndarray) -> tuple[dict[str, float], dict[str, list[str]]]:
    """The stage's former computation: one posts x posts matrix, every pair in a dict."""
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    ids = [ids[i] for i in order]
    vecs = vectors[order].astype(np.float64)
    sims = np.round(vecs @ vecs.T, 6)
    pairs: dict[str, float] = {}
    top: dict[str, list[str]] = {}
    for i, a in enumerate(ids):
        for j in range(i + 1, len(ids)):
            pairs[f"{a}-{ids[j]}"] = float(sims[i, j])
        row = sorted((-sims[i, j], ids[j]) for j in range(len(ids)) if j != i)
        top[a] = [h for _s, h in row[:TOP_K]]
    return pairs, top


def corpus(n: int, seed: int = 7) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, 24)).astype(np.float32)
    if n > 9:
        vecs[5] = vecs[3]  # equal vectors: ties in the top lists are broken by id
        vecs[9] = vecs[3]
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    return ids, vecs


def test_blocks_give_the_bytes_and_top_lists_of_the_whole_matrix() -> None:
    n = 2 * BLOCK_ROWS + 37  # three blocks, the last one short
    ids, vecs = corpus(n)
    data, top, pairs = similarity_json(ids, vecs)
    want_pairs, want_top = whole_matrix(ids, vecs)
    assert pairs == n * (n - 1) // 2 == len(want_pairs)
    assert data == json.dumps(want_pairs, ensure_ascii=False, separators=(",", ":")).encode()
    assert top == want_top
    # the ids have one length, so pair order is sorted-key order: the bundle's canonical encoding too
    assert _sorted_by_pair(ids) and data == canonical_json(want_pairs)


def test_one_post_and_no_post() -> None:
    ids, vecs = corpus(1)
    data, top, pairs = similarity_json(ids, vecs)
    assert (bytes(data), top, pairs) == (b"{}", {ids[0]: []}, 0)
    data, top, pairs = similarity_json([], np.zeros((0, 0), np.float32))
    assert (bytes(data), top, pairs) == (b"{}", {}, 0)


def test_ids_needing_escapes_and_of_mixed_lengths() -> None:
    ids = ['a"b', "zé", "c\\d", "b"]
    _ids, vecs = corpus(4)
    data, top, _n = similarity_json(ids, vecs)
    want_pairs, want_top = whole_matrix(ids, vecs)
    assert json.loads(data) == want_pairs and top == want_top
    assert not _sorted_by_pair(ids)
