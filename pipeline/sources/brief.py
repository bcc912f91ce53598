"""A small markdown project generated from a written brief by a chat model (`generate-project-from-brief`).

The model's reply is untrusted input that becomes files on disk, so it is validated strictly: a JSON list of
5-10 files, each a safe relative `.md` path with a frontmatter mapping and a non-empty body, linked together
with `[[wiki]]` links. An invalid reply is sent back to the model with what was wrong, up to `max_attempts`
replies; HTTP failures are retried separately by pipeline.http.openai_retry. The chat server's base URL is the
operator's (REPOBUILD_OPENAI_BASE_URL), never a request's, so it is exempt from the outbound address policy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import yaml
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from pipeline.errors import PermanentError
from pipeline.http.openai_retry import RetryPolicy, call_with_retry

DEFAULT_CHAT_MODEL = "gpt-4o-mini"
MIN_FILES, MAX_FILES = 5, 10
MAX_FILENAME_CHARS = 120
MAX_PROBLEMS = 12  # enough for the model to fix a reply; more only buries the first ones

SYSTEM_PROMPT = f"""You write small markdown knowledge bases from a brief.
Reply with JSON only: an array of {MIN_FILES} to {MAX_FILES} objects, each
{{"filename": "...", "frontmatter": {{...}}, "content": "..."}}, and nothing before or after it.
- filename: a relative path ending in .md, lowercase words joined by hyphens, optionally in a folder
  (for example "guides/getting-started.md"); no leading slash, no "..", no backslashes, no hidden names
  starting with a dot, at most {MAX_FILENAME_CHARS} characters, each filename unique.
- frontmatter: a JSON object with at least "title" (a string); "description" and "tags" (a list of strings)
  are welcome.
- content: the markdown body without frontmatter, starting with the text (not with ---).
- The files must link each other with wiki links: [[Title of another file]] or [[filename-without-extension]].
  Every file should link at least one other file."""

_FENCED = re.compile(r"```[A-Za-z]*[ \t]*\r?\n(?P<body>.*?)\r?\n[ \t]*```", re.DOTALL)
_WIKI_LINK = re.compile(r"\[\[[^\[\]\n]+\]\]")
# Windows-reserved characters: the generated repository must check out everywhere.
_NON_PORTABLE = set('<>:"|?*')


@dataclass(frozen=True)
class GeneratedFile:
    filename: str
    frontmatter: dict[str, Any]
    content: str


class InvalidProject(ValueError):
    """The model's reply is not a usable project; str() lists every problem found, for the model to fix."""

    def __init__(self, problems: list[str]) -> None:
        shown = problems[:MAX_PROBLEMS]
        more = len(problems) - len(shown)
        super().__init__("; ".join(shown) + (f"; and {more} more problems" if more else ""))
        self.problems = problems


def filename_problem(name: str) -> str | None:
    """Why `name` is not a safe relative markdown path, or None when it is."""
    if not name:
        return "is empty"
    if len(name) > MAX_FILENAME_CHARS:
        return f"is longer than {MAX_FILENAME_CHARS} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains control characters"
    if "\\" in name:
        return "contains a backslash"
    if name.startswith("/"):
        return "is an absolute path"
    if _NON_PORTABLE & set(name):
        return f"contains one of {''.join(sorted(_NON_PORTABLE))}"
    if not name.endswith(".md"):
        return "does not end in .md"
    for part in name.split("/"):
        if not part:
            return "has an empty path segment"
        if part in (".", ".."):
            return f"has a {part!r} path segment"
        if part.startswith("."):
            return f"has a hidden path segment {part!r}"
        if part != part.strip():
            return f"has a path segment {part!r} with leading or trailing spaces"
    return None


def _folders(filename: str) -> list[str]:
    parts = filename.split("/")
    return ["/".join(parts[:k]) for k in range(1, len(parts))]


def _reply_json(text: str) -> Any:
    # Models often wrap JSON in a ```json fence, sometimes after a sentence of prose: the fence wins.
    fenced = _FENCED.search(text)
    candidate = fenced.group("body") if fenced is not None else text.strip()
    try:
        return json.loads(candidate)
    except json.JSONDecodeError as exc:
        raise InvalidProject([f"the reply is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"]) \
            from exc


def _reply_files(text: str) -> list[Any]:
    """The array of file objects in a reply; InvalidProject when there is none, or not 5-10 of them."""
    if not text.strip():
        raise InvalidProject(["the reply is empty"])
    data = _reply_json(text)
    if isinstance(data, dict) and "files" in data:
        data = data["files"]
    if not isinstance(data, list):
        raise InvalidProject([f"the reply is a JSON {type(data).__name__}, expected an array of file objects"])
    if not MIN_FILES <= len(data) <= MAX_FILES:
        raise InvalidProject([f"expected between {MIN_FILES} and {MAX_FILES} files, got {len(data)}"])
    return data


def _filename_check(i: int, name: Any, seen: dict[str, str]) -> tuple[str, str | None]:
    """(how problems name file `i`, what is wrong with its filename or None); a good name joins `seen`."""
    where = f"file {i}"
    if not isinstance(name, str):
        return where, f"{where} has no string \"filename\""
    where = f"file {i} ({json.dumps(name)[:MAX_FILENAME_CHARS + 10]})"
    why = filename_problem(name)
    if why is not None:
        return where, f"{where}: filename {why}"
    if name.casefold() in seen:
        return where, (f"{where}: filename repeats {json.dumps(seen[name.casefold()])} "
                       "(names must differ in more than letter case)")
    seen[name.casefold()] = name
    return where, None


def _frontmatter_problem(where: str, frontmatter: Any) -> str | None:
    if not isinstance(frontmatter, dict):
        return f"{where}: \"frontmatter\" must be an object"
    if not isinstance(frontmatter.get("title"), str) or not frontmatter["title"].strip():
        return f"{where}: frontmatter needs a non-empty string \"title\""
    return None


def _content_problem(where: str, content: Any) -> str | None:
    if not isinstance(content, str) or not content.strip():
        return f"{where}: \"content\" must be a non-empty string"
    if content.lstrip().startswith("---"):
        return f"{where}: \"content\" starts with ---; put the metadata in \"frontmatter\" instead"
    return None


def _check_file(i: int, item: Any, seen: dict[str, str], problems: list[str]) -> GeneratedFile | None:
    """File `i` of a reply when it has the right types (adding what is wrong with it to `problems`)."""
    if not isinstance(item, dict):
        problems.append(f"file {i} is a JSON {type(item).__name__}, not an object")
        return None
    name, frontmatter, content = item.get("filename"), item.get("frontmatter"), item.get("content")
    where, name_problem = _filename_check(i, name, seen)
    found = (name_problem, _frontmatter_problem(where, frontmatter), _content_problem(where, content))
    problems.extend(problem for problem in found if problem is not None)
    if isinstance(name, str) and isinstance(frontmatter, dict) and isinstance(content, str):
        return GeneratedFile(name, frontmatter, content)
    return None


def _project_problems(files: list[GeneratedFile]) -> list[str]:
    """What is wrong with the files together: a name that is another's folder, no wiki link at all."""
    # A file named like another's folder ("a.md" beside "a.md/b.md") cannot be written.
    folders = {folder.casefold() for f in files for folder in _folders(f.filename)}
    problems = [f"{json.dumps(f.filename)} is also a folder" for f in files if f.filename.casefold() in folders]
    if not any(_WIKI_LINK.search(f.content) for f in files):
        problems.append("no file links another with a [[wiki link]]")
    return problems


def parse_files(text: str) -> list[GeneratedFile]:
    """The files of a model reply; raises InvalidProject naming everything that is wrong with it."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    checked = [_check_file(i, item, seen, problems) for i, item in enumerate(_reply_files(text), 1)]
    files = [f for f in checked if f is not None]
    problems.extend(_project_problems(files))
    if problems:
        raise InvalidProject(problems)
    return files


def _feedback(problem: str) -> str:
    return (f"That reply could not be used: {problem}. Reply again with the whole project as a JSON array of "
            f"{MIN_FILES} to {MAX_FILES} file objects, fixing these problems, and nothing else.")


def generate_files(brief: str, *, api_key: str, model: str = DEFAULT_CHAT_MODEL, base_url: str | None = None,
                   max_attempts: int = 3, http_attempts: int = 6, backoff_s: float = 0.5,
                   max_retry_after_s: float = 60.0, timeout_s: float = 300.0,
                   temperature: float | None = None) -> list[GeneratedFile]:
    """5-10 markdown files for `brief`. `max_attempts` bounds model replies; `http_attempts` each request."""
    if not brief.strip():
        raise PermanentError("project generation needs a non-empty brief")
    policy = RetryPolicy(max_attempts=http_attempts, base_delay_s=backoff_s, max_retry_after_s=max_retry_after_s)
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Brief:\n{brief.strip()}"},
    ]
    attempts = max(1, max_attempts)
    problem = ""
    with openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout_s) as client:
        # A conversation, not a retry of a failed request (so no retry helper, no wait): the model did answer,
        # and each turn is a new request carrying the whole exchange and what was wrong with the last reply.
        for attempt in range(1, attempts + 1):
            def call() -> ChatCompletion:
                if temperature is None:
                    return client.chat.completions.create(model=model, messages=messages)
                return client.chat.completions.create(model=model, messages=messages, temperature=temperature)

            completion = call_with_retry(call, what=f"project generation (reply {attempt} of {attempts})",
                                         policy=policy, secrets=[api_key])
            text, problem = _reply_text(completion)
            if not problem:
                try:
                    return parse_files(text)
                except InvalidProject as exc:
                    problem = str(exc)
            messages.append({"role": "assistant", "content": text})
            messages.append({"role": "user", "content": _feedback(problem)})
    raise PermanentError(f"project generation: no valid project in {attempts} replies from {model}; "
                         f"the last reply was invalid: {problem}")


def _reply_text(completion: ChatCompletion) -> tuple[str, str]:
    """(reply text, problem or "")."""
    if not completion.choices:
        return "", "the response had no choices"
    choice = completion.choices[0]
    text = choice.message.content or ""
    if choice.finish_reason == "length":
        return text, "the reply was cut off at the token limit; keep the files shorter"
    return text, ""


def render_file(file: GeneratedFile) -> str:
    """The file's text: YAML frontmatter between `---` fences, then the markdown body ending in a newline."""
    meta = yaml.safe_dump(file.frontmatter, sort_keys=False, allow_unicode=True, default_flow_style=False)
    body = file.content if file.content.endswith("\n") else file.content + "\n"
    return f"---\n{meta}---\n{body}"


def write_files(files: Sequence[GeneratedFile], dest_dir: str | Path) -> list[Path]:
    """Write every file under dest_dir; PermanentError, before writing anything, for a path that would escape it."""
    root = Path(dest_dir)
    root.mkdir(parents=True, exist_ok=True)
    real_root = root.resolve()
    seen: set[str] = set()
    targets: list[Path] = []
    for f in files:
        why = filename_problem(f.filename)
        if why is not None:
            raise PermanentError(f"refusing to write {f.filename!r}: the filename {why}")
        if f.filename.casefold() in seen:
            raise PermanentError(f"refusing to write {f.filename!r} twice")
        seen.add(f.filename.casefold())
        target = real_root / f.filename
        # resolve() follows symlinks already in dest_dir, the one way a clean relative name can still escape.
        if not target.resolve().is_relative_to(real_root):
            raise PermanentError(f"refusing to write {f.filename!r}: it resolves outside {dest_dir}")
        targets.append(target)
    for f, target in zip(files, targets, strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.resolve().is_relative_to(real_root):
            raise PermanentError(f"refusing to write {f.filename!r}: it resolves outside {dest_dir}")
        target.write_text(render_file(f), encoding="utf-8", newline="\n")
    return targets
