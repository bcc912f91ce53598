"""P5: `POST /jobs` under a constant 500 requests/s for 30 s on loopback, the API under gunicorn as deployed.

A private redis-server, the API started with the production command (`gunicorn --config python:api.gunicorn_conf
'api.app:create_app()'`, WEB_CONCURRENCY as the image sets it, bound to a free loopback port), and the load
generator (`benchmarks.load_client`, open loop) in a process of its own. No Celery worker: each accepted job's first
stage waits in its queue, which only grows (one list push a job; what the API does per request does not depend on
the queue's length). Every body is a distinct, valid process-all job whose source is the demo repository, under
REPOBUILD_LOCAL_SOURCE_ROOTS, so no request needs the network. The first seconds are a warm-up, left out.

    python -m benchmarks.p5_submit_load [--rate 500] [--seconds 30] [--warmup 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from api.cli.local_services import PrivateRedis, free_port, kill_group, stop_group
from benchmarks.cpu_use import cpu_now
from benchmarks.targets import Row
from pipeline.settings import Settings
from pipeline.stores.keys import RedisKeys
from worker.queues import QUEUES

ROOT = Path(__file__).resolve().parent.parent
DEMO_REPO = ROOT / "samples" / "demo-repo"
P99_LIMIT_MS = 15.0
ENV_WORKERS = "2"  # the image's WEB_CONCURRENCY (Dockerfile, docker-compose.yml)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of all at or below it."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def start_gunicorn(settings: Settings, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(ROOT)}
    env.setdefault("WEB_CONCURRENCY", ENV_WORKERS)
    # the deployed command; only the address differs (loopback, a free port, instead of 0.0.0.0:$PORT)
    cmd = [sys.executable, "-m", "gunicorn", "--config", "python:api.gunicorn_conf", "--bind", f"127.0.0.1:{port}",
           "api.app:create_app()"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited at start: {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("gunicorn did not answer /ready within 60 s")
        time.sleep(0.1)


def run_client(port: int, rate: float, bodies: Path, timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.load_client", "--port", str(port), "--rate", str(rate),
           "--bodies", str(bodies)]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, stdout=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"the load generator exited with {proc.returncode}")
    result: dict[str, Any] = json.loads(out)
    return result


def summarise(raw: dict[str, Any], warmup_s: float) -> dict[str, Any]:
    measured = [i for i, due in enumerate(raw["due"]) if due >= warmup_s]
    lat = sorted(1000 * raw["latency"][i] for i in measured)
    statuses = [raw["status"][i] for i in measured]
    errors = sum(1 for s in statuses if not 200 <= s < 300)
    span = raw["due"][measured[-1]] - raw["due"][measured[0]] if len(measured) > 1 else 0.0
    # requests answered 2xx per second over the measured window (its span of due times + the last one's wait)
    done_s = span + raw["latency"][measured[-1]] if measured else 0.0
    return {"requests": len(measured), "errors": errors, "statuses": {str(s): statuses.count(s) for s in set(statuses)},
            "exceptions": raw["errors"], "p50_ms": percentile(lat, 50), "p95_ms": percentile(lat, 95),
            "p99_ms": percentile(lat, 99), "max_ms": lat[-1] if lat else float("nan"),
            "offered_rate": (len(measured) - 1) / span if span else 0.0,
            "achieved_rate": (len(measured) - errors) / done_s if done_s else 0.0}


def redis_work(client: redis.Redis) -> tuple[int, int]:
    """Reads (one a round trip: a pipeline arrives in one) and commands the server has processed so far."""
    stats = client.info("stats")
    return int(stats["total_reads_processed"]), int(stats["total_commands_processed"])


def measure(rate: float = 500.0, seconds: float = 30.0, warmup_s: float = 3.0, work: Path | None = None) -> Row:
    row = Row("P5", f"POST /jobs at {rate:.0f}/s for {seconds:.0f} s, gunicorn, open loop", "p99 ≤ 15 ms, 0 errors")
    own = work is None
    folder = Path(tempfile.mkdtemp(prefix="repobuild-p5-")) if work is None else work
    server = PrivateRedis()
    gunicorn: subprocess.Popen[bytes] | None = None
    try:
        server.start()
        settings = Settings.from_env({}).with_(
            redis_url=server.url, artifacts=str(folder / "artifacts"), output=str(folder / "out"),
            temp_dir=str(folder), local_source_roots=(str(DEMO_REPO),), metrics_port=0)
        port = free_port()
        gunicorn = start_gunicorn(settings, port, folder / "gunicorn.log")
        run = f"{os.getpid()}-{time.time_ns()}"
        total = int(rate * (warmup_s + seconds))
        bodies = folder / "bodies.jsonl"
        bodies.write_text("".join(json.dumps({"task": "process-all", "source": str(DEMO_REPO),
                                              "job_id": f"p5-{run}-{n}"}) + "\n" for n in range(total)))
        groups = {gunicorn.pid, *([server.proc.pid] if server.proc else [])}
        client = redis.Redis.from_url(server.url, decode_responses=True)
        redis0 = redis_work(client)
        load0, cpu0 = os.getloadavg(), cpu_now(groups)
        began = time.monotonic()
        raw = run_client(port, rate, bodies, timeout_s=warmup_s + seconds + 120)
        if not own:  # --keep: every request's due time, latency and status, to see when the slow ones came
            (folder / "requests.json").write_text(json.dumps(raw))
        load_s = time.monotonic() - began
        cpu, load1 = cpu_now(groups).minus(cpu0), os.getloadavg()
        reads, commands = (after - before for after, before in zip(redis_work(client), redis0, strict=True))
        details = summarise(raw, warmup_s)
        accepted = sum(1 for s in raw["status"] if 200 <= s < 300)
        stored = int(client.zcard(RedisKeys(settings.key_prefix).index))
        # per job the server stored (made and sent): under overload it works on more than it answers in time
        made = max(stored, 1)
        details.update({
            "rate": rate, "seconds": seconds, "warmup_s": warmup_s,
            "gunicorn_workers": os.environ.get("WEB_CONCURRENCY", ENV_WORKERS),
            # every job answered 2xx is in Redis, and its first stage in a queue (no worker takes it); more are
            # stored when the generator gave up waiting (10 s) for answers the server was still working on
            "jobs_accepted": accepted, "jobs_stored": stored, "stored_per_s": stored / load_s,
            "queued_messages": sum(int(client.llen(q)) for q in QUEUES),
            "redis_reads_per_post": reads / made, "redis_commands_per_post": commands / made,
            "loadavg_before": load0, "loadavg_after": load1, "cpu_server_s": cpu.ours,
            "cpu_ms_per_post": 1000 * cpu.ours / made,  # gunicorn (all its workers) and redis-server
            "cpu_machine_s": cpu.machine, "cpu_wall_s": cpu.at, "steal_s": cpu.steal})
        client.close()
        row.measured = (f"p99 {details['p99_ms']:.1f} ms (p50 {details['p50_ms']:.1f}, p95 {details['p95_ms']:.1f}, "
                        f"max {details['max_ms']:.0f}), {details['errors']} errors, "
                        f"{details['achieved_rate']:.0f}/s answered")
        row.ratio = details["p99_ms"] / P99_LIMIT_MS
        row.passed = (details["p99_ms"] <= P99_LIMIT_MS and details["errors"] == 0
                      and details["jobs_stored"] >= accepted)
        row.details = details
        return row
    finally:
        if gunicorn is not None:
            stop_group(gunicorn, 30)
        server.stop()
        if own:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=500.0, help="requests per second (default 500)")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured seconds, after the warm-up (default 30)")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of load left out at the start (default 3)")
    ap.add_argument("--keep", type=Path,
                    help="a folder to keep the gunicorn log, the bodies and each request's latency in")
    args = ap.parse_args(argv)
    # a SIGTERM to the benchmark runs the finally blocks: gunicorn and redis stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    row = measure(args.rate, args.seconds, args.warmup, args.keep)
    print(row.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
