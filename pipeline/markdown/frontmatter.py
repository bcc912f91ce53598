"""Frontmatter: YAML between `---` lines or TOML between `+++` lines, made JSON-safe."""

from __future__ import annotations

import base64
import datetime as dt
import math
import re
import tomllib
from typing import Any

import yaml

from pipeline.errors import ItemError
from pipeline.models import JSON

# The closing fence may end the file without a newline; a BOM before the opening fence is common on Windows.
# libyaml's safe loader when present: the same safe subset, several times faster on long frontmatter.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_FENCED = re.compile(r"\A\ufeff?(?P<fence>---|\+\+\+)[ \t]*\r?\n(?P<body>.*?)(?:\r?\n)?^(?P=fence)[ \t]*(?:\r?\n|\Z)",
                     re.DOTALL | re.MULTILINE)


def split_frontmatter(text: str, path: str) -> tuple[JSON, str]:
    """(frontmatter, markdown body). No fence: empty frontmatter and the whole text.

    Raises ItemError when a fenced block does not parse or is not a mapping: such a post would otherwise
    publish with its metadata silently dropped.
    """
    m = _FENCED.match(text)
    if m is None:
        return {}, text.removeprefix("\ufeff")
    raw, body = m.group("body"), text[m.end():]
    if m.group("fence") == "+++":
        try:
            data: Any = tomllib.loads(raw)
        except tomllib.TOMLDecodeError as exc:
            raise ItemError(path, f"invalid TOML frontmatter: {exc}") from exc
    else:
        try:
            data = yaml.load(raw, Loader=_YAML_LOADER)
        except yaml.YAMLError as exc:
            raise ItemError(path, f"invalid YAML frontmatter: {_yaml_reason(exc)}") from exc
    if data is None:
        return {}, body
    if not isinstance(data, dict):
        raise ItemError(path, f"frontmatter is a {type(data).__name__}, not a mapping")
    return {str(k): to_json_value(v) for k, v in data.items()}, body


def to_json_value(value: Any) -> Any:
    """Dates and datetimes become ISO strings, recursively; anything else JSON cannot hold becomes a string.

    Hashes and the stored bundle are computed from this form, so it must be the same in every process.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        # NaN and infinities are not JSON; `.nan` in YAML is almost certainly a typo for a string anyway.
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((to_json_value(v) for v in value), key=repr)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def _yaml_reason(exc: yaml.YAMLError) -> str:
    # The mark's line counts from the fence's inner first line; +2 makes it the line in the file.
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is not None:
        return f"{problem} (line {mark.line + 2}, column {mark.column + 1})"
    return str(problem)
