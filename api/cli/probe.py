"""`repobuild probe worker|api|flower`: the liveness and readiness checks of the containers (compose, k8s/).

Each prints one line and exits 0 when healthy, 1 when not, so Docker's HEALTHCHECK and Kubernetes' exec probes can
run it as it is. The worker's check reads the heartbeat its task consumer writes (worker/heartbeat.py), which stops
when the consumer stops consuming even though the process lives and answers pings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import httpx

from pipeline.http.local_health import local_status
from pipeline.settings import Settings
from worker.heartbeat_file import beat_age

FLOWER_PORT = 5555


def default_max_age(settings: Settings) -> float:
    """Four missed beats, and never under 15 s: a busy event loop may run a timer late."""
    return max(4 * settings.heartbeat_interval_s, 15.0)


def probe_worker(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    path = Path(settings.heartbeat_file)
    max_age = args.max_age if args.max_age is not None else default_max_age(settings)
    try:
        age = beat_age(path)
    except FileNotFoundError:
        return _fail(f"no heartbeat at {path}: the worker's task consumer has not consumed yet (or the worker ended)")
    except ValueError as exc:
        return _fail(str(exc))
    if age > max_age:
        return _fail(f"heartbeat {path} is {age:.0f} s old (max {max_age:.0f} s): the worker's task consumer "
                     "stopped consuming (cancelled, starved with messages waiting, or its event loop is stuck)")
    print(f"ok: worker heartbeat {age:.1f} s ago")
    return 0


def probe_http(name: str, port: int, path: str, timeout_s: float) -> int:
    try:
        status = local_status(port, path, timeout_s)
    except httpx.TransportError as exc:
        return _fail(f"{name} on 127.0.0.1:{port} does not answer {path}: {type(exc).__name__}: {exc}")
    if status != 200:
        return _fail(f"{name} on 127.0.0.1:{port} answered {path} with {status}")
    print(f"ok: {name} answered {path} with 200")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    if args.target == "worker":
        return probe_worker(args)
    if args.target == "api":
        return probe_http("the API", args.port or Settings.from_env().port, args.path, args.timeout)
    return probe_http("Flower", args.port, "/healthcheck", args.timeout)


def _fail(message: str) -> int:
    print(f"repobuild probe: {message}", file=sys.stderr)
    return 1


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    probe = sub.add_parser("probe", help="health check of this container's worker, API or Flower (exit 0 = healthy)")
    targets = probe.add_subparsers(dest="target", required=True)
    worker = targets.add_parser("worker", help="the task consumer's heartbeat is fresh (it consumes, or is busy)")
    worker.add_argument("--max-age", type=float, help="seconds a heartbeat stays fresh "
                        "(default: 4 x REPOBUILD_HEARTBEAT_INTERVAL_S, at least 15)")
    api = targets.add_parser("api", help="the API on this host answers --path (default /ready) with 200")
    api.add_argument("--port", type=int, help="default: REPOBUILD_PORT")
    api.add_argument("--path", default="/ready", help="/ready (Redis reachable) or /health (the process answers)")
    flower = targets.add_parser("flower", help="Flower on this host answers /healthcheck with 200")
    flower.add_argument("--port", type=int, default=FLOWER_PORT)
    for p in (api, flower):
        p.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    probe.set_defaults(func=cmd_probe)
