"""The kinds of field a request carries, each declared once and shared by every route that reads one, and the
two kinds of body (the native API's, the original service's).

A limit on a kind of field is one line here, and a check of what a field means (a path on the server, an outbound
URL, a credential) is one validator added to its type; validators may read the app's settings from the validation
context (`info.context["settings"]`, given by api.openapi).
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from pipeline.targets.local import LATEST, LATEST_JSON

TEXT_MAX = 4096
# Job ids name revision folders (`<output>/<rev>/`, `projects/<p>/<rev>/`), project ids bucket folders: one rule.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
# Beside the revisions: the live pointer of a local target; a project's `_shared/` cannot match the pattern.
RESERVED_NAMES = (LATEST, LATEST_JSON)


def _nameable(value: str) -> str:
    if value.lower() in RESERVED_NAMES:  # lower: a case-insensitive file system would take LATEST for latest
        raise PydanticCustomError("reserved_name", "{value!r} is reserved: it names the live revision's pointer",
                                  {"value": value})
    return value


def blank_is_none(value: Any) -> Any:
    return None if value == "" else value


def _event_id(value: str) -> str:
    if any(int(part) >= 2**64 for part in value.split("-")):
        raise PydanticCustomError("event_id", "must be an event id, <ms>-<seq> with each part below 2**64")
    return value


def _http_url(value: str) -> str:
    """An http(s) URL that the worker's own parser reads back: a host that encodes, a port that is a number."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
            raise ValueError(value)
        parts.hostname.encode("idna")
    except (ValueError, UnicodeError):
        raise PydanticCustomError("http_url", "must be an http(s) URL with a valid host") from None
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank", "must not be blank")
    return value


def _base64(value: Any) -> Any:
    if not isinstance(value, str):
        raise PydanticCustomError("base64_type", "must be a base64 string")
    raw = value.split(",", 1)[1] if value.startswith("data:") else value  # a data: URL is accepted too
    try:
        return base64.b64decode("".join(raw.split()), validate=True)  # MIME-wrapped base64 is still base64
    except (binascii.Error, ValueError):
        raise PydanticCustomError("base64", "is not valid base64") from None


Text = Annotated[str, Field(max_length=TEXT_MAX)]
Name = Annotated[str, Field(pattern=NAME_PATTERN, json_schema_extra={"not": {"enum": list(RESERVED_NAMES)}},
                            description="letters, digits and `_.:-`, starting with a letter or digit, at most 128; "
                                        "not `latest` or `latest.json`"),
                 AfterValidator(_nameable)]
OptionalName = Annotated[Name | None, BeforeValidator(blank_is_none)]
# Where a repository comes from: a git URL, or a path on the server (`source`, `repoUrl`, `repoInfo.path`).
SourceRef = Annotated[str, Field(max_length=TEXT_MAX)]
# A folder or file on the server that a task reads (`distFolder`, `repoInfo.distPath`, `xmlFilePath`).
ServerPath = Annotated[str, Field(max_length=TEXT_MAX)]
# A URL the worker sends to or pushes to on the caller's behalf.
OutboundUrl = Annotated[str, Field(max_length=TEXT_MAX)]
HttpUrl = Annotated[OutboundUrl, Field(pattern=r"^https?://"), AfterValidator(_http_url)]
Credential = Annotated[str, Field(max_length=TEXT_MAX)]
# Optional fields the original read with JavaScript's truthiness: "" is "not given"; the constraints apply to values.
Branch = Annotated[Annotated[str, Field(max_length=255)] | None, BeforeValidator(blank_is_none)]
Commit = Annotated[Annotated[str, Field(pattern=r"^[0-9a-fA-F]{7,40}$")] | None, BeforeValidator(blank_is_none)]
OrgId = Annotated[Annotated[str, Field(max_length=128)] | None, BeforeValidator(blank_is_none)]
EventId = Annotated[str, Field(pattern=r"^[0-9]{1,20}(-[0-9]{1,20})?$"), AfterValidator(_event_id)]
NonBlank = Annotated[str, Field(json_schema_extra={"pattern": r"\S"}), AfterValidator(_not_blank)]
Base64Bytes = Annotated[bytes, BeforeValidator(_base64), WithJsonSchema(
    {"type": "string", "contentEncoding": "base64", "pattern": r"^(data:[^,]*,)?[A-Za-z0-9+/=\s]*$"})]


class Body(BaseModel):
    """A JSON object body; anything else is refused, naming the body."""

    @model_validator(mode="before")
    @classmethod
    def _object(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise PydanticCustomError("body_object", "request body must be a JSON object")
        return value


class OriginalBody(BaseModel):
    """A body of the original service's routes: as its body parser did, anything but an object reads as `{}`."""

    @model_validator(mode="before")
    @classmethod
    def _object(cls, value: Any) -> Any:
        return value if isinstance(value, dict) else {}
