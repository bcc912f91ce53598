"""The original's inference endpoints, same request and response shapes (also under /v1, as the SDK calls them)."""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from flask import Blueprint, jsonify, request

from api.extensions import settings_of
from pipeline.errors import ItemError, PermanentError, TransientError
from pipeline.timestamps import now_iso

bp = Blueprint("inference", __name__)
DEFAULT_INSTRUCTION = "Represent the document for semantic search:"
TEXT_MODEL_NAME = "all-MiniLM-L6-v2"


def _error(status: int, message: str) -> Any:
    return jsonify(status="error", message=message), status


@bp.errorhandler(PermanentError)
def _failed(exc: PermanentError) -> Any:
    # e.g. a configured model directory that is missing or broken: the JSON error shape, not an HTML page
    return _error(500, str(exc))


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    return data if isinstance(data, dict) else {}


def _clip() -> Any:
    from pipeline.embedders.image import load_clip  # noqa: PLC0415

    return load_clip(settings_of().clip_model_dir)


@bp.post("/inference/text-embedding")
@bp.post("/v1/inference/text-embedding")
def text_embedding() -> Any:
    from pipeline.embedders.select import text_embedder  # noqa: PLC0415

    body = _body()
    text, instruction = body.get("text"), body.get("instruction", DEFAULT_INSTRUCTION)
    if not isinstance(text, str) or not text.strip():
        return _error(400, "text is required")
    if not isinstance(instruction, str):
        return _error(400, "instruction must be a string")
    t0 = time.perf_counter()
    try:
        embedder = text_embedder(settings_of())
        vec = embedder.embed([f"{instruction} {text}" if instruction else text])[0]
    except (PermanentError, TransientError) as exc:
        return _error(500, str(exc))
    return jsonify(status="success", embedding=[float(x) for x in vec.tolist()], metadata={
        "model": TEXT_MODEL_NAME if settings_of().embed_provider == "onnx" and not settings_of().text_model_dir
        else embedder.model_id,
        "dimension": int(vec.shape[0]), "duration": round((time.perf_counter() - t0) * 1000, 2),
        "instruction": instruction, "timestamp": now_iso()})


def _clip_answer(vec: Any, t0: float, model: str) -> Any:
    return jsonify(status="success", embedding=[float(x) for x in vec.tolist()], metadata={
        "model": model, "dimension": int(vec.shape[0]),
        "duration": round((time.perf_counter() - t0) * 1000, 2), "timestamp": now_iso()})


@bp.post("/inference/clip-by-text")
@bp.post("/v1/inference/clip-by-text")
def clip_by_text() -> Any:
    text = _body().get("text")
    if not isinstance(text, str) or not text.strip():
        return _error(400, "text is required")
    t0 = time.perf_counter()
    clip = _clip()
    if clip is None:
        return _error(503, "no CLIP model is configured (set REPOBUILD_CLIP_MODEL_DIR)")
    try:
        vec = clip.embed_texts([text])[0]
    except PermanentError as exc:
        return _error(500, str(exc))
    return _clip_answer(vec, t0, clip.model_id)


@bp.post("/inference/clip-by-image")
@bp.post("/v1/inference/clip-by-image")
def clip_by_image() -> Any:
    from pipeline.http.address_policy import image_policy  # noqa: PLC0415
    from pipeline.http.safe_fetch import fetch_image  # noqa: PLC0415

    body = _body()
    url, data = body.get("imageUrl"), body.get("imageData")
    if not url and not data:
        return _error(400, "imageUrl or imageData is required")
    t0 = time.perf_counter()
    clip = _clip()
    if clip is None:
        return _error(503, "no CLIP model is configured (set REPOBUILD_CLIP_MODEL_DIR)")
    settings = settings_of()
    try:
        if data:
            if not isinstance(data, str):
                return _error(400, "imageData must be a base64 string")
            raw = data.split(",", 1)[1] if data.startswith("data:") else data
            raw = "".join(raw.split())  # MIME-style line-wrapped base64 is still base64
            image = base64.b64decode(raw, validate=True)
        else:
            image = fetch_image(str(url), policy=image_policy(settings), max_bytes=settings.image_fetch_max_bytes)
        vec = clip.embed_images([image])[0]
    except (binascii.Error, ValueError):
        return _error(400, "imageData is not valid base64")
    except (ItemError, PermanentError) as exc:
        return _error(400, str(exc))
    except TransientError as exc:
        return _error(500, str(exc))
    return _clip_answer(vec, t0, clip.model_id)
