"""The OpenAPI 3.1 document of the whole API, generated from the request and response models."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from api.openapi import SPEC

bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
def document() -> Any:
    return jsonify(SPEC.spec)
