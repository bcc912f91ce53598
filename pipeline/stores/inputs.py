"""Large request payloads (a WordPress export in `data.wpXml`) go to the artifact store, not Redis.

Job state in Redis stays small (ARCHITECTURE: "Redis holds only small things"): a payload above
OFFLOAD_BYTES is stored content-addressed under `inputs/<sha256>` and the job's options keep only
`{"artifact": key, "bytes": n}`. Being content-addressed, the same body submitted again under the
same job id still has the same fingerprint, and a different body a different one.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pipeline.errors import PermanentError
from pipeline.models import JobSpec
from pipeline.stores.artifacts import ArtifactStore

LARGE_OPTIONS = ("wpXml",)
OFFLOAD_BYTES = 64 * 1024


def offload_large_options(spec: JobSpec, artifacts: ArtifactStore) -> JobSpec:
    options = dict(spec.options)
    for name in LARGE_OPTIONS:
        value = options.get(name)
        if isinstance(value, str) and len(value) > OFFLOAD_BYTES:
            data = value.encode()
            key = f"inputs/{hashlib.sha256(data).hexdigest()}"
            if not artifacts.exists(key):
                artifacts.put_bytes(key, data)
            options[name] = {"artifact": key, "bytes": len(data)}
    return spec if options == spec.options else spec.model_copy(update={"options": options})


def option_text(value: Any, artifacts: ArtifactStore, name: str) -> Any:
    """An option's value as submitted, read back from the artifact store when it was offloaded."""
    if isinstance(value, dict) and isinstance(value.get("artifact"), str):
        key = value["artifact"]
        if not key.startswith("inputs/") or not artifacts.exists(key):
            raise PermanentError(f"{name}: the stored request payload {key} is missing")
        return artifacts.get_bytes(key).decode()
    return value
