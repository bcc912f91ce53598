"""P2: a rebuild after editing one post, versus the full build: ≤ 10 % of its wall time, only that post re-embedded.

    python -m benchmarks.p2_rebuild [--concurrency N] [--keep]

From the same run as P1 (benchmarks.builds): after the full build of opensource-guide English + til, rebuild A edits
one guide post, rebuild B one til post on top of A, both on the same artifact store. For each, the inputs the
rebuild embedded are read from its own embed_text plan and batch files and traced to their post; the post whose text
changed must own every one of them, and no image may be processed again. The ratio is the slower rebuild's
wall / (10 % of the full build's).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from benchmarks.builds import Builds, stage_times
from benchmarks.harness import Run
from benchmarks.targets import Row
from pipeline.catalog import job_key
from pipeline.stores.artifacts import LocalArtifactStore

SHARE = 0.10


@dataclass
class Rebuilt:
    edited: str
    wall_s: float
    changed_posts: list[str]  # slugs of the posts whose post-vector input is new since the build before
    embedded: dict[str, list[str]]  # slug → the inputs of that post the rebuild embedded
    inputs: int
    images_processed: int

    @property
    def only_that_post(self) -> bool:
        return len(self.changed_posts) == 1 and set(self.embedded) == set(self.changed_posts) \
            and self.images_processed == 0


def rebuilt(b: Builds, edited: str, before: Run, run: Run) -> Rebuilt:
    artifacts = LocalArtifactStore(b.settings.artifacts)
    job = run.job.spec.job_id
    keys: set[str] = set()
    for n in range(int(run.plan["batches"])):
        keys.update(artifacts.get_json(job_key(job, "embed_text", f"items/{n:05d}.json"))["embedded"])
    slugs = {i["post"]: i["slug"] for i in run.plan["items"] if i["kind"] == "post"}
    old = {i["key"] for i in before.plan["items"]}
    changed = sorted(slugs[i["post"]] for i in run.plan["items"] if i["kind"] == "post" and i["key"] not in old)
    embedded: dict[str, list[str]] = {}
    for item in run.plan["items"]:
        if item["key"] in keys:
            keys.discard(item["key"])  # an input shared by two posts is embedded once
            embedded.setdefault(slugs.get(item["post"], item["post"]), []).append(
                "post vector" if item["kind"] == "post" else f"chunk {item['index']}")
    images = int(run.job.stage("embed_images").summary.get("processed") or 0)
    return Rebuilt(edited, run.wall_s, changed, embedded, len(run.plan["items"]), images)


def measure(builds: Builds | None = None) -> Row:
    """P2's row, from `builds` (or from a run of its own)."""
    if builds is None:
        from benchmarks.p1_process_all import with_builds

        builds = with_builds(lambda found: found)
    b = builds
    found = [rebuilt(b, *r) for r in b.rebuilds]
    worst = max(r.wall_s for r in found) / b.full.wall_s
    ok = worst <= SHARE and all(r.only_that_post for r in found)
    measured = "; ".join(f"{r.changed_posts[0] if len(r.changed_posts) == 1 else r.changed_posts}: "
                         f"{r.wall_s:.1f} s = {r.wall_s / b.full.wall_s:.1%}, "
                         f"{sum(len(v) for v in r.embedded.values())} of {r.inputs} inputs re-embedded"
                         f"{'' if r.only_that_post else ' (NOT only that post)'}" for r in found)
    details: dict[str, Any] = {"full_wall_s": round(b.full.wall_s, 2), "rebuilds": [
        {"edited": r.edited, "wall_s": round(r.wall_s, 2), "share": round(r.wall_s / b.full.wall_s, 4),
         "changed_posts": r.changed_posts, "embedded": r.embedded, "images_processed": r.images_processed,
         "only_that_post": r.only_that_post} for r in found]}
    return Row("P2", "rebuild after editing one post (a guide post, then a til post) vs the full build",
               "≤ 10 %, only that post re-embedded", measured, worst / SHARE, ok, details=details)


def details(b: Builds) -> str:
    lines = []
    for r, (_, _, run) in zip([rebuilt(b, *x) for x in b.rebuilds], b.rebuilds, strict=True):
        lines.append(f"{r.edited}: {r.wall_s:.2f} s; changed posts {r.changed_posts}; re-embedded "
                     + "; ".join(f"{slug}: {', '.join(what)}" for slug, what in r.embedded.items())
                     + f"; images processed again: {r.images_processed}")
        lines += [f"  {name:<13} {t['wall_s']:7.2f} s   gap {t['gap_s']:5.2f} s"
                  for name, t in stage_times(run).items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from benchmarks import p1_process_all

    return p1_process_all.main(argv)


if __name__ == "__main__":
    sys.exit(main())
