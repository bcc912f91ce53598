"""How much of a site's structure the parse stage recovers: post→post edges, dated posts, resolved and broken links.

Runs fetch and parse in-process (no Redis, no embeddings) on each corpus, made into a one-commit git repository
first when it is not one, so the numbers of two commits of repobuild can be compared on the same input:

    python -m benchmarks.site_fidelity CORPUS_DIR[=DOMAIN] [CORPUS_DIR[=DOMAIN] ...]

DOMAIN is the job's `domain` option: the site's own address, so links to it count as links inside the site
(til links to other TILs as https://til.simonwillison.net/…). Without it, the options of a plain job.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.models import JobSpec, SourceSpec
from pipeline.settings import Settings
from pipeline.stages import fetch, parse
from pipeline.stages.context import LocalContext, run_to_end
from pipeline.stages.parsed_posts import iter_posts
from pipeline.stores.artifacts import LocalArtifactStore


def as_git_repository(corpus: Path, work: Path) -> Path:
    """`corpus` itself when it is a git repository, else a copy of it committed once (the benchmark's own tool)."""
    if (corpus / ".git").exists():
        return corpus
    repo = work / corpus.name
    shutil.copytree(corpus, repo)
    env = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@example.com", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "b@example.com", "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z", "PATH": "/usr/bin:/bin"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "corpus"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    return repo


def measure(repo: Path, work: Path, domain: str | None = None) -> dict[str, Any]:
    settings = Settings(artifacts=str(work / "art"), output=str(work / "out"), temp_dir=str(work),
                        local_source_roots=(str(repo.parent), str(work)), skip_embeddings=True)
    store = LocalArtifactStore(settings.artifacts)
    spec = JobSpec(job_id="bench", task="process-all", source=SourceSpec(path=str(repo)),
                   options={"skipEmbeddings": True, **({"domain": domain} if domain else {})})
    for module, name, batch_fn in ((fetch, "fetch", None), (parse, "parse", parse.run_batch)):
        ctx = LocalContext(job_id="bench", stage=name, spec=spec, settings=settings, artifacts=store,
                           batch_fn=batch_fn)
        run_to_end(module.run, ctx)
    posts = list(iter_posts(store, "bench"))
    graph = store.get_json("jobs/bench/parse/result/graph.json")
    issues = store.get_json("jobs/bench/parse/result/processor-issues.json")["issues"]
    kinds = Counter(str(i.get("kind")) for i in issues)
    return {
        "posts": len(posts),
        "postEdges": sum(1 for e in graph["edges"] if e["type"] == "POST_LINKS_TO_POST"),
        "datedPosts": sum(1 for p in posts if p.get("date")),
        "dateSources": dict(sorted(Counter(str(p["dateSource"]) for p in posts if p.get("dateSource")).items())),
        "gitDatedPosts": sum(1 for p in posts if p.get("gitCreated")),
        "resolvedPostLinks": sum(len(p["links"]) for p in posts),
        "brokenLinks": kinds["broken-link"],
        "unresolvedSiteLinks": kinds["unresolved-link"],
        "sections": sum(1 for p in posts if p.get("isSection")),
    }


def main(argv: list[str]) -> None:
    for arg in argv:
        where, _, domain = arg.partition("=")
        with tempfile.TemporaryDirectory(prefix="site-fidelity-") as tmp:
            work = Path(tmp)
            repo = as_git_repository(Path(where).resolve(), work)
            print(json.dumps({"corpus": Path(where).name, "domain": domain or None,
                              **measure(repo, work / "run", domain or None)}))


if __name__ == "__main__":
    main(sys.argv[1:])
