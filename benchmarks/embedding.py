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
import contextlib
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from api.cli.local_services import PrivateRedis, WorkerProcess, redis_server_binary
from pipeline.catalog import job_key
from pipeline.models import JobSpec, JobStatus, SourceSpec, StageState
from pipeline.plans import NOTIFY, job_is_over
from pipeline.settings import Settings
from pipeline.stages.context import LocalContext
from pipeline.stores.artifacts import LocalArtifactStore
from pipeline.stores.jobs import JobStore, JobView
from pipeline.stores.vectors import VectorCache, text_key

ROOT = Path(__file__).resolve().parent.parent
CORPORA = Path(os.environ.get("REPOBUILD_CORPORA") or ROOT.parent / "shared" / "corpora")
GUIDE = CORPORA / "opensource-guide"
EDITED_POST = "getting-paid.md"
EDIT_SENTENCE = " (The benchmark added this sentence to measure an incremental rebuild.)"
JOB_TIMEOUT_S = 3600.0  # only so that a wedged pipeline cannot hang the benchmark for ever
IMAGE_LINK = re.compile(r"/assets/images/[^\s)\"'>]+")
BATCH_LOG = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}): \w+/[^\]]*\] "
                       r"Task repobuild\.batch\[[^\]]+\] succeeded in ([0-9.]+)s", re.MULTILINE)

Vectors = npt.NDArray[np.float32]
HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# ------------------------------------------------------------------------------------------------ CPU use


@dataclass
class Cpu:
    """CPU seconds since boot: the whole machine busy, stolen by the hypervisor, and used by our processes."""

    at: float
    machine: float
    steal: float
    ours: float

    def minus(self, before: Cpu) -> Cpu:
        return Cpu(self.at - before.at, self.machine - before.machine, self.steal - before.steal,
                   self.ours - before.ours)

    def describe(self) -> str:
        others = max(0.0, self.machine - self.ours)
        return (f"CPU during it: ours {self.ours:.1f} s, other processes {others:.1f} s "
                f"({others / max(self.at, 1e-9):.2f} cores on average), steal {self.steal:.1f} s")


def cpu_now(groups: set[int]) -> Cpu:
    """Machine-wide busy and steal time from /proc/stat; ours = this process + the process groups in `groups`
    (the workers with their pool children, redis), from /proc/<pid>/stat. Zeros where /proc is missing."""
    machine = steal = ours = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        machine = (v[0] + v[1] + v[2] + v[5] + v[6]) / HZ  # user nice system irq softirq
        steal = v[7] / HZ
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = stat.read_text()
            f = raw[raw.rindex(")") + 2:].split()  # fields after the command name, from field 3 (state)
            pid, pgid = int(stat.parent.name), int(f[2])
            if pid == me or pgid in groups:
                ours += (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / HZ  # utime stime cutime cstime
    return Cpu(time.time(), machine, steal, ours)


# ------------------------------------------------------------------------------------------------ corpus


def english_corpus(dest: Path) -> tuple[Path, int, int]:
    """The English posts (`_articles/*.md`, not `_articles/<lang>/`), the images they link to, the licence."""
    articles = GUIDE / "_articles"
    if not articles.is_dir():
        raise SystemExit(f"corpus not found: {articles} (set REPOBUILD_CORPORA to the corpora folder)")
    (dest / "_articles").mkdir(parents=True)
    posts, links = 0, set()
    for md in sorted(articles.glob("*.md")):  # top level only: the translations live in subfolders
        shutil.copy2(md, dest / "_articles" / md.name)
        links.update(IMAGE_LINK.findall(md.read_text(encoding="utf-8")))
        posts += 1
    images = 0
    for link in sorted(links):
        src = GUIDE / link.lstrip("/")
        if src.is_file():
            (dest / link.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / link.lstrip("/"))
            images += 1
    if (GUIDE / "LICENSE").is_file():
        shutil.copy2(GUIDE / "LICENSE", dest / "LICENSE")
    return dest, posts, images


def edit_one_post(corpus: Path) -> str:
    """Append a sentence to the middle prose paragraph of one post's body; returns that paragraph's start."""
    path = corpus / "_articles" / EDITED_POST
    text = path.read_text(encoding="utf-8")
    body_at = text.index("\n---\n", 4) + 5  # after the frontmatter
    body = text[body_at:]
    paras = list(re.finditer(r"(?m)^[A-Z][^\n]{80,}$", body))  # prose: not headings, lists, HTML or tables
    target = paras[len(paras) // 2]
    path.write_text(text[:body_at] + body[:target.end()] + EDIT_SENTENCE + body[target.end():], encoding="utf-8")
    return target.group()[:50]


# ------------------------------------------------------------------------------------------------ floor


def model_files(settings: Settings) -> tuple[Path, Path]:
    from pipeline.embedders.text import default_model_files, model_dir_files

    return model_dir_files(settings.text_model_dir) if settings.text_model_dir else default_model_files()


def plain_tokenizer(settings: Settings) -> Any:
    """The model's tokenizer with no truncation and no padding: true token counts."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_files(settings)[1]))
    tok.no_truncation()
    tok.no_padding()
    return tok


@dataclass
class Floor:
    threads: int
    seconds: float  # best of the repeats
    runs: list[float]
    cpu_s: float  # process CPU time of the best run: what the loop costs with no one else on the cores
    load_s: float
    texts: int
    tokens: int
    padded: int
    vectors: Vectors
    cpu: Cpu | None = None


def bare_floor(texts: list[str], settings: Settings, threads: int, repeat: int) -> Floor:
    """A plain onnxruntime + tokenizers loop over `texts`, longest first; vectors come back in input order."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from pipeline.embedders.text import MAX_TOKENS

    t0 = time.perf_counter()
    model, tok_path = model_files(settings)
    tok = Tokenizer.from_file(str(tok_path))
    tok.no_padding()
    tok.no_truncation()
    tok.enable_truncation(max_length=MAX_TOKENS)
    pad_id = tok.token_to_id("[PAD]")
    tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")  # pads to the longest
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
    wants_types = "token_type_ids" in {i.name for i in session.get_inputs()}
    dim = int(session.get_outputs()[0].shape[-1])

    def embed(batch: list[str]) -> tuple[Vectors, int, int]:
        enc = tok.encode_batch(batch)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if wants_types:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = np.asarray(session.run(None, feeds)[0], dtype=np.float32)
        w = mask[..., None].astype(np.float32)
        pooled = (hidden * w).sum(axis=1) / np.clip(w.sum(axis=1), 1e-9, None)
        out = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return out.astype(np.float32), int(mask.sum()), int(mask.size)

    embed(["warm-up"])  # first-run allocations are not the model's speed
    load_s = time.perf_counter() - t0
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # the stage's order: longest first
    size = max(1, settings.embed_batch)
    vectors = np.zeros((len(texts), dim), dtype=np.float32)
    runs: list[tuple[float, float]] = []
    tokens = padded = 0
    for _ in range(max(1, repeat)):
        tokens = padded = 0
        c0 = time.process_time()
        t0 = time.perf_counter()
        for start in range(0, len(order), size):
            idx = order[start:start + size]
            vecs, real, total = embed([texts[i] for i in idx])
            vectors[idx] = vecs
            tokens += real
            padded += total
        runs.append((time.perf_counter() - t0, time.process_time() - c0))
    best = min(runs)
    return Floor(threads, best[0], [r for r, _ in runs], best[1], load_s, len(texts), tokens, padded, vectors)


# ------------------------------------------------------------------------------------------------ harness


@dataclass
class Run:
    label: str
    job: JobView
    wall_s: float  # job created → completed: fetch through publish (notify not included)
    plan: dict[str, Any]
    phases: dict[str, float]
    batch_task_s: list[float]
    cpu: Cpu

    @property
    def embed(self) -> StageState:
        return self.job.stage("embed_text")


def stage_wall(s: StageState) -> float:
    return (s.finished_at or 0.0) - (s.started_at or 0.0)


def embed_phases(store: JobStore, job: JobView) -> dict[str, float]:
    """embed_text's phases from its events: plan (until its log line), batches (until a poll sees all done), rest."""
    stage = job.stage("embed_text")
    start, end = stage.started_at or 0.0, stage.finished_at or 0.0
    planned = batches_done = None
    for _id, ev in store.events(job.spec.job_id, count=100_000):
        if ev.get("stage") != "embed_text":
            continue
        if planned is None and ev.get("type") == "log" and ev.get("message", "").startswith("embed_text:"):
            planned = float(ev["ts"])
        if batches_done is None and ev.get("type") == "progress" and ev.get("done") == ev.get("total"):
            batches_done = float(ev["ts"])
    planned = planned or start
    batches_done = batches_done or planned
    return {"plan": planned - start, "batches": batches_done - planned, "assemble": end - batches_done,
            "planned_at": planned, "end": end}


def batch_tasks_between(log_path: str | None, start: float, end: float) -> list[float]:
    """Run times of the batch tasks a worker logged as finished between `start` and `end` (epoch seconds)."""
    if not log_path or not Path(log_path).exists():
        return []
    out = []
    for m in BATCH_LOG.finditer(Path(log_path).read_text(errors="replace")):
        ts = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
        if start <= ts <= end + 0.5:
            out.append(float(m.group(3)))
    return out


@dataclass
class Harness:
    """A private Redis, worker processes and the API in a thread; `close()` stops every one of them."""

    root: Path
    base: Settings
    redis: PrivateRedis | None = None
    workers: list[WorkerProcess] = field(default_factory=list)
    server: Any = None
    client: httpx.Client | None = None
    store: JobStore | None = None
    started: int = 0

    def groups(self) -> set[int]:
        procs = [w.proc for w in self.workers] + [self.redis.proc if self.redis else None]
        return {p.pid for p in procs if p is not None}  # each was started in a session (group) of its own

    def start(self) -> Harness:
        from werkzeug.serving import make_server

        from api.app import create_app

        self.redis = PrivateRedis()
        self.redis.start()
        self.base = self.base.with_(redis_url=self.redis.url)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.server = make_server("127.0.0.1", 0, create_app(self.base), threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.server.server_port}", timeout=30)
        self.store = JobStore.from_url(self.redis.url, prefix=self.base.key_prefix)
        return self

    def settings(self, artifacts: Path) -> Settings:
        return self.base.with_(artifacts=str(artifacts), output=str(self.root / "out"), temp_dir=str(self.root))

    def start_worker(self, settings: Settings, concurrency: int) -> WorkerProcess:
        from worker.factory import create_celery

        n = self.started
        self.started += 1
        w = WorkerProcess(settings.to_env(), concurrency=concurrency, log_path=str(self.root / f"worker-{n}.log"),
                          name=f"bench{n}-{os.getpid()}-{time.time_ns()}@%h")
        self.workers.append(w)
        w.start()
        app = create_celery(settings)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not w.alive():
                raise RuntimeError(f"worker exited: {Path(w.log_path or '').read_text()[-3000:]}")
            replies = app.control.ping(timeout=0.5)
            if any(w.name.split("@")[0] in name for reply in replies for name in reply):
                return w
        raise RuntimeError("worker did not answer a ping within 120 s")

    def stop_workers(self) -> None:
        while self.workers:
            self.workers.pop().stop(timeout=10)

    def submit(self, label: str, source: Path, settings: Settings) -> Run:
        assert self.client is not None and self.store is not None
        job_id = f"{label}-{time.time_ns()}"
        cpu0 = cpu_now(self.groups())
        resp = self.client.post("/jobs", json={"task": "process-all", "source": str(source), "job_id": job_id})
        if resp.status_code != 202:
            raise RuntimeError(f"POST /jobs answered {resp.status_code}: {resp.text}")
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while True:
            job = self.store.get(job_id)
            if job_is_over(job):
                break
            if not all(w.alive() for w in self.workers):
                raise RuntimeError(f"a worker process exited during {label} (run with --keep for its log)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} did not finish within {JOB_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
        cpu = cpu_now(self.groups()).minus(cpu0)
        if job.status != JobStatus.COMPLETED:
            raise RuntimeError(f"job {job_id} {job.status.value}: {job.error}")
        plan = LocalArtifactStore(settings.artifacts).get_json(job_key(job_id, "embed_text", "plan.json"))
        phases = embed_phases(self.store, job)
        batch_s = [s for w in self.workers for s in batch_tasks_between(w.log_path, phases["planned_at"],
                                                                        phases["end"])]
        return Run(label, job, (job.finished_at or 0.0) - job.spec.created_at, plan, phases, batch_s, cpu)

    def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):
                w.stop(timeout=10)
        self.workers.clear()
        if self.client is not None:
            self.client.close()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.r.close()
        if self.redis is not None:
            self.redis.stop()


def batch_texts(settings: Settings, run: Run) -> list[str]:
    """The texts the stage embedded, from its own batch files, in batch order."""
    artifacts = LocalArtifactStore(settings.artifacts)
    texts: list[str] = []
    for n in range(int(run.plan["batches"])):
        texts += artifacts.get_json(job_key(run.job.spec.job_id, "embed_text", f"batches/{n:05d}.json"))["texts"]
    return texts


def max_diff_to_cache(settings: Settings, run: Run, texts: list[str], floor: Floor) -> float:
    """Largest |difference| between the floor's vectors and the ones the pipeline cached for the same texts."""
    if not texts:
        return 0.0
    cache = VectorCache(LocalArtifactStore(settings.artifacts), str(run.plan["model"]), int(run.plan["dim"]))
    return float(np.abs(np.stack([cache.get(text_key(t)) for t in texts]) - floor.vectors).max())


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


# ------------------------------------------------------------------------------------------------ diagnosis


@dataclass
class Chunking:
    label: str
    seconds: float
    chunks: int
    over_limit: int  # chunks longer than the model's 256 tokens (true count)
    tokens: int  # true tokens in all chunk texts
    seen: int  # of those, what the model sees (the first 256 of each chunk)
    calls: int


def diagnose_chunking(settings: Settings, run: Run) -> tuple[list[Chunking], tuple[int, int, str]]:
    """The stage's input planning on the cold job's parsed posts: as shipped (embed_text._inputs) and with
    true token counts; also what the stage's token counter says about the longest post."""
    from pipeline.embedders.chunks import chunk_text
    from pipeline.embedders.select import token_counter
    from pipeline.stages import embed_text

    artifacts = LocalArtifactStore(settings.artifacts)
    job_id = run.job.spec.job_id
    posts: list[dict[str, Any]] = artifacts.get_json(job_key(job_id, "parse", "result/posts.json"))
    tok = plain_tokenizer(settings)

    def true_count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False).ids)

    shipped = token_counter(settings)
    longest = max(posts, key=lambda p: len(str(p.get("plain") or "")))
    plain = str(longest.get("plain") or "")
    counter = (shipped(plain), true_count(plain), str(longest.get("slug")))

    def summarise(label: str, seconds: float, texts: list[str], calls: int) -> Chunking:
        counts = [true_count(t) for t in texts]
        limit = embed_text.CHUNK_TOKENS
        return Chunking(label, seconds, len(texts), sum(c > limit for c in counts), sum(counts),
                        sum(min(c, limit) for c in counts), calls)

    calls = [0]

    def counted(fn: Callable[[str], int]) -> Callable[[str], int]:
        def wrapped(text: str) -> int:
            calls[0] += 1
            return fn(text)
        return wrapped

    # as shipped: the stage's own _inputs, on a LocalContext reading the cold job's parse output
    spec = JobSpec(job_id=job_id, task="process-all", source=SourceSpec(path=str(ROOT)))
    ctx = LocalContext(job_id=job_id, stage="embed_text", spec=spec, settings=settings, artifacts=artifacts)
    t0 = time.perf_counter()
    items, texts = embed_text._inputs(ctx)
    as_shipped = time.perf_counter() - t0
    chunk_texts = [t for i, t in zip(items, texts, strict=True) if i["kind"] == "chunk"]
    out = [summarise("as shipped (embed_text._inputs)", as_shipped, chunk_texts, 0)]
    # the same chunker with true token counts, for comparison
    wrapped = counted(true_count)
    t0 = time.perf_counter()
    chunks = [c.text for p in sorted(posts, key=lambda p: str(p["hash"]))
              for c in chunk_text(str(p.get("plain") or ""), wrapped, embed_text.CHUNK_TOKENS,
                                  headings=[str(t.get("title", "")) for t in p.get("toc") or []])]
    out.append(summarise("same chunk_text, true token counts", time.perf_counter() - t0, chunks, calls[0]))
    return out, counter


# ------------------------------------------------------------------------------------------------ report


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
    raw = os.environ.get("REPOBUILD_EMBED_THREADS", "")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.embedding",
                                     description="Embedding benchmark (see the module docstring).")
    parser.add_argument("--repeat", type=int, default=3, help="floor repetitions, best kept (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (worker logs, artifacts)")
    args = parser.parse_args(argv)

    from pipeline.embedders.select import _threads

    base = Settings.from_env().with_(redis_url=None)
    worker_threads = _threads(base)
    root = Path(tempfile.mkdtemp(prefix="repobuild-bench-"))
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
