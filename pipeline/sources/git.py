"""Cloning with dulwich: file://, local repositories and smart HTTP(S), with an optional token.

The token goes to dulwich as HTTP basic credentials (user `x-access-token`, as GitHub accepts),
never into a URL that could be logged, and is masked out of every error message.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

from dulwich import porcelain
from dulwich.client import HTTPUnauthorized
from dulwich.errors import GitProtocolError, HangupException, NotGitRepository
from dulwich.repo import Repo

from pipeline.errors import PermanentError, TransientError
from pipeline.http.credentials import mask_text

_TRANSIENT = re.compile(r"Max retries exceeded|Connection refused|Connection reset|timed out|"
                        r"Temporary failure|\b50[0-9]\b", re.IGNORECASE)


def mask_url(url: str) -> str:
    """A URL, or a message holding URLs, without their credentials (userinfo, `?access_token=`…)."""
    return mask_text(url)


def mask_secrets(text: str, secrets: list[str | None]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def _reason(exc: BaseException, token: str | None) -> str:
    return mask_secrets(mask_url(f"{type(exc).__name__}: {exc}"), [token])


def clone(url: str, dest: Path, *, branch: str | None = None, commit: str | None = None, depth: int | None = None,
          token: str | None = None) -> str:
    """Clone `url` into `dest` (which must not exist) and check out branch/commit. Returns the commit sha."""
    kwargs: dict[str, Any] = {}
    if token and url.startswith(("http://", "https://")):
        kwargs = {"username": "x-access-token", "password": token}
    shown = mask_url(url)
    errors = io.BytesIO()
    try:
        repo = porcelain.clone(url, str(dest), checkout=commit is None, errstream=errors,
                               depth=None if commit else depth, branch=branch, **kwargs)
    except HTTPUnauthorized as exc:
        raise PermanentError(f"git server refused the credentials for {shown}") from exc
    except NotGitRepository as exc:
        raise PermanentError(f"{shown} is not a git repository") from exc
    except (ConnectionError, TimeoutError, HangupException, OSError) as exc:
        raise TransientError(f"cannot reach {shown}: {_reason(exc, token)}") from exc
    except (GitProtocolError, KeyError, ValueError) as exc:
        text = _reason(exc, token)
        # dulwich wraps network failures and HTTP 5xx in GitProtocolError: tell them apart by their text
        if _TRANSIENT.search(text):
            raise TransientError(f"git server unreachable or failing for {shown}: {text}") from exc
        branch_problem = branch and ("branch" in text.lower() or isinstance(exc, KeyError))
        what = f"branch {branch!r} of " if branch_problem else ""
        raise PermanentError(f"cannot clone {what}{shown}: {text}") from exc
    with repo:
        if commit:
            _checkout(repo, commit)
        return repo.head().decode()


def _checkout(repo: Repo, commit: str) -> None:
    try:
        sha = porcelain.rev_parse(repo, commit)  # full sha from a prefix
    except (KeyError, ValueError) as exc:
        raise PermanentError(f"commit {commit} is not in the repository") from exc
    porcelain.reset(repo, "hard", sha)


def head_commit(path: Path) -> str | None:
    try:
        with Repo(str(path)) as repo:
            return repo.head().decode()
    except (NotGitRepository, KeyError):
        return None
