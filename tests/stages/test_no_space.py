"""A full disk under the artifact store and the output folder: a StorageFull (transient) naming ENOSPC and what
could not be written, nothing half-written left, what was there before untouched. On a real 1 MiB tmpfs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import StorageFull, TransientError
from pipeline.stores.artifacts import LocalArtifactStore
from pipeline.targets.local import LocalFolderTarget
from tests.fakes.small_disk import small_disk

TOO_BIG = b"x" * (2 * 1024 * 1024)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk", 1) as disk:
        yield disk


def hidden(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob(".*"))


def test_artifacts_on_a_full_disk(tiny_disk: Path) -> None:
    store = LocalArtifactStore(tiny_disk / "a")
    store.put_json("jobs/j/parse/posts.json", ["before"])
    with pytest.raises(StorageFull, match=r"artifact store full: .*\(ENOSPC\) writing artifact "
                                          r"'jobs/j/parse/posts.json'") as caught:
        store.put_bytes("jobs/j/parse/posts.json", TOO_BIG)
    assert isinstance(caught.value, TransientError)  # retried: space comes back
    assert store.get_json("jobs/j/parse/posts.json") == ["before"] and hidden(tiny_disk) == []

    with store.write_tree("jobs/j/fetch/tree") as staging:
        (staging / "a.md").write_text("old tree")
    with pytest.raises(StorageFull, match=r"writing artifact tree 'jobs/j/fetch/tree'"):
        with store.write_tree("jobs/j/fetch/tree") as staging:
            (staging / "b.md").write_bytes(TOO_BIG)
    assert (store.tree("jobs/j/fetch/tree") / "a.md").read_text() == "old tree"
    assert hidden(tiny_disk) == []


def test_output_revision_on_a_full_disk(tiny_disk: Path) -> None:
    target = LocalFolderTarget(tiny_disk / "out")
    with target.open_revision("r1") as staging:
        (staging / "posts.json").write_text("[]")
    with pytest.raises(StorageFull, match=r"output folder full: .*\(ENOSPC\) writing revision 'r2'"):
        with target.open_revision("r2") as staging:
            (staging / "content.sqlite").write_bytes(TOO_BIG)
    assert target.latest() == "r1" and not (tiny_disk / "out" / "r2").exists() and hidden(tiny_disk) == []
