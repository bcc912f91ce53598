"""The requests of every route but the two submissions: path ids, query strings, headers, and the small bodies
of rollback and the inference API. Validated at the edge as the submissions are (api.openapi.endpoint)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from api.fields import Base64Bytes, Body, EventId, HttpUrl, Name, NonBlank, OriginalBody, blank_is_none
from pipeline.models import JobStatus


class JobPath(BaseModel):
    job_id: Name


class ProjectPath(BaseModel):
    project_id: Name


def _not_null(schema: dict[str, Any]) -> None:
    """A query string or header is absent or a value, never null: its document shows the value's type alone."""
    kinds = [kind for kind in schema.pop("anyOf", []) if kind != {"type": "null"}]
    schema.update(kinds[0] if len(kinds) == 1 else {"anyOf": kinds})
    schema.pop("default", None)


def absent(description: str = "", **kwargs: Any) -> Any:
    """The default of an optional query string or header."""
    return Field(default=None, description=description or None, json_schema_extra=_not_null, **kwargs)


class JobListQuery(BaseModel):
    status: Annotated[JobStatus | None, BeforeValidator(blank_is_none)] = absent()
    limit: int = Field(default=100, ge=1, description="at most 1000 are listed")


class EventsQuery(BaseModel):
    after: EventId | None = absent("the id of the last event seen")


class EventsHeaders(BaseModel):
    last_event_id: EventId | None = absent("sent by EventSource on reconnect", alias="Last-Event-ID")


class RollbackRequest(Body):
    rev: Name = Field(validation_alias=AliasChoices("rev", "revision"), description="the revision (job id)")


DEFAULT_INSTRUCTION = "Represent the document for semantic search:"


class TextEmbeddingRequest(OriginalBody):
    text: NonBlank
    instruction: str = DEFAULT_INSTRUCTION


class ClipTextRequest(OriginalBody):
    text: NonBlank


class ClipImageRequest(OriginalBody):
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": [name], "properties": {name: {"type": "string", "minLength": 1}}}
        for name in ("imageUrl", "imageData")]})

    imageUrl: Annotated[HttpUrl | None, BeforeValidator(blank_is_none)] = None
    imageData: Base64Bytes | None = Field(default=None, description="base64, or a data: URL")

    @model_validator(mode="after")
    def _one_image(self) -> ClipImageRequest:
        if not self.imageUrl and not self.imageData:
            raise PydanticCustomError("image_required", "imageUrl or imageData is required")
        return self
