"""The bare embedding floor: the stage's own texts through a plain onnxruntime + tokenizers loop.

Also reads those texts back from the stage's batch files and compares the floor's vectors with the ones the
pipeline cached, so the floor is known to compute the same thing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.cpu_use import Cpu
from benchmarks.harness import Run
from pipeline.settings import Settings
from pipeline.stages.embed_text import embedded_texts
from pipeline.stores.artifacts import LocalArtifactStore
from pipeline.stores.vectors import VectorCache, text_key

Vectors = npt.NDArray[np.float32]

def model_files(settings: Settings) -> tuple[Path, Path]:
    from pipeline.embedders.text import default_model_files, model_dir_files

    return model_dir_files(settings.text_model_dir) if settings.text_model_dir else default_model_files()


def plain_tokenizer(settings: Settings) -> Any:
    """The model's tokenizer with no truncation and no padding: true token counts."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_files(settings)[1]))
    tok.no_truncation()
    tok.no_padding()
    return tok


@dataclass
class Floor:
    threads: int
    seconds: float  # best of the repeats
    runs: list[float]
    cpu_s: float  # process CPU time of the best run: what the loop costs with no one else on the cores
    load_s: float
    texts: int
    tokens: int
    padded: int
    vectors: Vectors
    cpu: Cpu | None = None


class PlainTextModel:
    """The model file through onnxruntime + tokenizers and nothing else: truncation at 256, pad to the longest,
    mean pooling, L2 norm — what the embed_text stage computes, without the pipeline around it."""

    def __init__(self, settings: Settings, threads: int) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        from pipeline.embedders.text import MAX_TOKENS

        model, tok_path = model_files(settings)
        self.tok = Tokenizer.from_file(str(tok_path))
        self.tok.no_padding()
        self.tok.no_truncation()
        self.tok.enable_truncation(max_length=MAX_TOKENS)
        pad_id = self.tok.token_to_id("[PAD]")
        self.tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")  # pads to the longest
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
        self.wants_types = "token_type_ids" in {i.name for i in self.session.get_inputs()}
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        self.embed(["warm-up"])  # first-run allocations are not the model's speed

    def embed(self, batch: list[str]) -> tuple[Vectors, int, int]:
        """(vectors, real tokens, padded tokens) of one batch."""
        enc = self.tok.encode_batch(batch)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if self.wants_types:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = np.asarray(self.session.run(None, feeds)[0], dtype=np.float32)
        w = mask[..., None].astype(np.float32)
        pooled = (hidden * w).sum(axis=1) / np.clip(w.sum(axis=1), 1e-9, None)
        out = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return out.astype(np.float32), int(mask.sum()), int(mask.size)


def bare_floor(texts: list[str], settings: Settings, threads: int, repeat: int) -> Floor:
    """A plain onnxruntime + tokenizers loop over `texts`, longest first; vectors come back in input order."""
    t0 = time.perf_counter()
    model = PlainTextModel(settings, threads)
    load_s = time.perf_counter() - t0
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # the stage's order: longest first
    size = max(1, settings.embed_batch)
    vectors = np.zeros((len(texts), model.dim), dtype=np.float32)
    runs: list[tuple[float, float]] = []
    tokens = padded = 0
    for _ in range(max(1, repeat)):
        tokens = padded = 0
        c0 = time.process_time()
        t0 = time.perf_counter()
        for start in range(0, len(order), size):
            idx = order[start:start + size]
            vecs, real, total = model.embed([texts[i] for i in idx])
            vectors[idx] = vecs
            tokens += real
            padded += total
        runs.append((time.perf_counter() - t0, time.process_time() - c0))
    best = min(runs)
    return Floor(threads, best[0], [r for r, _ in runs], best[1], load_s, len(texts), tokens, padded, vectors)


def batch_texts(settings: Settings, run: Run) -> list[str]:
    """The texts the stage embedded, from its own batch files, in batch order."""
    artifacts = LocalArtifactStore(settings.artifacts)
    texts: list[str] = []
    for n in range(int(run.plan["batches"])):
        texts += embedded_texts(settings, artifacts, run.job.spec.job_id, n)
    return texts


def max_diff_to_cache(settings: Settings, run: Run, texts: list[str], floor: Floor) -> float:
    """Largest |difference| between the floor's vectors and the ones the pipeline cached for the same texts."""
    if not texts:
        return 0.0
    cache = VectorCache(LocalArtifactStore(settings.artifacts), str(run.plan["model"]))
    return float(np.abs(np.stack([cache.get(text_key(t)) for t in texts]) - floor.vectors).max())
