"""Embedding benchmark: how far the embed_text stage is from the bare model, and what a build costs.

    python -m benchmarks.embedding [--repeat N] [--keep]        (or `make bench`)

Corpus: the English posts of `opensource-guide`, i.e. the top-level `_articles/*.md` (the translations
in `_articles/<lang>/*.md` are left out), plus the images they link to (`/assets/images/...`) and the
licence, copied into a temporary folder. The corpora folder is found as the tests find it:
`$REPOBUILD_CORPORA`, else `<project>/../shared/corpora`.

Everything runs for real, as `repobuild run` does: a private redis-server on a free port, real Celery
worker processes (`celery -A worker.app worker`), the HTTP API in a thread; jobs go in with
`POST /jobs` and are timed from the job state in Redis. Every process is stopped and every temporary
folder removed on exit, Ctrl-C included. It prints one report and asserts nothing about time.

1. floor: the exact texts the embed_text stage embedded (read back from the stage's own
   `batches/NNNNN.json`), through a plain onnxruntime + tokenizers loop: same model file, truncation
   at 256, padding to the longest, batches of REPOBUILD_EMBED_BATCH sorted by length; best of N;
2. the embed_text stage on a cold cache (stage started_at → finished_at), split into its phases, and
   stage / floor;
3. process-all, fetch → publish, on cold caches (a fresh artifacts folder): job wall time per stage;
4. a rebuild after editing one post, same artifact store (warm caches): wall time, what was re-embedded;
5. the embed_text stage with 1 and 2 worker pool processes (`--concurrency`), cold cache each;
then a diagnosis of the stage's input planning (chunking), where the time beyond the floor goes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from benchmarks.chunking import diagnose_chunking
from benchmarks.cpu_use import cpu_now
from benchmarks.floor import bare_floor, batch_texts, max_diff_to_cache
from benchmarks.guide_corpus import EDITED_POST, GUIDE, edit_one_post, english_corpus
from benchmarks.harness import Harness, Run
from benchmarks.report import load_average, machine_info, report, table
from pipeline.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.embedding",
                                     description="Embedding benchmark (see the module docstring).")
    parser.add_argument("--repeat", type=int, default=3, help="floor repetitions, best kept (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (worker logs, artifacts)")
    args = parser.parse_args(argv)

    from pipeline.embedders.select import _threads

    root = Path(tempfile.mkdtemp(prefix="repobuild-bench-"))
    # the corpus is copied under root: the operator's allowlist for local sources, as a deployment would set it
    base = Settings.from_env().with_(redis_url=None, local_source_roots=(str(root),))
    worker_threads = _threads(base)
    harness = Harness(root, base)

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (`cmd &`)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    def step(text: str) -> None:
        print(f"  … {text}", file=sys.stderr, flush=True)

    try:
        print(table("machine", machine_info(base, worker_threads)), flush=True)
        corpus, n_posts, n_images = english_corpus(root / "corpus")
        print(f"\ncorpus: {GUIDE}: {n_posts} English posts (_articles/*.md; the _articles/<lang>/ translations "
              f"left out), {n_images} images they link to\n", flush=True)
        harness.start()

        # 2 + 3: process-all on cold caches with the worker `repobuild run` starts (2 pool processes)
        cold_settings = harness.settings(root / "artifacts-cold")
        step("process-all, cold caches, 1 worker × 2 pool processes")
        harness.start_worker(cold_settings, concurrency=2)
        cold = harness.submit("cold", corpus, cold_settings)

        # 4: one post edited, same artifact store, same worker
        edited = root / "corpus-edited"
        shutil.copytree(corpus, edited)
        paragraph = edit_one_post(edited)
        step(f"rebuild after editing {EDITED_POST}")
        warm = harness.submit("rebuild", edited, cold_settings)
        harness.stop_workers()

        # 1: the floor on the texts the cold stage embedded, nothing else running
        texts = batch_texts(cold_settings, cold)
        floors = []
        for threads in sorted({worker_threads, os.cpu_count() or 1}):
            step(f"bare onnxruntime floor: {len(texts)} texts, {threads} thread(s), best of {args.repeat}")
            cpu0 = cpu_now(set())
            floors.append(bare_floor(texts, base, threads, args.repeat))
            floors[-1].cpu = cpu_now(set()).minus(cpu0)
        diff = max_diff_to_cache(cold_settings, cold, texts, floors[0])

        # 5: 1 vs 2 pool processes, a fresh artifacts folder (cold cache) each
        scale: dict[int, Run] = {}
        for conc in (1, 2):
            s = harness.settings(root / f"artifacts-c{conc}")
            step(f"process-all with {conc} worker pool process(es), cold cache")
            harness.start_worker(s, concurrency=conc)
            scale[conc] = harness.submit(f"c{conc}", corpus, s)
            harness.stop_workers()

        step("diagnosis: the stage's chunking, as shipped and with true token counts")
        chunking, counter = diagnose_chunking(cold_settings, cold)

        for part in report(base, worker_threads, cold, warm, scale, floors, diff, paragraph, chunking, counter):
            print(part + "\n", flush=True)
        print(f"load average at end: {load_average()} (other work on the machine skews every number above)")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the workers and redis", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        harness.close()
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    sys.exit(main())
