"""The JSON encoding of everything compared byte for byte: the bundle's files and the input of content hashes.

Sorted keys, no spaces, text as is (UTF-8), so two builds of the same content write the same bytes.
"""

from __future__ import annotations

import json
from typing import Any


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
