"""Large request fields go to the artifact store, not Redis; absurd ones are refused at the edge.

Job state in Redis stays small (ARCHITECTURE: "Redis holds only small things"), and every stage reads the
job's spec again: any field of the job's options whose size is above OFFLOAD_BYTES (a WordPress export in
`wpXml`, a long `brief`, a blob a client sends along) is stored content-addressed under `inputs/<sha256>`,
and the options keep only `{"artifact": key, "bytes": n}`, plus `"json": true` when the value was not a
string. Being content-addressed, the same body submitted again under the same job id still has the same
fingerprint, and a different body a different one. A stage that reads such a field asks `option_text`.

What no job needs is refused at the API, naming the field (`bounded_fields`): one field above
FIELD_MAX_BYTES (the WordPress export excepted, which only the request body limit bounds), or more than
INLINE_MAX_BYTES of small fields together, which would all stay in Redis.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pipeline.errors import PermanentError
from pipeline.models import JobSpec
from pipeline.stores.artifacts import ArtifactStore

OFFLOAD_BYTES = 64 * 1024
FIELD_MAX_BYTES = 1024 * 1024
INLINE_MAX_BYTES = 256 * 1024
PAYLOAD_FIELDS = frozenset({"wpXml"})  # as large as the request body may be
_INPUT_KEY = re.compile(r"inputs/[0-9a-f]{64}")


class FieldTooLarge(ValueError):
    """A request field beyond what the service keeps; a ValueError, so schema validators report it as such."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _encoded(value: Any) -> bytes:
    """What a field costs to keep: a string as its text, anything else as its JSON."""
    return value.encode() if isinstance(value, str) else json.dumps(value, sort_keys=True).encode()


def bounded_fields(fields: dict[str, Any], where: str) -> dict[str, Any]:
    """`fields` (the body's `options` or `data`) unchanged, or FieldTooLarge naming the field `where`.`name`."""
    inline = 0
    for name, value in fields.items():
        if isinstance(value, dict) and "artifact" in value:
            # Only offload_large_options writes such a reference, after this check: a caller who sent one could
            # have a stage read another job's offloaded input.
            raise FieldTooLarge(f"{where}.{name}", f"{where}.{name}: an object with an `artifact` key is not "
                                                   f"accepted (it is how the service stores large inputs)")
        size = len(_encoded(value))
        if size > FIELD_MAX_BYTES and name not in PAYLOAD_FIELDS:
            raise FieldTooLarge(f"{where}.{name}", f"{where}.{name} is {size:,} bytes; a field may be at most "
                                                   f"{FIELD_MAX_BYTES:,} bytes")
        if size <= OFFLOAD_BYTES:
            inline += size + len(name)
    if inline > INLINE_MAX_BYTES:
        raise FieldTooLarge(where, f"{where} holds {inline:,} bytes of small fields; at most "
                                   f"{INLINE_MAX_BYTES:,} are kept with a job")
    return fields


def offload_large_options(spec: JobSpec, artifacts: ArtifactStore) -> JobSpec:
    """The spec with every option above OFFLOAD_BYTES moved to the artifact store."""
    options = dict(spec.options)
    for name, value in spec.options.items():
        data = _encoded(value)
        if len(data) > OFFLOAD_BYTES:
            key = f"inputs/{hashlib.sha256(data).hexdigest()}"
            if not artifacts.exists(key):
                artifacts.put_bytes(key, data)
            options[name] = {"artifact": key, "bytes": len(data), **({} if isinstance(value, str) else {"json": True})}
    return spec if options == spec.options else spec.model_copy(update={"options": options})


def option_text(value: Any, artifacts: ArtifactStore, name: str) -> Any:
    """An option's value as submitted, read back from the artifact store when it was offloaded."""
    if isinstance(value, dict) and isinstance(value.get("artifact"), str):
        key = value["artifact"]
        # Only what offload_large_options writes: a request cannot point a stage at another artifact.
        if not _INPUT_KEY.fullmatch(key) or not artifacts.exists(key):
            raise PermanentError(f"{name}: the stored request payload is missing")
        data = artifacts.get_bytes(key)
        return json.loads(data) if value.get("json") is True else data.decode()
    return value
