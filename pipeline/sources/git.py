"""Cloning with dulwich: file://, local repositories and smart HTTP(S), with an optional token.

The token goes to dulwich as HTTP basic credentials (user `x-access-token`, as GitHub accepts),
never into a URL that could be logged, and is masked out of every error message. Network remotes go
through pipeline/http/git_transport.py: the outbound address policy and connect/read timeouts.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from dulwich import porcelain
from dulwich.client import HTTPUnauthorized
from dulwich.errors import GitProtocolError, HangupException, NotGitRepository
from dulwich.objects import ObjectID
from dulwich.refs import HEADREF
from dulwich.repo import Repo

from pipeline.errors import PermanentError, TransientError
from pipeline.http.address_policy import AddressPolicy, AddressRefused
from pipeline.http.credentials import mask_text
from pipeline.http.git_transport import DEFAULT_TIMEOUT_S, transport_kwargs
from pipeline.sources.git_checkout import SkippedEntry, check_out

_TIMED_OUT = re.compile(r"Read timed out|ReadTimeoutError", re.IGNORECASE)
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
          token: str | None = None, skipped: list[SkippedEntry] | None = None, policy: AddressPolicy | None = None,
          timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Clone `url` into `dest` (which must not exist) and check out branch/commit. Returns the commit sha.

    Tree entries no file system can hold are left out of the checkout and appended to `skipped`. A network
    remote is held to `policy` (public addresses only when None) and to `timeout_s` per request."""
    shown = mask_url(url)
    errors = io.BytesIO()
    try:
        kwargs = transport_kwargs(url, policy=policy or AddressPolicy(), timeout_s=timeout_s, token=token)
        repo = porcelain.clone(url, str(dest), checkout=False, errstream=errors,
                               depth=None if commit else depth, branch=branch, **kwargs)
    except AddressRefused as exc:
        raise AddressRefused(f"cannot clone {shown}: {exc}") from None
    except HTTPUnauthorized as exc:
        raise PermanentError(f"git server refused the credentials for {shown}") from exc
    except NotGitRepository as exc:
        raise PermanentError(f"{shown} is not a git repository") from exc
    except (ConnectionError, TimeoutError, HangupException, OSError) as exc:
        raise TransientError(f"cannot reach {shown}: {_reason(exc, token)}") from exc
    except (GitProtocolError, KeyError, ValueError) as exc:
        text = _reason(exc, token)
        if _TIMED_OUT.search(text):
            raise TransientError(f"git server for {shown} did not answer within {timeout_s:g}s") from exc
        # dulwich wraps network failures and HTTP 5xx in GitProtocolError: tell them apart by their text
        if _TRANSIENT.search(text):
            raise TransientError(f"git server unreachable or failing for {shown}: {text}") from exc
        branch_problem = branch and ("branch" in text.lower() or isinstance(exc, KeyError))
        what = f"branch {branch!r} of " if branch_problem else ""
        raise PermanentError(f"cannot clone {what}{shown}: {text}") from exc
    with repo:
        sha = _pinned(repo, commit) if commit else _head(repo, shown)
        try:
            found = check_out(repo, sha)
        except OSError as exc:
            # Everything the tree itself could cause was left out above: this is the worker's disk.
            raise TransientError(f"cannot check out {shown}: {exc.strerror or type(exc).__name__}") from exc
        if skipped is not None:
            skipped.extend(found)
        return sha.decode()


def _head(repo: Repo, shown: str) -> bytes:
    try:
        return repo.head()
    except KeyError as exc:
        raise PermanentError(f"{shown} has no commits to check out") from exc


def _pinned(repo: Repo, commit: str) -> bytes:
    """The full sha of `commit`; the checked-out branch is moved to it, as `reset --hard` would."""
    try:
        sha = porcelain.rev_parse(repo, commit)
    except (KeyError, ValueError) as exc:
        raise PermanentError(f"commit {commit} is not in the repository") from exc
    repo.refs[HEADREF] = ObjectID(sha)
    return sha


def head_commit(path: Path) -> str | None:
    try:
        with Repo(str(path)) as repo:
            return repo.head().decode()
    except (NotGitRepository, KeyError):
        return None
