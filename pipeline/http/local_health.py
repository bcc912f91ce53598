"""Health checks of this container's own services, for the probes of `repobuild probe` (api/cli/probe.py).

Not a request made for a caller, so the address policy of the other modules here does not apply: it reaches
only the loopback address, on a port the operator's probe names, and ignores proxy variables.
"""

from __future__ import annotations

import httpx


def local_status(port: int, path: str, timeout_s: float) -> int:
    """The HTTP status `GET http://127.0.0.1:<port><path>` answers; httpx.TransportError when nothing answers."""
    if not path.startswith("/"):
        raise ValueError(f"a probe path starts with /, got {path!r}")
    with httpx.Client(timeout=timeout_s, trust_env=False, follow_redirects=False) as client:
        return client.get(f"http://127.0.0.1:{port}{path}").status_code
