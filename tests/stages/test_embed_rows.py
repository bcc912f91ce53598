"""The text embedder runs a batch a row at a time (memory) yet returns exactly the vectors of one whole-batch run."""

from __future__ import annotations

import numpy as np

from pipeline.embedders.text import load_text_embedder


def test_row_at_a_time_runs_give_the_whole_batch_vectors_bit_for_bit() -> None:
    e = load_text_embedder()
    # different lengths, so the short rows are padded to the longest as in one 32-row run
    texts = ["maintainers", "How to review a pull request from a new contributor kindly and quickly. " * 8,
             "A license tells people what they may do with your code.", "funding " * 300]
    got = e.embed(texts)
    enc = e.tokenizer.encode_batch(texts)
    ids = np.array([x.ids for x in enc], dtype=np.int64)
    mask = np.array([x.attention_mask for x in enc], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in e.input_names:
        feeds["token_type_ids"] = np.zeros_like(ids)
    hidden = np.asarray(e.session.run(None, feeds)[0], dtype=np.float32)  # the whole batch in one run
    w = mask[..., None].astype(np.float32)
    pooled = (hidden * w).sum(axis=1) / np.clip(w.sum(axis=1), 1e-9, None)
    whole = (pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)).astype(np.float32)
    assert got.shape == (4, e.dim)
    assert np.array_equal(got, whole)
