"""Tier 2: `repobuild run` with its stderr going to a file, as in CI or `docker logs`: besides a line per stage
transition it prints, every few seconds, the counts, the rate and the time left; the summary on stdout gives
each stage's wall time and, beside it, its task time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.e2e.test_durability import english_guide

pytestmark = pytest.mark.integration

PROGRESS = re.compile(r"^progress \d+:\d\d:\d\d \| (\d+)/(\d+) stages done( \| .+)?$")
COUNTS = re.compile(r"embed_text (\d+)/(\d+) \((\d+)%\) (\d+\.\d)/s eta \d+:\d\d:\d\d")


def test_run_without_a_terminal_prints_progress_lines_with_counts_rate_and_eta(tmp_path: Path) -> None:
    corpus = english_guide(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPOBUILD_", "SKIP_EMBEDDINGS"))}
    env.update(PYTHONPATH=str(ROOT), REPOBUILD_TEMP_DIR=str(tmp_path), REPOBUILD_EMBED_BATCH="8")
    err = tmp_path / "stderr.txt"
    with open(err, "w") as stderr:
        done = subprocess.run([sys.executable, "-m", "api.cli.main", "run", str(corpus), "--out",
                               str(tmp_path / "out"), "--job-id", "prog-1", "--progress-every", "0.5"],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=300)
    lines = err.read_text().splitlines()
    assert done.returncode == 0, done.stdout + "\n".join(lines)
    progress = [line for line in lines if line.startswith("progress ")]
    assert len(progress) >= 2, lines
    assert all(PROGRESS.match(line) for line in progress), progress
    counted = [m for line in progress if (m := COUNTS.search(line))]
    assert counted, progress  # embed_text runs a dozen batches for seconds: some line caught it at work
    for m in counted:
        n, total, percent = int(m[1]), int(m[2]), int(m[3])
        assert 0 <= n <= total and percent == 100 * n // total
    stages_done = [int(m[1]) for line in progress if (m := PROGRESS.match(line))]
    assert stages_done == sorted(stages_done)
    assert "embed_text: done" in lines and "notify: done" in lines
    # a stage between its continuations is still running: one line each way, no flapping
    embed = [line for line in lines if line.startswith("embed_text: ")]
    assert embed.count("embed_text: running") == 1 and embed[-1] == "embed_text: done", embed
    summary = next(line for line in done.stdout.splitlines() if line.startswith("stage times"))
    timing = re.search(r"embed_text (\d+\.\d+)s \((\d+\.\d+)s\)", summary)
    assert timing and float(timing[1]) > 0 and float(timing[2]) > 0, summary
