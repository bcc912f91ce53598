"""One decorator per route: validate the request with the models of api/schemas.py (the submissions) and
api/route_requests.py (the rest), and document the route, with its answers (api/responses.py), in the OpenAPI 3.1
document that spectree generates from those same models.

spectree's own request wrapper is not used: it reads a whole response body (which would buffer the events
stream) and answers errors in its own shape. The view is registered with spectree for the document only, and the
decorator validates, so that a request of the wrong shape always answers a 400 `{status, message, field}`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError
from spectree import Response, SecurityScheme, SecuritySchemeData, SpecTree
from spectree.models import InType, SecureType

from api.extensions import settings_of
from api.responses import ErrorBody, JobConflict
from api.schemas import first_error

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)
Model = type[BaseModel]

AUTH = ("bearer", "apiKey")
SPEC = SpecTree(
    "flask",
    title="repobuild",
    version="1",
    description="Jobs that turn a repository of markdown posts into a searchable bundle; the original service's "
                "`/process` and inference routes. When the service has API keys (REPOBUILD_API_KEYS), every route "
                "but `/`, `/health`, `/ready` and this document needs one.",
    mode="strict",  # only the routes declared with `endpoint`
    annotations=False,
    page_templates={},  # no documentation pages that load scripts from elsewhere; the document only
    naming_strategy=lambda model: model.__name__,
    nested_naming_strategy=lambda _parent, child: child,
    validation_error_status=400,
    validation_error_model=ErrorBody,
    security_schemes=[
        SecurityScheme(name="bearer", data=SecuritySchemeData(type=SecureType.HTTP, scheme="bearer")),
        SecurityScheme(name="apiKey", data=SecuritySchemeData(type=SecureType.API_KEY, name="X-API-Key",
                                                              field_in=InType.HEADER)),
    ],
    # {}: no key at all, for a service that has none configured
    security=[{}, *({name: []} for name in AUTH)],
)


def parsed(model: type[M], value: Any) -> M:
    """`value` as `model`, or the 400 naming the first field at fault (the job pages read their ids with it too)."""
    try:
        return model.model_validate(value, context={"settings": settings_of()})
    except ValidationError as exc:
        raise first_error(exc, tagged=getattr(model, "tagged", False)) from None


def _headers(model: Model) -> dict[str, str]:
    names = [field.alias or name for name, field in model.model_fields.items()]
    return {name: request.headers[name] for name in names if name in request.headers}


def endpoint(*, ok: Mapping[int, Model | None], errors: Iterable[int] = (), body: Model | None = None,
             query: Model | None = None, headers: Model | None = None, path: Model | None = None,
             conflict: Model = JobConflict, public: bool = False, tags: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Validate path ids (`path`), the JSON body, the query string and the headers before the view runs; the view
    takes them as `body=`, `query=`, `headers=` (path ids keep their names). `ok`: status → body model of the
    answers that are not errors; `errors`: the error statuses the route gives besides 401 and 500."""
    codes: dict[str, Any] = {f"HTTP_{code}": model for code, model in ok.items()}
    for code in {*errors, 500, *(() if public else (401,)), *((400, 413) if body else ()), *((400,) if query or
                 headers or path else ())}:
        codes[f"HTTP_{code}"] = conflict if code == 409 else ErrorBody
    resp = Response(**codes)

    def decorate(view: F) -> F:
        described = {name: field.description or "" for name, field in path.model_fields.items()} if path else None
        documented = SPEC.validate(json=body, query=query, headers=headers, resp=resp, tags=tags,
                                   security={} if public else None, path_parameter_descriptions=described,
                                   skip_validation=True)(view)

        @functools.wraps(view)
        def validated(**params: Any) -> Any:
            if path is not None:
                params = parsed(path, params).model_dump()
            given: dict[str, Any] = {}
            if body is not None:
                given["body"] = parsed(body, request.get_json(silent=True))
            if query is not None:
                given["query"] = parsed(query, request.args.to_dict())
            if headers is not None:
                given["headers"] = parsed(headers, _headers(headers))
            return view(**params, **given)

        # the document finds the route's models through this chain (spectree follows `__wrapped__`)
        validated.__wrapped__ = documented
        return validated  # type: ignore[return-value]

    return decorate

