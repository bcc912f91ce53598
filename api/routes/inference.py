"""The original's inference endpoints, same request and response shapes (also under /v1, as the SDK calls them)."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, jsonify

from api.extensions import settings_of
from api.openapi import endpoint
from api.responses import Embedding
from api.route_requests import ClipImageRequest, ClipTextRequest, TextEmbeddingRequest
from api.schemas import BadRequest
from pipeline.errors import ItemError, PermanentError, TransientError
from pipeline.http.address_policy import image_policy
from pipeline.timestamps import now_iso

bp = Blueprint("inference", __name__)
TEXT_MODEL_NAME = "all-MiniLM-L6-v2"
NO_CLIP = "no CLIP model is configured (set REPOBUILD_CLIP_MODEL_DIR)"
TAGS = ("inference",)
ERRORS = (500, 503)


def _error(status: int, message: str) -> Any:
    return jsonify(status="error", message=message), status


@bp.errorhandler(BadRequest)
def _bad_request(exc: BadRequest) -> Any:
    # the original's error shape, {status, message}; the message names the field
    return _error(400, exc.message)


@bp.errorhandler(PermanentError)
def _failed(exc: PermanentError) -> Any:
    # e.g. a configured model directory that is missing or broken: the JSON error shape, not an HTML page
    return _error(500, str(exc))


def _clip() -> Any:
    from pipeline.embedders.image import load_clip  # noqa: PLC0415

    return load_clip(settings_of().clip_model_dir)


@bp.post("/inference/text-embedding")
@bp.post("/v1/inference/text-embedding")
@endpoint(body=TextEmbeddingRequest, ok={200: Embedding}, errors=ERRORS, tags=TAGS)
def text_embedding(body: TextEmbeddingRequest) -> Any:
    """A text's all-MiniLM-L6-v2 vector (384 floats), of `instruction + " " + text`."""
    from pipeline.embedders.select import text_embedder  # noqa: PLC0415

    text, instruction = body.text, body.instruction
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
@endpoint(body=ClipTextRequest, ok={200: Embedding}, errors=ERRORS, tags=TAGS)
def clip_by_text(body: ClipTextRequest) -> Any:
    """A text's CLIP vector; 503 when no CLIP model is configured."""
    t0 = time.perf_counter()
    clip = _clip()
    if clip is None:
        return _error(503, NO_CLIP)
    try:
        vec = clip.embed_texts([body.text])[0]
    except PermanentError as exc:
        return _error(500, str(exc))
    return _clip_answer(vec, t0, clip.model_id)


@bp.post("/inference/clip-by-image")
@bp.post("/v1/inference/clip-by-image")
@endpoint(body=ClipImageRequest, ok={200: Embedding}, errors=ERRORS, tags=TAGS)
def clip_by_image(body: ClipImageRequest) -> Any:
    """An image's CLIP vector, from `imageData` (base64) or `imageUrl` (public addresses only, unless allowed)."""
    from pipeline.http.safe_fetch import fetch_image  # noqa: PLC0415

    t0 = time.perf_counter()
    clip = _clip()
    if clip is None:
        return _error(503, NO_CLIP)
    settings = settings_of()
    try:
        # a URL that cannot be fetched, for whatever reason, is the caller's to fix: 400, naming imageUrl
        image = body.imageData or fetch_image(str(body.imageUrl), policy=image_policy(settings),
                                              max_bytes=settings.image_fetch_max_bytes)
        vec = clip.embed_images([image])[0]
    except (ItemError, PermanentError, TransientError) as exc:
        return _error(400, str(exc))
    return _clip_answer(vec, t0, clip.model_id)
