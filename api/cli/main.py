"""The `repobuild` command: run a job on the embedded default, or talk to a deployed service."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from api.cli import probe
from api.cli.celery_exec import exec_celery
from api.cli.exits import Stopped, StopSignals, say, stop_all
from api.schemas import source_spec
from pipeline.http.address_policy import url_host
from pipeline.http.credentials import split_spec
from pipeline.models import JobSpec, JobStatus, SourceSpec
from pipeline.settings import Settings
from pipeline.sources.local_roots import source_path_of
from worker.factory import create_celery
from worker.repobuild_app import RepobuildCelery


def _source_spec(source: str, branch: str | None, commit: str | None, subfolder: str | None) -> SourceSpec | None:
    if "://" not in source and not source.startswith("git@"):
        source = str(Path(source).resolve())
    return source_spec(source, branch, commit, None, subfolder)


_BRIEF_TASKS = ("generate-project-from-brief", "generate-and-deploy-project", "generate-project-local")


def _made_locally(args: argparse.Namespace) -> tuple[str, dict[str, object]] | None:
    """(task, options) when `run` is given a file to make a repository from rather than a repository: a WordPress
    export (`.xml`) or, with a brief task, a brief; None otherwise. Built to the local folder, no bucket."""
    path = Path(args.source)
    if "://" in args.source or not path.is_file():
        return None
    if args.task in _BRIEF_TASKS:
        return "generate-project-local", {"brief": path.read_text(encoding="utf-8")}
    if path.suffix.lower() == ".xml" and args.task in ("process-all", "wp-import", "wp-import-local"):
        return "wp-import-local", {"xmlFilePath": str(path.resolve())}
    return None


def _trusting(settings: Settings, source: SourceSpec | None) -> Settings:
    """The settings of `run`'s own worker: the folder the user named is one of its local source roots.

    It is the user's own machine and the worker serves only this run, so whatever path they name is theirs to
    read; this is the one way a path outside REPOBUILD_LOCAL_SOURCE_ROOTS gets in, and no request can take it.
    """
    where = source_path_of(source.path or source.url or "") if source is not None else None
    if not where:
        return settings
    root = Path(where).resolve()
    while "," in str(root):  # the roots are a comma-separated list: the nearest folder above that has no comma
        root = root.parent
    return settings.with_(local_source_roots=(*settings.local_source_roots, str(root)))


def _run_options(args: argparse.Namespace) -> dict[str, object]:
    options: dict[str, object] = {}
    if args.subfolder:
        options["repositoryFolder"] = args.subfolder
    if args.include_drafts:
        options["includeDrafts"] = True
    return options


def cmd_run(args: argparse.Namespace) -> int:
    with StopSignals() as signals:
        try:
            return _run(args, signals)
        except Stopped as stop:
            say(f"repobuild: stopped by {signal.Signals(stop.signum).name}; the job was abandoned")
            return stop.exit_code


def _run(args: argparse.Namespace, signals: StopSignals) -> int:
    """The job on its private Redis and worker; whatever ends it (done, failed, an exception, a signal), the
    `finally` stops both before it returns."""
    from api.cli.local_services import PrivateRedis, WorkerProcess  # noqa: PLC0415
    from api.cli.progress import watch_job  # noqa: PLC0415
    from worker.submission import submit  # noqa: PLC0415

    settings = Settings.from_env()
    out = str(Path(args.out or settings.output).resolve())
    private: PrivateRedis | None = None
    worker: WorkerProcess | None = None
    finished = False
    workdir = tempfile.mkdtemp(prefix="repobuild-run-")
    try:
        if not settings.redis_url:
            with signals.held():  # started and recorded, or neither
                private = PrivateRedis()
                private.start()
            settings = settings.with_(redis_url=private.url)
        if "artifacts" not in settings.model_fields_set:  # REPOBUILD_ARTIFACTS unset: this run's own folder
            settings = settings.with_(artifacts=str(Path(workdir) / "artifacts"))
        made = _made_locally(args)
        task = made[0] if made else args.task
        source = None if made else _source_spec(args.source, args.branch, args.commit, args.subfolder)
        if not args.no_worker:  # workers of a service keep their operator's roots
            settings = _trusting(settings, source or source_spec(str(Path(args.source).resolve().parent),
                                                                 None, None, None, None))
        env = {"REPOBUILD_REDIS_URL": settings.redis_url or "", "REPOBUILD_ARTIFACTS": settings.artifacts,
               "REPOBUILD_OUTPUT": out, "REPOBUILD_LOCAL_SOURCE_ROOTS": ",".join(settings.local_source_roots),
               # the run's own worker serves metrics only when asked: the default port may be a service's
               "REPOBUILD_METRICS_PORT": str(settings.metrics_port if "metrics_port" in settings.model_fields_set
                                             else 0)}
        named = url_host(args.source) if "://" in args.source or args.source.startswith("git@") else None
        if named:  # the user of their own private worker may clone from the host they typed, private or not
            env["REPOBUILD_ALLOW_HOSTS"] = ",".join((*settings.allow_hosts, named))
        if not args.no_worker:
            with signals.held():
                worker = WorkerProcess(env, concurrency=args.concurrency,
                                       log_path=str(Path(workdir) / "worker.log"))
                worker.start()
        app = create_celery(settings)
        options = {**_run_options(args), **(made[1] if made else {})}
        spec, secrets = split_spec(JobSpec(job_id=args.job_id or uuid.uuid4().hex[:12], task=task,
                                           project_id=args.project_id, source=source, options=options, output=out),
                                   args.token)
        submit(app, spec, secrets)
        job = watch_job(app.store, spec.job_id, worker=worker, line_every_s=args.progress_every)
        finished = True
    finally:
        signals.ignore()  # the cleanup runs to its end, whatever else arrives
        steps: list[Callable[[], None]] = []
        if worker is not None:
            # after the job, a warm stop (nothing is running); a job abandoned half-way is not waited for
            steps.append(worker.stop if finished else worker.halt)
        if private is not None:
            steps.append(private.stop)
        if not settings.keep_tmp_files:
            steps.append(lambda: shutil.rmtree(workdir, ignore_errors=True))
        for problem in stop_all(steps):
            say(f"repobuild: while stopping: {type(problem).__name__}: {problem}")
    if job.status == JobStatus.COMPLETED:
        result = job.result or {}
        counts = result.get("counts", {})
        lines = [f"bundle: {result.get('distFolder', out)}", f"latest: {Path(out) / 'latest'}",
                 "posts: {posts}  media: {medias}  issues: {issues}  drafts left out: {drafts}".format(
                     **{k: counts.get(k, 0) for k in ("posts", "medias", "issues", "drafts")})]
        if result.get("commit"):
            lines.append(f"commit: {result['commit']}")
        tasks = result.get("task_timings", {})
        lines.append("stage times (wall, task time): " + ", ".join(f"{k} {v:.2f}s" + (
            f" ({tasks[k]:.2f}s)" if k in tasks else "") for k, v in result.get("timings", {}).items()))
        say("\n".join(lines), sys.stdout)
        return 0
    reason = (job.error or {}).get("message") or job.status.value
    stage = (job.error or {}).get("stage")
    say(f"repobuild: job {job.status.value}" + (f" in {stage}" if stage else "") + f": {reason}")
    return 1


def _app() -> RepobuildCelery:
    settings = Settings.from_env()
    if not settings.redis_url:
        raise SystemExit("repobuild: set REPOBUILD_REDIS_URL to the service's Redis")
    return create_celery(settings)


def cmd_submit(args: argparse.Namespace) -> int:
    from worker.submission import submit  # noqa: PLC0415

    app = _app()
    source = _source_spec(args.source, args.branch, args.commit, None)
    spec, secrets = split_spec(JobSpec(job_id=args.job_id or uuid.uuid4().hex, task=args.task,
                                       project_id=args.project_id, source=source, callback_url=args.callback_url),
                               args.token)
    job, created = submit(app, spec, secrets)
    print(json.dumps({"job_id": job.spec.job_id, "status": job.status.value, "created": created}))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from api.responses import job_view  # noqa: PLC0415

    store = _app().store
    try:
        job = store.get(args.job_id)
    except KeyError:
        print(f"repobuild: job {args.job_id} not found", file=sys.stderr)
        return 1
    print(json.dumps(job_view(job, store.issues(args.job_id)[:50], store.issue_count(args.job_id)), indent=2))
    return 0


def cmd_transition(args: argparse.Namespace) -> int:
    from worker import submission  # noqa: PLC0415

    op = submission.retry if args.command == "retry" else submission.cancel
    try:
        job = op(_app(), args.job_id)
    except KeyError:
        print(f"repobuild: job {args.job_id} not found", file=sys.stderr)
        return 1
    except submission.Conflict as exc:
        print(f"repobuild: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"job_id": args.job_id, "status": job.status.value}))
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from worker.reconciler import reconcile_once  # noqa: PLC0415

    app = _app()
    actions = reconcile_once(app, app.redis_client())
    print(json.dumps([{"job_id": j, "stage": s} for j, s in actions]))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from pipeline.targets import projects  # noqa: PLC0415

    settings = Settings.from_env()
    pointer = projects.rollback(settings, args.project_id, args.rev)
    print(json.dumps(pointer, indent=2))
    return 0


def cmd_create_bucket(args: argparse.Namespace) -> int:
    """The buckets the settings name (publishing, and an s3:// artifact store), created when missing."""
    from pipeline.errors import PipelineError  # noqa: PLC0415
    from pipeline.targets.s3_client import ensure_bucket, parse_s3_url, s3_client  # noqa: PLC0415

    settings = Settings.from_env()
    buckets = list(args.bucket) or [b for b in (
        settings.s3_bucket, parse_s3_url(settings.artifacts)[0] if settings.artifacts.startswith("s3://") else None)
        if b]
    if not buckets:
        print("repobuild: no bucket named: set REPOBUILD_S3_BUCKET (or REPOBUILD_ARTIFACTS=s3://...)",
              file=sys.stderr)
        return 1
    client = s3_client(settings)
    for bucket in dict.fromkeys(buckets):
        try:
            created = ensure_bucket(client, bucket)
        except PipelineError as exc:
            print(f"repobuild: bucket {bucket}: {exc}", file=sys.stderr)
            return 1
        print(json.dumps({"bucket": bucket, "created": created}))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from pipeline.bundle_db.search import search  # noqa: PLC0415
    from pipeline.errors import PermanentError  # noqa: PLC0415

    try:
        results = search(Path(args.bundle), args.query, args.k, args.images, Settings.from_env())
    except PermanentError as exc:
        print(f"repobuild: {exc}", file=sys.stderr)
        return 1
    if results.notice:
        print(f"repobuild: {results.notice}", file=sys.stderr)
    for n, hit in enumerate(results.hits, start=1):
        print(f"{n:2d}. {hit.title}  [{hit.slug}]  score {hit.score:.4f}")
        print(f"    {hit.snippet}")
    if not results.hits:
        print("no results", file=sys.stderr)
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from werkzeug.serving import run_simple  # noqa: PLC0415

    from api.app import create_app  # noqa: PLC0415

    settings = Settings.from_env()
    run_simple(args.host, args.port or settings.port, create_app(settings), threaded=True)
    return 0


def _job_options(sp: argparse.ArgumentParser, ids: tuple[str, str], token_help: str | None = None) -> None:
    """The options `run` and `submit` share; `ids` keeps the order in which each command's help lists them."""
    sp.add_argument("--task", default="process-all")
    for option in ids:
        sp.add_argument(option)
    sp.add_argument("--branch")
    sp.add_argument("--commit")
    sp.add_argument("--token", help=token_help)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="repobuild", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a job on a private Redis and worker, bundle to a folder")
    run.add_argument("source", help="a folder, a git repository path, a git URL, a WordPress export (.xml), or "
                                    "a brief (a text file, with --task generate-project-from-brief)")
    run.add_argument("--out", help="bundle folder (default: $REPOBUILD_OUTPUT or ./repobuild-output)")
    _job_options(run, ids=("--project-id", "--job-id"), token_help="git token for private repositories")
    run.add_argument("--subfolder", help="only this folder of the repository")
    run.add_argument("--include-drafts", action="store_true",
                     help="publish drafts too (draft: true, published: false, _drafts/)")
    run.add_argument("--concurrency", type=int, default=2)
    run.add_argument("--progress-every", type=float, default=5.0, metavar="SECONDS",
                     help="without a terminal: a progress line (counts, rate, time left) this often")
    run.add_argument("--no-worker", action="store_true", help="use workers already running on REPOBUILD_REDIS_URL")
    run.set_defaults(func=cmd_run)

    submit = sub.add_parser("submit", help="enqueue a job on REPOBUILD_REDIS_URL")
    submit.add_argument("source")
    _job_options(submit, ids=("--job-id", "--project-id"))
    submit.add_argument("--callback-url")
    submit.set_defaults(func=cmd_submit)

    for name, helptext in (("status", "show a job"), ("retry", "resume a failed job"), ("cancel", "cancel a job")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("job_id")
        sp.set_defaults(func=cmd_status if name == "status" else cmd_transition)

    search = sub.add_parser("search", help="hybrid search (bm25 + vectors) over a bundle's content.sqlite")
    search.add_argument("bundle", help="a bundle folder or a content.sqlite file")
    search.add_argument("query")
    search.add_argument("--k", type=int, default=10)
    search.add_argument("--images", action="store_true", help="search images instead of posts")
    search.set_defaults(func=cmd_search)

    rb = sub.add_parser("rollback", help="point a project's latest.json in the bucket back to an earlier revision")
    rb.add_argument("project_id")
    rb.add_argument("rev", help="the revision (job id) to make live again")
    rb.set_defaults(func=cmd_rollback)

    cb = sub.add_parser("create-bucket", help="create the bucket(s) the settings name, if missing (deploy step)")
    cb.add_argument("bucket", nargs="*", help="default: REPOBUILD_S3_BUCKET and the bucket of REPOBUILD_ARTIFACTS")
    cb.set_defaults(func=cmd_create_bucket)

    rec = sub.add_parser("reconcile", help="re-drive stuck jobs once")
    rec.set_defaults(func=cmd_reconcile)

    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int)
    api.set_defaults(func=cmd_api)

    probe.add_parser(sub)

    sub.add_parser("worker", help="start a Celery worker (arguments pass through)", add_help=False)
    sub.add_parser("flower", help="start Flower on the broker (arguments pass through; FLOWER_BASIC_AUTH=user:pass)",
                   add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("worker", "flower"):
        return exec_celery(argv[0], argv[1:])
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
