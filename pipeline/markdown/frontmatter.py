"""Frontmatter: YAML between `---` lines or TOML between `+++` lines, made JSON-safe.

Every way a post's frontmatter can be bad ends here as an ItemError naming the file, so one post is
skipped and recorded instead of failing the parse stage: text that does not parse, values the
libraries refuse to convert (an impossible date, a 5000-digit integer, `!!float abc`), nesting deep
enough to exhaust the parser's recursion, and aliases that expand a few hundred bytes into millions
of values (a "billion laughs" bomb) or refer to themselves.
"""

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
_FENCED = re.compile(r"\A\ufeff?(?P<fence>---|\+\+\+)[ \t]*\r?\n(?P<body>.*?)(?:\r?\n)?^(?P=fence)[ \t]*(?:\r?\n|\Z)",
                     re.DOTALL | re.MULTILINE)

# What frontmatter may hold once aliases are expanded. Without aliases a value costs at least one character
# of the file, so a budget of the file's own length plus these never refuses alias-free frontmatter; it
# refuses the expansion aliases allow (nine aliases of nine aliases, six deep, are half a million values).
MAX_DEPTH = 100
EXTRA_VALUES = 10_000
EXTRA_TEXT = 1 << 20  # characters of keys and strings
# Python refuses to write an integer of more than 4300 digits (sys.int_info.default_max_str_digits), so one
# that large would fail whoever serialises the post later; ~3.32 bits per decimal digit.
MAX_INT_BITS = 4000 * 332 // 100

# What the YAML and TOML libraries raise, rather than their own error types, for a value they cannot build
# (measured on both with each scalar tag and malformed value): `!!bool abc` is a KeyError, `!!int ''` an
# IndexError, `!!timestamp abc` an AttributeError, an impossible date or a too long integer a ValueError.
CONVERSION_ERRORS: tuple[type[Exception], ...] = (ValueError, OverflowError, TypeError, AttributeError,
                                                  IndexError, KeyError)

# libyaml's safe loader when present: the same safe subset, several times faster on long frontmatter.
_BASE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BASE_LOADER):  # type: ignore[misc]
    """The safe loader, with a value that does not convert reported at its line like any YAML error."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except CONVERSION_ERRORS as exc:
            tag = str(node.tag).rsplit(":", 1)[-1]
            kind = type(node).__name__.removesuffix("Node").lower()
            shown = _short(node.value) if isinstance(node.value, str) else f"a {kind}"
            # A ValueError says what is wrong (`day is out of range for month`); the others only how the
            # constructor tripped over it.
            why = f": {_reason(exc)}" if isinstance(exc, ValueError | OverflowError) else ""
            raise yaml.constructor.ConstructorError(
                None, None, f"{shown} is not a valid {tag}{why}", node.start_mark) from exc


def split_frontmatter(text: str, path: str) -> tuple[JSON, str]:
    """(frontmatter, markdown body). No fence: empty frontmatter and the whole text.

    Raises ItemError when a fenced block does not parse, holds a value that does not convert, expands beyond
    the budget above or is not a mapping: such a post would otherwise publish with its metadata silently
    dropped, or take the stage down with it.
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
        except RecursionError as exc:
            raise ItemError(path, "invalid TOML frontmatter: nested too deeply to read") from exc
        except CONVERSION_ERRORS as exc:
            raise ItemError(path, f"invalid TOML frontmatter: a value does not convert: {_reason(exc)}") from exc
    else:
        try:
            data = yaml.load(raw, Loader=_Loader)
        except yaml.YAMLError as exc:
            raise ItemError(path, f"invalid YAML frontmatter: {_yaml_reason(exc)}") from exc
        except RecursionError as exc:
            raise ItemError(path, "invalid YAML frontmatter: nested too deeply to read") from exc
    if data is None:
        return {}, body
    if not isinstance(data, dict):
        raise ItemError(path, f"frontmatter is a {type(data).__name__}, not a mapping")
    try:
        return _Converter(len(raw)).mapping(data, 1), body
    except _Refused as exc:
        raise ItemError(path, f"frontmatter refused: {exc}") from None


class _Refused(ValueError):
    """The frontmatter expands beyond its budget."""


class _Converter:
    """Dates and datetimes become ISO strings, recursively; anything else JSON cannot hold becomes a string.

    Hashes and the stored bundle are computed from this form, so it must be the same in every process.
    One converter is one document, with what is left of its budget of values and text.
    """

    def __init__(self, source_chars: int) -> None:
        self.values = EXTRA_VALUES + source_chars
        self.text = EXTRA_TEXT + source_chars

    def _spend(self, text: int = 0) -> None:
        self.values -= 1
        self.text -= text
        if self.values < 0:
            raise _Refused(f"it expands to more than {EXTRA_VALUES:,} values beyond its own size "
                           "(aliases repeating aliases)")
        if self.text < 0:
            raise _Refused(f"it expands to more than {EXTRA_TEXT:,} characters beyond its own size "
                           "(aliases repeating aliases)")

    def mapping(self, data: dict[Any, Any], depth: int) -> JSON:
        out: JSON = {}
        for k, v in data.items():
            key = str(k)
            self._spend(len(key))
            out[key] = self.value(v, depth)
        return out

    def value(self, value: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise _Refused(f"it is nested more than {MAX_DEPTH} levels deep (or an alias contains itself)")
        if isinstance(value, str):
            self._spend(len(value))
            return value
        self._spend()
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            if value.bit_length() > MAX_INT_BITS:
                raise _Refused("it holds an integer of more than 4,000 digits")
            return value
        if isinstance(value, float):
            # NaN and infinities are not JSON; `.nan` in YAML is almost certainly a typo for a string anyway.
            return value if math.isfinite(value) else str(value)
        if isinstance(value, dt.datetime | dt.date | dt.time):
            return value.isoformat()
        if isinstance(value, dict):
            return self.mapping(value, depth + 1)
        if isinstance(value, list | tuple):
            return [self.value(v, depth + 1) for v in value]
        if isinstance(value, set | frozenset):
            return sorted((self.value(v, depth + 1) for v in value), key=repr)
        if isinstance(value, bytes):
            encoded = base64.b64encode(value).decode("ascii")
            self._spend(len(encoded))
            return encoded
        text = str(value)
        self._spend(len(text))
        return text


def _short(text: str, limit: int = 40) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"… ({len(text):,} characters)"


def _reason(exc: BaseException) -> str:
    # "…; use sys.set_int_max_str_digits() to increase the limit" is advice for the programmer, not the author.
    return (str(exc).split("; use sys.", 1)[0] or type(exc).__name__).strip()


def _yaml_reason(exc: yaml.YAMLError) -> str:
    # The mark's line counts from the fence's inner first line; +2 makes it the line in the file.
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is not None:
        return f"{problem} (line {mark.line + 2}, column {mark.column + 1})"
    return str(problem)
