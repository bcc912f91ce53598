"""Credentials in a request, split from what is stored: a token never reaches stored job state."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pipeline.models import SourceSpec


def split_credentials(url: str) -> tuple[str, str | None]:
    """`https://user:token@host/x` → (`https://host/x`, token)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not (parts.username or parts.password):
        return url, None
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    token = parts.password or parts.username
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), token


def source_spec(value: str | None, branch: str | None, commit: str | None, depth: int | None,
                subfolder: str | None = None) -> tuple[SourceSpec | None, str | None]:
    """A source string → (SourceSpec, token found in its URL)."""
    if not value:
        return None, None
    if "://" in value or value.startswith("git@"):
        url, token = split_credentials(value)
        return SourceSpec(url=url, branch=branch, commit=commit, depth=depth, subfolder=subfolder), token
    return SourceSpec(path=value, branch=branch, commit=commit, depth=depth, subfolder=subfolder), None


def strip_push_credentials(options: dict[str, Any], names: tuple[str, ...]) -> list[str | None]:
    """Push targets (wp-import, brief) may carry credentials in their URLs too: stripped in place, returned."""
    found: list[str | None] = []
    for name in names:
        if isinstance(options.get(name), str):
            options[name], token = split_credentials(options[name])
            found.append(token)
    return found


def secrets_of(*tokens: str | None) -> dict[str, str]:
    for token in tokens:
        if token:
            return {"git_token": token}
    return {}
