"""How long a message kept in job state may be: job and stage errors, issues, events, batch failures.

They are read on every poll and shown whole by `GET /jobs/<id>`; one error that lists what went wrong item by
item (a 2,000-entry `shutil.Error` once made a 496,685-character job error) would make every read of the job
that large. The start of a message says what happened; the rest is replaced by a marker saying how much was cut.
"""

from __future__ import annotations

from typing import Any

MESSAGE_MAX_CHARS = 4000
PATH_MAX_CHARS = 1000  # an issue's path: the file it names, which a hostile repository may make very long


def capped(text: str, limit: int = MESSAGE_MAX_CHARS) -> str:
    """`text` if it is at most `limit` characters, else its first `limit` and a marker of what was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit:,} more characters cut]"


def capped_json(value: Any, limit: int = MESSAGE_MAX_CHARS) -> Any:
    """`value` with every string in it capped (an error, a callback outcome)."""
    if isinstance(value, str):
        return capped(value, limit)
    if isinstance(value, dict):
        return {k: capped_json(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [capped_json(v, limit) for v in value]
    return value
