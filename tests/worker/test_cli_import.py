"""Tier 3: `repobuild run export.xml` makes, builds and writes a WordPress site's bundle to a local folder, with
its own private Redis and worker, no bucket and no project (the contract's wp-import deploys to one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.wordpress_site import item, wxr

pytestmark = pytest.mark.e2e


def test_run_takes_a_wordpress_export(tmp_path: Path) -> None:
    export = tmp_path / "export.xml"
    export.write_bytes(wxr("https://harbour.example", "\n".join([
        item(1, "post", "publish", title="Tides", slug="tides", content="<p>H<sub>2</sub>O comes and goes.</p>"),
        item(2, "post", "publish", title="Locked", slug="locked", content="<p>walrussecret</p>", password="pw"),
    ])))
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPOBUILD_")}
    env.update(PYTHONPATH=str(Path(__file__).resolve().parents[2]), REPOBUILD_SKIP_EMBEDDINGS="true",
               REPOBUILD_TEMP_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "api.cli", "run", str(export), "--out", str(out),
                           "--concurrency", "1"], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    posts = json.loads((out / "latest" / "posts.json").read_bytes())
    assert [p["slug"] for p in posts] == ["tides"] and "H<sub>2</sub>O" in posts[0]["html"]
    manifest = json.loads((out / "latest" / "manifest.json").read_bytes())
    assert f"issues: {manifest['counts']['issues']}" in done.stdout
    withheld = json.loads((out / "latest" / "worker-issues.json").read_bytes())["issues"]
    assert [(i["path"], i["kind"]) for i in withheld if i["kind"] == "withheld"] == [("post:2", "withheld")]
    everything = b"".join(p.read_bytes() for p in (out / "latest").rglob("*") if p.is_file())
    assert b"walrussecret" not in everything
