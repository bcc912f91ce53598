"""The benchmark's printed report: the machine, then one table per measurement."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from api.cli.local_services import redis_server_binary
from benchmarks.chunking import Chunking
from benchmarks.floor import Floor
from benchmarks.guide_corpus import EDITED_POST
from benchmarks.harness import Run, stage_wall
from pipeline.plans import NOTIFY
from pipeline.settings import Settings


def new_inputs(old: dict[str, Any], new: dict[str, Any]) -> tuple[int, int, dict[str, list[str]]]:
    """Inputs of `new` whose text `old` did not have: (post vectors, chunks, {slug: [which]})."""
    seen = {i["key"] for i in old["items"]}
    slugs = {i["post"]: i["slug"] for i in new["items"] if i["kind"] == "post"}
    posts = chunks = 0
    where: dict[str, list[str]] = {}
    for item in new["items"]:
        if item["key"] in seen:
            continue
        seen.add(item["key"])
        if item["kind"] == "post":
            posts += 1
        else:
            chunks += 1
        where.setdefault(slugs.get(item["post"], item["post"]), []).append(
            "post vector" if item["kind"] == "post" else f"chunk {item['index']}")
    return posts, chunks, where


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def machine_info(settings: Settings, worker_threads: int) -> list[tuple[str, str]]:
    import onnxruntime
    import tokenizers

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        version = subprocess.run([redis_server_binary(), "--version"], capture_output=True, text=True,
                                 timeout=10).stdout.split()[2].removeprefix("v=")
    except (OSError, IndexError, subprocess.SubprocessError):
        version = "?"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    raw = str(settings.embed_threads) if "embed_threads" in settings.model_fields_set else ""
    return [
        ("cores", f"{os.cpu_count()} ({usable} usable), {cpu}"),
        ("python / onnxruntime / tokenizers", f"{platform.python_version()} / {onnxruntime.__version__} / "
                                              f"{tokenizers.__version__}"),
        ("redis-server", version),
        ("REPOBUILD_EMBED_THREADS", f"{raw or 'unset'} → {worker_threads} onnxruntime thread(s) per worker "
                                    "process (default: cores / 2)"),
        ("REPOBUILD_EMBED_BATCH", str(settings.embed_batch)),
        ("load average at start", load_average()),
    ]


def table(title: str, rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join([title, "-" * min(len(title), 100)] + [f"  {k:<{width}}  {v}" for k, v in rows])


def report(base: Settings, worker_threads: int, cold: Run, warm: Run, scale: dict[int, Run], floors: list[Floor],
           diff: float, paragraph: str, chunking: list[Chunking], counter: tuple[int, int, str]) -> list[str]:
    out: list[str] = []
    same = next(f for f in floors if f.threads == worker_threads)
    best = min(floors, key=lambda f: f.seconds)
    e = cold.embed

    rows = [(f"{f.threads} thread(s)", f"{f.seconds:7.2f} s   {f.texts / f.seconds:5.1f} texts/s   "
             f"CPU {f.cpu_s:.2f} s   runs " + " ".join(f"{r:.2f}" for r in f.runs)
             + f"   (model load {f.load_s:.2f} s, not counted)")
            for f in floors]
    f0 = floors[0]
    pad = f0.padded / max(1, f0.tokens) - 1
    rows += [(f"  while {f.threads} thread(s) ran", f.cpu.describe()) for f in floors if f.cpu is not None]
    rows += [("tokens", f"{f0.tokens} real, {f0.padded} with padding (+{pad:.0%})"),
             ("same vectors as the pipeline", f"max |Δ| = {diff:.1e} over {f0.texts} texts")]
    out.append(table(f"1. bare embedding floor: the stage's {f0.texts} texts in {cold.plan['batches']} batch(es) "
                     f"of {base.embed_batch}, onnxruntime + tokenizers, best of {len(f0.runs)}", rows))

    ph = cold.phases
    rows = [
        ("stage, started → finished", f"{stage_wall(e):7.2f} s   ({e.summary.get('embedded')} embedded, "
                                      f"{e.summary.get('cached')} cached, {e.summary.get('batches')} batch(es))"),
        ("  plan (inputs, chunking, cache look-ups)", f"{ph['plan']:7.2f} s"),
        ("  batches (until a poll saw them done)", f"{ph['batches']:7.2f} s   batch task run time: "
                                                   + (" + ".join(f"{s:.2f}" for s in cold.batch_task_s) or "?")
                                                   + " s"),
        ("  assemble and hand-off", f"{ph['assemble']:7.2f} s"),
        ("  in the stage task itself", f"{e.elapsed_s:7.2f} s   ({e.continuations} continuations: 0.5 s polls)"),
        (f"stage / floor ({same.threads} thread)", f"{stage_wall(e) / same.seconds:7.2f} ×"),
    ]
    if best is not same:
        rows.append((f"stage / floor ({best.threads} threads)", f"{stage_wall(e) / best.seconds:7.2f} ×"))
    rows.append(("whole job", cold.cpu.describe()))
    out.append(table("2. embed_text stage, cold cache: 1 worker × 2 pool processes, API → Celery → Redis", rows))

    rows = [("job wall time", f"{cold.wall_s:7.2f} s")]
    rows += [(f"  {s.name}", f"{stage_wall(s):7.2f} s") for s in cold.job.stages if s.name != NOTIFY]
    out.append(table("3. process-all, fetch → publish, cold caches (fresh artifacts folder)", rows))

    p, c, where = new_inputs(cold.plan, warm.plan)
    we = warm.embed
    edited = next((i["post"] for i in warm.plan["items"] if i["kind"] == "post"
                   and i["slug"] == Path(EDITED_POST).stem), None)
    post_chunks = sum(1 for i in warm.plan["items"] if i["kind"] == "chunk" and i["post"] == edited)
    rows = [
        ("edit", f"{EDITED_POST}: a sentence appended to “{paragraph}…”"),
        ("job wall time", f"{warm.wall_s:7.2f} s   (cold {cold.wall_s:.2f} s)"),
        ("embed_text stage", f"{stage_wall(we):7.2f} s   (plan {warm.phases['plan']:.2f} s, batches "
                             f"{warm.phases['batches']:.2f} s; cold {stage_wall(e):.2f} s)"),
        ("re-embedded (stage summary)", f"{we.summary.get('embedded')} of {len(warm.plan['items'])} inputs, "
                                        f"{we.summary.get('cached')} from cache"),
        ("texts new since the cold run", f"{p + c} = {p} post vector + {c} chunk(s); the edited post has "
                                         f"{post_chunks} chunk(s)"),
        ("which", "; ".join(f"{slug}: {', '.join(what)}" for slug, what in where.items()) or "none"),
        ("whole job", warm.cpu.describe()),
    ]
    rows += [(f"  {s.name}", f"{stage_wall(s):7.2f} s") for s in warm.job.stages if s.name != NOTIFY]
    out.append(table("4. rebuild after editing one post, same artifact store (warm caches)", rows))

    one, two = scale[1], scale[2]
    rows = [(f"{n} process{'es' if n > 1 else ''}", f"{stage_wall(r.embed):7.2f} s   (plan {r.phases['plan']:.2f} s, "
             f"batches {r.phases['batches']:.2f} s over {r.embed.summary.get('batches')} batch(es), "
             f"Σ batch task run time {sum(r.batch_task_s):.2f} s; job {r.wall_s:.2f} s)")
            for n, r in ((1, one), (2, two))]
    rows.append(("speed-up", f"{stage_wall(one.embed) / stage_wall(two.embed):7.2f} ×"))
    rows += [(f"  job with {n}", r.cpu.describe()) for n, r in ((1, one), (2, two))]
    out.append(table(f"5. embed_text stage, 1 vs 2 worker pool processes ({worker_threads} onnxruntime thread(s) "
                     "each), cold cache each", rows))

    shipped_n, true_n, slug = counter
    rows = [("stage's token counter on the longest post", f"{shipped_n} tokens ({slug}; true count {true_n})")]
    rows += [(c.label, f"{c.seconds:7.2f} s   {c.chunks} chunks, {c.over_limit} over 256 tokens; "
              f"{c.seen}/{c.tokens} chunk tokens reach the model ({c.seen / max(1, c.tokens):.0%})"
              + (f"; {c.calls} token counts" if c.calls else "")) for c in chunking]
    out.append(table("diagnosis: the stage's input planning (chunking) on the same parsed posts", rows))
    return out
