"""Tier 1: no request for a caller reaches a private or metadata address, proven where nothing can leave.

The probe runs in a loopback-only network namespace (`unshare -n`), where 10.0.0.1 and 169.254.169.254 are
put on `lo` and a canary listens on port 80 of every address, and in a mount namespace whose /etc/hosts makes
`internal.test` and `metadata.test` resolve to them. Every outbound path is tried against them, directly, by
name and through a redirect from an allowed server; the canary must see nothing. Then the same request with
those networks allowlisted must reach it, which proves the canary would have seen a leak.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.http import callbacks
from pipeline.http.address_policy import AddressPolicy
from pipeline.http.safe_fetch import fetch_image
from pipeline.sources.git import clone
from pipeline.sources.git_write import commit_tree, push
from pipeline.sources.github_template import generate_from_template, wait_until_cloneable
from tests.conftest import LOCAL_POLICY, ROOT
from tests.fakes.listeners import Canary
from tests.stages.test_outbound import Redirector

HOSTS = "127.0.0.1 localhost\n10.0.0.1 internal.test\n169.254.169.254 metadata.test\n"
SETUP = ("ip link set lo up && ip addr add 10.0.0.1/32 dev lo && ip addr add 169.254.169.254/32 dev lo && "
         "mount --bind {hosts} /etc/hosts && exec {python} -c 'import sys, {module} as m; m.probe(sys.argv[1])' {work}")


def probe(work: str) -> None:
    """Inside the namespaces: try every path, print what happened as one JSON line."""
    canary = Canary("0.0.0.0", 80)
    tmp = Path(work)
    tree = tmp / "tree"
    tree.mkdir()
    (tree / "a.md").write_text("# A\n")
    commit_tree(tree, "one", timestamp=1)
    hop = Redirector("http://internal.test")
    cases: dict[str, Callable[[], Any]] = {}
    for url in ("http://10.0.0.1/cb", "http://internal.test/cb", "http://metadata.test/latest",
                "http://169.254.169.254/latest", "http://[::ffff:a9fe:a9fe]/", "http://[64:ff9b::a9fe:a9fe]/",
                "http://[2002:a9fe:a9fe::]/", "http://2852039166/", "http://0xa9.0xfe.0xa9.0xfe/"):
        cases[f"callback {url}"] = lambda url=url: callbacks.deliver(url, {"jobId": "j"}, secret="s", timeout_s=3,
                                                                     delivery_id="d", policy=LOCAL_POLICY)
        cases[f"image {url}"] = lambda url=url: fetch_image(url + "x.png", policy=LOCAL_POLICY, max_bytes=100)
    for n, url in enumerate(("http://internal.test/r.git", "http://10.0.0.1/r.git", f"{hop.url}/r.git")):
        cases[f"clone {url}"] = lambda url=url, n=n: clone(url, tmp / f"c{n}", policy=LOCAL_POLICY, timeout_s=3)
        cases[f"push {url}"] = lambda url=url: push(tree, url, policy=LOCAL_POLICY, timeout_s=3)
        cases[f"poll {url}"] = lambda url=url: wait_until_cloneable(url, policy=LOCAL_POLICY, timeout=1,
                                                                    request_timeout_s=1)
    cases[f"image via {hop.url}"] = lambda: fetch_image(f"{hop.url}/x.png", policy=LOCAL_POLICY, max_bytes=100)
    for base in ("http://metadata.test", hop.url):
        cases[f"github api {base}"] = lambda base=base: generate_from_template("o/t", "n", token="t", api_base=base,
                                                                               policy=LOCAL_POLICY)
    outcomes = {}
    for name, attempt in cases.items():
        try:
            attempt()
            outcomes[name] = ["no error", ""]
        except Exception as exc:  # every outcome is reported to the test, which judges them
            outcomes[name] = [type(exc).__name__, str(exc)]
    before = canary.connections
    leaky = AddressPolicy.of(["10.0.0.0/8", "169.254.0.0/16"])
    for url in ("http://10.0.0.1/cb", "http://metadata.test/cb"):
        try:
            callbacks.deliver(url, {}, secret=None, timeout_s=3, delivery_id="d", policy=leaky)
        except Exception as exc:  # the canary hangs up: only whether it was reached matters
            outcomes[f"allowed {url}"] = [type(exc).__name__, str(exc)]
    hop.stop()
    print(json.dumps({"outcomes": outcomes, "before": before, "after": canary.connections}))


def run_probe(tmp_path: Path) -> dict[str, Any]:
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("ip")):
        pytest.skip("needs unshare and ip as root for a loopback-only network namespace")
    hosts = tmp_path / "hosts"
    hosts.write_text(HOSTS)
    script = SETUP.format(hosts=shlex.quote(str(hosts)), python=shlex.quote(sys.executable), module=__name__,
                          work=shlex.quote(str(tmp_path)))
    proc = subprocess.run(["unshare", "-n", "-m", "bash", "-c", script], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    if proc.returncode != 0 and "unshare" in proc.stderr and "ermission" in proc.stderr:
        pytest.skip(f"no network namespaces here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_nothing_reaches_private_or_metadata_addresses(tmp_path: Path) -> None:
    result = run_probe(tmp_path)
    outcomes = result["outcomes"]
    tried = {name: outcome for name, outcome in outcomes.items() if not name.startswith("allowed ")}
    assert len(tried) == 30
    wrong = {name: outcome for name, outcome in tried.items() if outcome[0] != "AddressRefused"}
    assert not wrong, wrong
    for name, (_kind, message) in tried.items():
        assert "address refused" in message, (name, message)
        if "internal.test" in name or "via" in name or "127.0.0.1:" in name:
            assert "internal.test resolves to a non-public address" in message, (name, message)
        assert "10.0.0.1" not in message or "10.0.0.1" in name, (name, message)  # what a name resolved to is not told
    assert result["before"] == 0
    assert result["after"] >= 2, outcomes  # allowlisted, the same requests do reach the canary
