"""JSON lines in parts (stores/json_lines.py): how stages hand a corpus's posts to one another a batch at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import PermanentError
from pipeline.stages.parsed_posts import iter_posts, posts_parsed
from pipeline.stores.artifacts import LocalArtifactStore
from pipeline.stores.json_lines import LinesWriter, has_lines, header_key, part_key, read_lines, write_lines

KEY = "jobs/j/parse/result/posts-lines"
ITEMS = [{"hash": f"{i:02d}", "text": "line\nbreak\u2028and é", "n": i} for i in range(10)]


def test_round_trip(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    assert write_lines(store, KEY, ITEMS, per_part=4) == 10
    assert [store.exists(part_key(KEY, n)) for n in range(4)] == [True, True, True, False]
    assert list(read_lines(store, KEY)) == ITEMS
    assert write_lines(store, KEY, [], per_part=4) == 0
    assert list(read_lines(store, KEY)) == []
    assert store.list(KEY + "/") == [part_key(KEY, 0)]  # the longer list's parts went with it


def test_a_partial_write_is_missing_until_written_again(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    write_lines(store, KEY, ITEMS[:3], per_part=4)  # an earlier complete write

    def dies_midway() -> object:
        yield from ITEMS[:6]
        raise OSError("worker killed")

    with pytest.raises(OSError, match="killed"):
        write_lines(store, KEY, dies_midway(), per_part=4)
    assert store.exists(part_key(KEY, 0)) and not has_lines(store, KEY)
    with pytest.raises(PermanentError, match="never written, or its writer did not finish"):
        list(read_lines(store, KEY))
    write_lines(store, KEY, ITEMS, per_part=4)  # the retried stage writes it from the start
    assert list(read_lines(store, KEY)) == ITEMS


def test_a_writer_resumed_part_by_part(tmp_path: Path) -> None:
    """Parts written by one writer, the rest by another (a continuation): the header is what completes the list."""
    store = LocalArtifactStore(tmp_path)
    first = LinesWriter(store, KEY)
    first.part(ITEMS[:5])
    assert not has_lines(store, KEY)
    again = LinesWriter(store, KEY)
    again.part(ITEMS[:5])
    again.part(ITEMS[5:])
    again.close()
    assert list(read_lines(store, KEY)) == ITEMS


def test_a_corrupt_line_names_the_item(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    write_lines(store, KEY, ITEMS, per_part=4)
    lines = store.get_bytes(part_key(KEY, 1)).split(b"\n")
    lines[2] = lines[2][:15]  # cut off mid-value, as a torn write would leave it
    store.put_bytes(part_key(KEY, 1), b"\n".join(lines))
    read = read_lines(store, KEY)
    assert [next(read)["n"] for _ in range(6)] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(PermanentError) as err:
        next(read)
    message = str(err.value)
    assert "part-00001.jsonl' line 3 (item 7 of" in message and "is not valid JSON" in message
    assert '{"hash":"06"' in message


def test_a_count_that_differs_from_the_header(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    write_lines(store, KEY, ITEMS, per_part=4)
    store.put_bytes(part_key(KEY, 2), b"")
    with pytest.raises(PermanentError, match="holds 8 items, its header says 10"):
        list(read_lines(store, KEY))
    store.put_json(header_key(KEY), {"version": 99, "parts": 1})
    with pytest.raises(PermanentError, match="cannot read"):
        list(read_lines(store, KEY))


def test_posts_of_a_job_parsed_before_json_lines(tmp_path: Path) -> None:
    """A job whose parse wrote the whole list (an earlier version) is read from it."""
    store = LocalArtifactStore(tmp_path)
    assert not posts_parsed(store, "j")
    store.put_json("jobs/j/parse/result/posts.json", ITEMS[:2])
    assert posts_parsed(store, "j") and list(iter_posts(store, "j")) == ITEMS[:2]
    write_lines(store, KEY, ITEMS)
    assert list(iter_posts(store, "j")) == ITEMS  # the lines win when both are there
