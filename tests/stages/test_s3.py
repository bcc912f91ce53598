"""S3 publishing and the S3 artifact store, against a real SeaweedFS server (tests/fakes/seaweed.py)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from api.cli.local_services import free_port
from pipeline.errors import JobCancelled, PermanentError, TransientError
from pipeline.settings import Settings
from pipeline.stores.artifacts import ArtifactStore, LocalArtifactStore
from pipeline.stores.artifacts_s3 import TREES, S3ArtifactStore, artifact_store
from pipeline.stores.json_lines import read_lines, write_lines
from pipeline.targets.s3 import S3Publisher, content_type
from pipeline.targets.s3_client import parse_s3_url, read_json, s3_client
from pipeline.targets.s3_pointer import force_pointer, move_pointer
from tests.fakes.seaweed import S3Server


@pytest.fixture
def s3(s3_server: S3Server, tmp_path: Path) -> Settings:
    return Settings(temp_dir=str(tmp_path), s3_endpoint_url=s3_server.endpoint, s3_region="us-east-1",
                    s3_access_key_id=s3_server.access_key, s3_secret_access_key=s3_server.secret_key,
                    s3_bucket=s3_server.bucket)


@pytest.fixture
def prefix() -> str:
    """Every test writes under its own prefix of the session's one bucket."""
    return f"t-{uuid.uuid4().hex[:12]}/"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_files(root: Path, files: dict[str, bytes]) -> dict[str, Path]:
    out = {}
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out[rel] = path
    return out


BUNDLE = {
    "posts.json": b'[{"slug":"hello"}]',
    "_medias/abc-lg.webp": b"RIFF\x00\x00\x00\x00WEBPVP8 fake",
    "content.sqlite": b"SQLite format 3\x00" + bytes(100),
    "notes/hello.md": "# Héllo\n".encode(),
    "logo.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>",
    "data.bin": b"\x00\x01",
}
TYPES = {
    "posts.json": "application/json",
    "_medias/abc-lg.webp": "image/webp",
    "content.sqlite": "application/octet-stream",
    "notes/hello.md": "text/markdown; charset=utf-8",
    "logo.svg": "image/svg+xml",
    "data.bin": "application/octet-stream",
}


def test_upload_metadata_content_types_and_skips(s3: Settings, prefix: str, tmp_path: Path) -> None:
    paths = write_files(tmp_path / "dist", BUNDLE)
    pub = S3Publisher.from_settings(s3)
    base = f"{prefix}projects/p1/job-1/"
    files = {base + rel: path for rel, path in paths.items()}
    progress: list[tuple[int, int]] = []
    report = pub.upload(files, project_id="p1", org_id="o1", job_id="job-1",
                        on_progress=lambda done, total: progress.append((done, total)))
    assert report.uploaded == sorted(files) and report.skipped == [] and report.failed == []
    assert report.counts() == {"totalFiles": 6, "successfulUploads": 6, "skippedUploads": 0, "failedUploads": 0}
    assert progress == [(i, 6) for i in range(1, 7)]
    for rel, data in BUNDLE.items():
        obj = pub.client.get_object(Bucket=pub.bucket, Key=base + rel)
        assert obj["Body"].read() == data
        assert obj["ContentType"] == TYPES[rel], rel
        assert obj["Metadata"] == {"projectid": "p1", "orgid": "o1", "jobid": "job-1", "contenthash": sha(data)}

    again = pub.upload(files, project_id="p1", org_id="o1", job_id="job-2")
    assert again.uploaded == [] and again.skipped == sorted(files) and again.failed == []
    assert again.hashes == {base + rel: sha(data) for rel, data in BUNDLE.items()}

    paths["posts.json"].write_bytes(b'[{"slug":"hello"},{"slug":"new"}]')
    third = pub.upload(files, project_id="p1", org_id="o1", job_id="job-3")
    assert third.uploaded == [base + "posts.json"] and len(third.skipped) == 5
    head = pub.client.head_object(Bucket=pub.bucket, Key=base + "posts.json")
    assert head["Metadata"]["jobid"] == "job-3"
    assert head["Metadata"]["contenthash"] == sha(paths["posts.json"].read_bytes())
    assert pub.get_json(base + "posts.json") == [{"slug": "hello"}, {"slug": "new"}]
    assert pub.get_json(base + "nothing.json") is None

    etags = pub.list_hashes(base)
    assert set(etags) == set(files)
    assert etags[base + "data.bin"] == hashlib.md5(b"\x00\x01").hexdigest()
    by_meta = pub.list_hashes(base, read_metadata=True)
    assert by_meta[base + "notes/hello.md"] == sha(BUNDLE["notes/hello.md"])


def test_keys_outside_the_listed_prefixes_are_checked_one_by_one(s3: Settings, prefix: str, tmp_path: Path) -> None:
    paths = write_files(tmp_path, {"a.json": b"{}", "b.webp": b"img"})
    pub = S3Publisher.from_settings(s3)
    files = {f"{prefix}rev/a.json": paths["a.json"], f"{prefix}_shared/medias/b.webp": paths["b.webp"]}
    assert len(pub.upload(files, list_prefixes=[f"{prefix}rev/"]).uploaded) == 2
    # the shared key was not listed, so a HEAD settles it
    again = pub.upload(files, list_prefixes=[f"{prefix}rev/"])
    assert again.skipped == sorted(files)


def test_missing_local_file_is_reported_not_raised(s3: Settings, prefix: str, tmp_path: Path) -> None:
    paths = write_files(tmp_path, {"ok.json": b"{}"})
    pub = S3Publisher.from_settings(s3)
    report = pub.upload({f"{prefix}ok.json": paths["ok.json"], f"{prefix}gone.json": tmp_path / "gone.json"})
    assert report.uploaded == [f"{prefix}ok.json"]
    [failed] = report.failed
    assert failed.key == f"{prefix}gone.json" and not failed.transient and "gone.json" in failed.error
    assert report.counts()["failedUploads"] == 1


def test_unreachable_server_is_retried_then_reported_as_transient(s3: Settings, prefix: str, tmp_path: Path) -> None:
    dead = s3.with_(s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    pub = S3Publisher(s3_client(dead, max_attempts=1), "bucket", attempts=3, backoff_s=0.01)
    paths = write_files(tmp_path, {"a.json": b"{}"})
    report = pub.upload({"a.json": paths["a.json"]}, existing={})
    [failed] = report.failed
    assert failed.transient and failed.attempts == 3
    with pytest.raises(TransientError):
        pub.list_hashes("x/")


def test_listing_and_skipping_past_1000_keys(s3: Settings, prefix: str, tmp_path: Path) -> None:
    n = 1005
    root = tmp_path / "many"
    root.mkdir()
    files = {}
    for i in range(n):
        path = root / f"{i:05d}.json"
        path.write_bytes(str(i).encode())
        files[f"{prefix}many/{i:05d}.json"] = path
    pub = S3Publisher.from_settings(s3.with_(s3_max_concurrency=16))
    started = time.monotonic()
    first = pub.upload(files)
    assert len(first.uploaded) == n and not first.failed
    assert len(pub.list_hashes(f"{prefix}many/")) == n
    second = pub.upload(files)
    # with only the first page of 1000 keys, 5 would be uploaded again
    assert second.uploaded == [] and len(second.skipped) == n
    assert time.monotonic() - started < 30


def test_multipart_above_the_threshold(s3: Settings, prefix: str, tmp_path: Path) -> None:
    data = bytearray(os.urandom(6 * 1024 * 1024 + 123))
    path = tmp_path / "content.sqlite"
    path.write_bytes(data)
    pub = S3Publisher.from_settings(s3.with_(s3_multipart_threshold_mb=5))
    key = f"{prefix}big/content.sqlite"
    assert pub.upload({key: path}, job_id="j").uploaded == [key]
    head = pub.client.head_object(Bucket=pub.bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-2")  # two parts of 5 MiB and the rest
    assert head["ContentLength"] == len(data) and head["ContentType"] == "application/octet-stream"
    assert head["Metadata"]["contenthash"] == sha(bytes(data))
    assert pub.client.get_object(Bucket=pub.bucket, Key=key)["Body"].read() == data
    # a multipart ETag is no MD5: the skip is decided by the contenthash read with HEAD
    assert pub.upload({key: path}).skipped == [key]
    data[-1] ^= 0xFF
    path.write_bytes(data)
    assert pub.upload({key: path}).uploaded == [key]
    assert pub.client.head_object(Bucket=pub.bucket, Key=key)["Metadata"]["contenthash"] == sha(bytes(data))


@pytest.mark.parametrize("change", [{"s3_secret_access_key": "wrong-secret"}, {"s3_access_key_id": "NOSUCHKEY"}])
def test_wrong_credentials_are_a_clear_permanent_error(s3: Settings, prefix: str, tmp_path: Path,
                                                       change: dict[str, str]) -> None:
    bad = s3.with_(**change)
    paths = write_files(tmp_path, {"a.json": b"{}"})
    with pytest.raises(PermanentError, match="credentials refused"):
        S3Publisher.from_settings(bad).upload({f"{prefix}a.json": paths["a.json"]})
    store = S3ArtifactStore.from_settings(bad.with_(artifacts=f"s3://{s3.s3_bucket}/{prefix}art"))
    with pytest.raises(PermanentError, match="credentials refused"):
        store.get_bytes("x")


def test_pointer_moves_only_forward(s3: Settings, prefix: str) -> None:
    client, bucket, key = s3_client(s3), str(s3.s3_bucket), f"{prefix}projects/p/latest.json"

    def pointer(seq: int, job: str = "") -> dict[str, Any]:
        return {"rev": job or f"job-{seq}", "seq": seq, "jobId": job or f"job-{seq}",
                "publishedAt": "2025-01-01T00:00:00.000Z"}

    assert move_pointer(client, bucket, key, pointer(2)) is True
    assert move_pointer(client, bucket, key, pointer(1)) is False
    assert read_json(client, bucket, key)[0] == pointer(2)
    assert move_pointer(client, bucket, key, pointer(2)) is True  # the same publish again
    assert move_pointer(client, bucket, key, pointer(2, "other-job")) is False
    assert move_pointer(client, bucket, key, pointer(3)) is True
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ContentType"] == "application/json" and head["CacheControl"] == "no-cache"
    force_pointer(client, bucket, key, pointer(1))
    assert read_json(client, bucket, key)[0]["seq"] == 1
    with pytest.raises(PermanentError):
        move_pointer(client, bucket, key, {"seq": "7"})


def test_pointer_race_keeps_the_highest(s3: Settings, prefix: str) -> None:
    client, bucket = s3_client(s3), str(s3.s3_bucket)
    for round_ in range(3):
        key = f"{prefix}race-{round_}/latest.json"
        seqs = list(range(1, 9))
        barrier = threading.Barrier(len(seqs))
        moved: dict[int, bool] = {}

        def publish(seq: int, key: str = key, barrier: threading.Barrier = barrier,
                    moved: dict[int, bool] = moved) -> None:
            barrier.wait()
            moved[seq] = move_pointer(client, bucket, key, {"seq": seq, "jobId": f"j{seq}"})

        threads = [threading.Thread(target=publish, args=(s,)) for s in seqs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert read_json(client, bucket, key)[0] == {"seq": 8, "jobId": "j8"}
        assert moved[8] is True


def test_settings_from_env_and_round_trip() -> None:
    r2 = Settings.from_env({"R2_ACCOUNT_ID": "acc123", "R2_ACCESS_KEY_ID": "ak", "R2_SECRET_ACCESS_KEY": "sk",
                            "R2_BUCKET_NAME": "bundles"})
    assert r2.s3_endpoint_url == "https://acc123.r2.cloudflarestorage.com" and r2.s3_region == "auto"
    assert (r2.s3_access_key_id, r2.s3_secret_access_key, r2.s3_bucket) == ("ak", "sk", "bundles")
    assert r2.public_base_url == "https://static.repo.md" and r2.s3_max_concurrency == 8
    assert Settings.from_env(r2.to_env()) == r2
    own = Settings.from_env({"R2_ACCOUNT_ID": "acc123", "REPOBUILD_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
                             "R2_ACCESS_KEY_ID": "ak", "REPOBUILD_S3_ACCESS_KEY_ID": "mine",
                             "REPOBUILD_PUBLIC_BASE_URL": "https://cdn.example/",
                             "REPOBUILD_S3_MAX_CONCURRENCY": "3", "REPOBUILD_S3_MULTIPART_THRESHOLD_MB": "32",
                             "REPOBUILD_ARTIFACTS": "s3://art/pre/fix"})
    assert own.s3_endpoint_url == "http://127.0.0.1:9000" and own.s3_region is None
    assert own.s3_access_key_id == "mine" and own.public_base_url == "https://cdn.example"
    assert (own.s3_max_concurrency, own.s3_multipart_threshold_mb) == (3, 32)
    assert Settings.from_env(own.to_env()) == own
    assert "REPOBUILD_S3_SECRET_ACCESS_KEY" not in own.to_env()
    assert parse_s3_url(own.artifacts) == ("art", "pre/fix")
    assert parse_s3_url("s3://b") == ("b", "") and parse_s3_url("s3://b/x/") == ("b", "x")
    for bad in ("http://b/x", "s3:///x", "s3://b/a/../c"):
        with pytest.raises(PermanentError):
            parse_s3_url(bad)
    assert content_type("a/B.JSON") == "application/json" and content_type("x.unknownext") == "application/octet-stream"


# --- the artifact store: the same scenario against the local folder store and the S3 one --------------

StoreFactory = Callable[[str], ArtifactStore]


@pytest.fixture(params=["local", "s3"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> StoreFactory:
    """A store factory; each call is another "machine" (its own tree cache) on the same storage."""
    if request.param == "local":
        return lambda name: LocalArtifactStore(tmp_path / "artifacts")
    settings: Settings = request.getfixturevalue("s3")

    def make(name: str) -> ArtifactStore:
        return artifact_store(settings.with_(artifacts=f"s3://{settings.s3_bucket}/{prefix}art",
                                             artifacts_cache=str(tmp_path / f"cache-{name}")))
    return make


def test_artifact_store_objects(make_store: StoreFactory) -> None:
    store = make_store("a")
    store.put_bytes("jobs/j1/parse/a.bin", b"\x00bytes")
    store.put_json("jobs/j1/parse/result/posts.json", [{"t": "é"}])
    assert store.get_bytes("jobs/j1/parse/a.bin") == b"\x00bytes"
    assert store.get_json("jobs/j1/parse/result/posts.json") == [{"t": "é"}]
    assert store.exists("jobs/j1/parse/a.bin") and store.exists("jobs/j1/parse")
    assert not store.exists("jobs/j1/nothing") and not store.exists("jobs/j1/par")
    assert store.list("jobs/j1") == ["jobs/j1/parse/a.bin", "jobs/j1/parse/result/posts.json"]
    assert store.list("jobs/j1/parse/a.bin") == ["jobs/j1/parse/a.bin"]
    assert store.list("jobs/none") == []
    with pytest.raises(PermanentError, match="is missing"):
        store.get_bytes("jobs/j1/nothing")
    with pytest.raises(PermanentError, match="invalid artifact key"):
        store.put_bytes("../escape", b"")
    store.delete_prefix("jobs/j1/parse/result")
    assert store.list("jobs/j1") == ["jobs/j1/parse/a.bin"]
    store.delete_prefix("jobs/j1")
    assert store.list("jobs/j1") == [] and not store.exists("jobs/j1")


def test_artifact_store_streams(make_store: StoreFactory, tmp_path: Path) -> None:
    """put_file, get_file and get_range: what stages use for artifacts too large to hold whole (multipart above
    the threshold on S3)."""
    store = make_store("a")
    big = os.urandom(17 * 1024 * 1024 + 5)
    (tmp_path / "big.bin").write_bytes(big)
    store.put_file("jobs/j1/build_db/content.sqlite", tmp_path / "big.bin")
    store.get_file("jobs/j1/build_db/content.sqlite", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == big
    assert store.get_range("jobs/j1/build_db/content.sqlite", 3, 10) == big[3:13]
    assert store.get_range("jobs/j1/build_db/content.sqlite", len(big) - 2, 10) == big[-2:]
    assert store.get_range("jobs/j1/build_db/content.sqlite", len(big) + 10, 4) == b""
    (tmp_path / "small.bin").write_bytes(b"new")
    store.put_file("jobs/j1/build_db/content.sqlite", tmp_path / "small.bin")  # replaced whole
    assert store.get_bytes("jobs/j1/build_db/content.sqlite") == b"new"
    with pytest.raises(PermanentError, match="is missing"):
        store.get_file("jobs/j1/nothing", tmp_path / "nothing.bin")
    with pytest.raises(PermanentError, match="is missing"):
        store.get_range("jobs/j1/nothing", 0, 4)


def test_artifact_store_json_lines(make_store: StoreFactory) -> None:
    store = make_store("a")
    posts = [{"hash": f"h{i}", "t": "é" * i} for i in range(7)]
    assert write_lines(store, "jobs/j1/parse/result/posts-lines", posts, per_part=3) == 7
    assert list(read_lines(make_store("b"), "jobs/j1/parse/result/posts-lines")) == posts
    write_lines(store, "jobs/j1/parse/result/posts-lines", posts[:2], per_part=3)  # fewer parts: the rest go
    assert list(read_lines(store, "jobs/j1/parse/result/posts-lines")) == posts[:2]
    assert store.list("jobs/j1/parse/result/posts-lines/") == ["jobs/j1/parse/result/posts-lines/part-00000.jsonl"]


def tree_content(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_file():
            out[rel] = p.read_bytes()
        elif p.is_dir() and not any(p.iterdir()):
            out[rel] = "empty dir"
    return out


def test_artifact_store_trees(make_store: StoreFactory) -> None:
    store = make_store("a")
    with pytest.raises(PermanentError, match="is missing"):
        store.tree("jobs/j1/fetch/tree")
    with store.write_tree("jobs/j1/fetch/tree") as staging:
        write_files(staging, {"README.md": b"# r", "posts/a.md": b"a", "posts/b.md": b"b", ".repoignore": b"x"})
        (staging / "empty").mkdir()
        os.symlink("posts/a.md", staging / "alias.md")
    expected = {".repoignore": b"x", "README.md": b"# r", "alias.md": ("link", "posts/a.md"),
                "empty": "empty dir", "posts/a.md": b"a", "posts/b.md": b"b"}
    tree = store.tree("jobs/j1/fetch/tree")
    assert tree_content(tree) == expected
    # S3 has no symlinks: the tree's manifest keeps them, so list() shows only the files' objects
    listed = [".repoignore", "README.md", "posts/a.md", "posts/b.md"]
    if isinstance(store, LocalArtifactStore):
        listed.append("alias.md")
    assert store.list("jobs/j1/fetch/tree") == sorted(f"jobs/j1/fetch/tree/{r}" for r in listed)
    kept = (tree / "posts/b.md").stat()

    # rewritten: one file changed, one gone, one new; the cache fetches only what changed
    with store.write_tree("jobs/j1/fetch/tree") as staging:
        write_files(staging, {"README.md": b"# r2", "posts/b.md": b"b", "posts/c.md": b"c"})
    expected = {"README.md": b"# r2", "posts/b.md": b"b", "posts/c.md": b"c"}
    tree = store.tree("jobs/j1/fetch/tree")
    assert tree_content(tree) == expected
    assert store.list("jobs/j1/fetch/tree") == [f"jobs/j1/fetch/tree/{r}" for r in sorted(expected)]
    if isinstance(store, S3ArtifactStore):
        again = (tree / "posts/b.md").stat()
        assert (again.st_ino, again.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)
        # another machine, an empty cache: everything comes down
        assert tree_content(make_store("b").tree("jobs/j1/fetch/tree")) == expected

    # a block that raises leaves the stored tree as it was
    with pytest.raises(RuntimeError), store.write_tree("jobs/j1/fetch/tree") as staging:
        write_files(staging, {"half.md": b"h"})
        raise RuntimeError("clone failed")
    assert tree_content(store.tree("jobs/j1/fetch/tree")) == expected

    store.delete_prefix("jobs/j1")
    with pytest.raises(PermanentError, match="is missing"):
        store.tree("jobs/j1/fetch/tree")
    assert store.list("jobs/j1") == []


def test_s3_tree_rewritten_under_a_reader_is_transient(s3: Settings, prefix: str, tmp_path: Path) -> None:
    settings = s3.with_(artifacts=f"s3://{s3.s3_bucket}/{prefix}art", artifacts_cache=str(tmp_path / "c1"))
    store = S3ArtifactStore.from_settings(settings)
    with store.write_tree("t") as staging:
        write_files(staging, {"a.md": b"a"})
    manifest = json.loads(store.get_bytes(f"{TREES}/t.json"))
    assert manifest["files"] == {"a.md": {"sha256": sha(b"a"), "size": 1}}
    store.put_bytes("t/a.md", b"changed behind the manifest")
    with pytest.raises(TransientError, match="changed while"):
        store.tree("t")
    assert not any(p.name.startswith(".download-") for p in (tmp_path / "c1").rglob("*"))


def test_s3_tree_download_that_fails_is_resumed_by_the_next_read(s3: Settings, prefix: str, tmp_path: Path) -> None:
    # No retry loop around a download: botocore retries the GET, and a failed tree() is a TransientError
    # that retries the stage, whose next tree() must fetch only what the failed one did not.
    settings = s3.with_(artifacts=f"s3://{s3.s3_bucket}/{prefix}art", artifacts_cache=str(tmp_path / "c1"))
    store = S3ArtifactStore.from_settings(settings)
    with store.write_tree("t") as staging:
        write_files(staging, {"a.md": b"a", "b.md": b"b", "c.md": b"c"})
    store.client.delete_object(Bucket=s3.s3_bucket, Key=f"{prefix}art/t/c.md")
    with pytest.raises(TransientError, match="vanished"):
        store.tree("t")
    [cache] = (tmp_path / "c1").iterdir()
    before = {rel: (cache / "tree" / rel).stat() for rel in ("a.md", "b.md")}
    store.put_bytes("t/c.md", b"c")
    tree = store.tree("t")
    assert tree_content(tree) == {"a.md": b"a", "b.md": b"b", "c.md": b"c"}
    for rel, st in before.items():
        again = (tree / rel).stat()
        assert (again.st_ino, again.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), f"{rel} was fetched again"


def test_artifact_store_factory(s3: Settings, tmp_path: Path) -> None:
    assert isinstance(artifact_store(s3.with_(artifacts=str(tmp_path / "a"))), LocalArtifactStore)
    store = artifact_store(s3.with_(artifacts=f"s3://{s3.s3_bucket}/some/prefix"))
    assert isinstance(store, S3ArtifactStore)
    assert (store.bucket, store.prefix) == (s3.s3_bucket, "some/prefix")
    store.put_json("k.json", {"a": 1})
    assert store.client.get_object(Bucket=s3.s3_bucket, Key="some/prefix/k.json")["Body"].read() == b'{"a":1}'


def test_a_raising_progress_callback_stops_the_upload(s3: Settings, prefix: str, tmp_path: Path) -> None:
    paths = write_files(tmp_path, {f"f{i:03d}.json": b"{}" for i in range(200)})
    pub = S3Publisher.from_settings(s3.with_(s3_max_concurrency=2))

    def cancel(done: int, total: int) -> None:
        if done == 3:
            raise JobCancelled("cancelled")

    with pytest.raises(JobCancelled):
        pub.upload({f"{prefix}{rel}": path for rel, path in paths.items()}, on_progress=cancel)
    stored = len(pub.list_hashes(prefix))
    assert 3 <= stored < 20


def test_publish_target_names_bucket_and_folder() -> None:
    s = Settings.from_env({"REPOBUILD_PUBLISH_TARGET": "s3://my-bucket/sites/blog/"})
    assert (s.s3_bucket, s.s3_prefix) == ("my-bucket", "sites/blog")
    assert Settings.from_env(s.to_env()).s3_prefix == "sites/blog"
    explicit = Settings.from_env({"REPOBUILD_PUBLISH_TARGET": "s3://a/x", "R2_BUCKET_NAME": "b"})
    assert (explicit.s3_bucket, explicit.s3_prefix) == ("b", "x")
