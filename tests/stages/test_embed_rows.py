"""The text embedder runs a batch a text at a time (memory), each at its own length (no padding), yet returns exactly
the vectors of one whole-batch run, padded to its longest."""

from __future__ import annotations

import numpy as np

from pipeline.embedders.text import load_text_embedder
from tests.conftest import CORPORA


def test_row_at_a_time_runs_give_the_whole_batch_vectors_bit_for_bit() -> None:
    e = load_text_embedder()
    # different lengths, so the short rows are padded to the longest as in one 32-row run
    texts = ["maintainers", "How to review a pull request from a new contributor kindly and quickly. " * 8,
             "A license tells people what they may do with your code.", "funding " * 300, "",
             "開源 أهلا 😀 e.g. (x.y)!"]
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
    assert got.shape == (6, e.dim) and mask.sum(axis=1).min() < ids.shape[1]
    assert np.array_equal(got, whole)


def test_a_long_text_is_tokenised_from_the_prefix_the_model_sees_and_keeps_its_vector() -> None:
    """A post's vector reads its whole text; only the first 256 tokens reach the model, so the embedder tokenises
    a prefix cut at a space. The ids, and so the vector, must be those of the whole text, in every script."""
    e = load_text_embedder()
    articles = CORPORA / "opensource-guide" / "_articles"
    texts = [(articles / lang / "starting-a-project.md").read_text(encoding="utf-8")
             for lang in ("ja", "zh-hans", "ar", "ru", "hi", "ko")]
    texts += [(articles / "starting-a-project.md").read_text(encoding="utf-8"),
              "開源" * 5000,  # no space to cut at: the whole text is tokenised, as before
              "word " * 40 + "x" * 9000]  # few tokens in many characters: no cut leaves enough tokens
    for text in texts:
        seen = e.visible(text)
        assert text.startswith(seen)
        assert e.tokenizer.encode(seen).ids == e.tokenizer.encode(text).ids, text[:40]
    assert sum(len(e.visible(t)) < len(t) for t in texts) == 7  # every article was cut
    whole = e.tokenizer.encode(texts[0])
    ids = np.array([whole.ids], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if "token_type_ids" in e.input_names:
        feeds["token_type_ids"] = np.zeros_like(ids)
    pooled = np.asarray(e.session.run(None, feeds)[0], dtype=np.float32).mean(axis=1)
    assert np.array_equal(e.embed([texts[0]])[0], (pooled / np.linalg.norm(pooled, axis=1, keepdims=True))[0])
