"""Project generation from a brief against a real OpenAI-compatible chat server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import PermanentError, TransientError
from pipeline.markdown.frontmatter import split_frontmatter
from pipeline.sources.brief import (
    MAX_FILENAME_CHARS,
    GeneratedFile,
    InvalidProject,
    filename_problem,
    generate_files,
    parse_files,
    write_files,
)
from tests.fakes.openai_server import OpenAIServer

CHAT = "/v1/chat/completions"
BRIEF = "A tiny wiki about sourdough baking for beginners."


def project(count: int = 5, **overrides: Any) -> list[dict[str, Any]]:
    files = [{"filename": f"notes/page-{i}.md",
              "frontmatter": {"title": f"Page {i}", "tags": ["bread", "yes"], "date": f"2024-01-{i + 1:02d}"},
              "content": f"# Page {i}\n\nSee [[Page {(i + 1) % count}]] for more.\n"}
             for i in range(count)]
    files[0].update(overrides)
    return files


def reply(files: Any) -> str:
    return json.dumps(files)


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(api_key="sk-brief-test-key") as srv:
        yield srv


def generate(server: OpenAIServer, **kwargs: Any) -> list[GeneratedFile]:
    options: dict[str, Any] = {"api_key": "sk-brief-test-key", "model": "chat-test", "backoff_s": 0.01, **kwargs}
    return generate_files(BRIEF, base_url=server.base_url, **options)


def test_good_reply(server: OpenAIServer) -> None:
    server.queue_replies(reply(project(6)))
    files = generate(server)
    assert [f.filename for f in files] == [f"notes/page-{i}.md" for i in range(6)]
    assert files[2].frontmatter["title"] == "Page 2"
    assert "[[Page 3]]" in files[2].content
    (req,) = server.requests_to(CHAT)
    assert req.body["model"] == "chat-test"
    system, user = req.body["messages"]
    assert system["role"] == "system" and "[[" in system["content"] and "JSON" in system["content"]
    assert user == {"role": "user", "content": f"Brief:\n{BRIEF}"}


def test_fenced_reply_and_files_object_are_accepted() -> None:
    files = project(5)
    assert len(parse_files(f"Here you go:\n```json\n{reply(files)}\n```\n")) == 5
    assert len(parse_files(json.dumps({"files": files}))) == 5


def test_invalid_then_good_feeds_the_error_back(server: OpenAIServer) -> None:
    server.queue_replies(reply(project(3)), reply(project(5)))
    files = generate(server)
    assert len(files) == 5
    first, second = server.requests_to(CHAT)
    assert len(first.body["messages"]) == 2
    *_, assistant, correction = second.body["messages"]
    assert assistant == {"role": "assistant", "content": reply(project(3))}
    assert correction["role"] == "user"
    assert "expected between 5 and 10 files, got 3" in correction["content"]


def test_hopeless_replies_are_permanent_after_max_attempts(server: OpenAIServer) -> None:
    server.default_reply = "Sure! Here is your project: sourdough is great."
    with pytest.raises(PermanentError, match=r"no valid project in 4 replies .* the last reply was invalid: "
                                             r"the reply is not valid JSON"):
        generate(server, max_attempts=4)
    requests = server.requests_to(CHAT)
    assert len(requests) == 4
    # Each retry carries the whole conversation so far: 2 opening messages plus 2 per failed reply.
    assert [len(r.body["messages"]) for r in requests] == [2, 4, 6, 8]


@pytest.mark.parametrize("bad", ["../x.md", "/etc/x.md", ".git/config.md", "notes\\x.md", "a/../../x.md",
                                 "notes/x.txt", "a//x.md", "x\n.md", "C:/x.md", "a/./x.md",
                                 "n" * MAX_FILENAME_CHARS + ".md", ""])
def test_unsafe_filenames_are_rejected(bad: str) -> None:
    assert filename_problem(bad) is not None
    with pytest.raises(InvalidProject, match="filename"):
        parse_files(reply(project(5, filename=bad)))


def test_safe_filenames_pass() -> None:
    for good in ("index.md", "guides/getting-started.md", "a/b/c-d_e.md", "Notes/Ünïcode page.md"):
        assert filename_problem(good) is None, good


def test_unsafe_filename_reply_is_retried(server: OpenAIServer) -> None:
    server.queue_replies(reply(project(5, filename="../escape.md")), reply(project(5)))
    assert len(generate(server)) == 5
    correction = server.requests_to(CHAT)[1].body["messages"][-1]["content"]
    assert '"../escape.md"' in correction and "'..' path segment" in correction


@pytest.mark.parametrize(("overrides", "problem"), [
    ({"frontmatter": "title: x"}, '"frontmatter" must be an object'),
    ({"frontmatter": {"tags": []}}, 'non-empty string "title"'),
    ({"content": "   "}, '"content" must be a non-empty string'),
    ({"content": "---\ntitle: x\n---\nbody"}, "starts with ---"),
    ({"filename": "NOTES/PAGE-1.md"}, 'file 2 ("notes/page-1.md"): filename repeats "NOTES/PAGE-1.md"'),
])
def test_invalid_items_are_named(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidProject) as info:
        parse_files(reply(project(5, **overrides)))
    assert problem in str(info.value)


def test_reply_shape_problems() -> None:
    with pytest.raises(InvalidProject, match="between 5 and 10 files, got 11"):
        parse_files(reply(project(11)))
    with pytest.raises(InvalidProject, match="JSON dict, expected an array"):
        parse_files(json.dumps({"project": project(5)}))
    unlinked = project(5)
    for f in unlinked:
        f["content"] = "No links here."
    with pytest.raises(InvalidProject, match=r"no file links another with a \[\[wiki link\]\]"):
        parse_files(reply(unlinked))
    folder = project(5, filename="notes/page-1.md/child.md")
    with pytest.raises(InvalidProject, match='"notes/page-1.md" is also a folder'):
        parse_files(reply(folder))


def test_429_then_good(server: OpenAIServer) -> None:
    server.fail_next(429, retry_after="0")
    server.queue_replies(reply(project(5)))
    assert len(generate(server)) == 5
    assert len(server.requests_to(CHAT)) == 2


def test_persistent_503_is_transient(server: OpenAIServer) -> None:
    server.fail_next(503, times=10)
    with pytest.raises(TransientError, match=r"project generation \(reply 1 of 3\): HTTP 503 .* after 2 attempts"):
        generate(server, http_attempts=2)


def test_wrong_key_is_permanent(server: OpenAIServer) -> None:
    with pytest.raises(PermanentError, match="HTTP 401: Incorrect API key provided"):
        generate(server, api_key="sk-not-the-right-one")
    assert len(server.requests_to(CHAT)) == 1


def test_written_files_parse_back(server: OpenAIServer, tmp_path: Path) -> None:
    server.queue_replies(reply(project(5)))
    files = generate(server)
    written = write_files(files, tmp_path / "site")
    assert written == [(tmp_path / "site" / f.filename).resolve() for f in files]
    for f in files:
        text = (tmp_path / "site" / f.filename).read_text(encoding="utf-8")
        assert text.startswith("---\n")
        frontmatter, body = split_frontmatter(text, f.filename)
        # The tag "yes" stays a string: unquoted, YAML would load it as a bool.
        assert frontmatter == f.frontmatter
        assert body == f.content


@pytest.mark.parametrize("bad", ["../x.md", "/etc/x.md", ".git/config.md"])
def test_write_refuses_escaping_paths(tmp_path: Path, bad: str) -> None:
    dest = tmp_path / "site"
    files = [GeneratedFile("ok.md", {"title": "Ok"}, "fine"), GeneratedFile(bad, {"title": "Bad"}, "bad")]
    with pytest.raises(PermanentError, match="refusing to write"):
        write_files(files, dest)
    # Nothing is written when any name is refused.
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "x.md").exists()


def test_write_refuses_a_symlink_out_of_dest(tmp_path: Path) -> None:
    dest, outside = tmp_path / "site", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "linked").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PermanentError, match="resolves outside"):
        write_files([GeneratedFile("linked/x.md", {"title": "X"}, "x")], dest)
    assert list(outside.iterdir()) == []
