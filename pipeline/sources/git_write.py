"""Committing a working tree and pushing it with dulwich over HTTP(S), the write side of sources/git.py.

The token travels the way git.py's clone sends it: as HTTP basic credentials (user `x-access-token`), never
in a URL, and it is masked out of every error message. The remote is held to the outbound address policy,
with connect and read timeouts (pipeline/http/git_transport.py). Errors follow pipeline.errors: a network
failure or a 5xx is transient, refused credentials, a missing remote or a rejected update are permanent.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from dulwich import porcelain
from dulwich.client import HTTPUnauthorized, get_transport_and_path
from dulwich.errors import GitProtocolError, HangupException, NotGitRepository
from dulwich.objects import Commit, ObjectID
from dulwich.refs import Ref, check_ref_format
from dulwich.repo import InvalidUserIdentity, Repo, check_user_identity

from pipeline.errors import PermanentError, TransientError
from pipeline.http.address_policy import AddressPolicy, AddressRefused
from pipeline.http.git_transport import DEFAULT_TIMEOUT_S, transport_kwargs
from pipeline.sources.git import _TIMED_OUT, _TRANSIENT, _reason, mask_secrets, mask_url

DEFAULT_AUTHOR = "repobuild <repobuild@localhost>"

_HTTP_STATUS = re.compile(r"unexpected http resp (\d{3})")


def http_status(text: str) -> int | None:
    """The HTTP status dulwich folded into a GitProtocolError's text (it keeps only 401 and 404 apart)."""
    found = _HTTP_STATUS.search(text)
    return int(found.group(1)) if found else None


def cause(exc: BaseException, token: str | None) -> BaseException | None:
    """`exc` to chain from, or None when its own text would show a secret in a logged traceback."""
    return exc if _reason(exc, token) == f"{type(exc).__name__}: {exc}" else None


def branch_ref(branch: str) -> Ref:
    ref = Ref(f"refs/heads/{branch}".encode())
    if not check_ref_format(ref):
        raise PermanentError(f"{branch!r} is not a valid branch name")
    return ref


def commit_tree(repo_dir: Path, message: str, *, branch: str = "main", author: str = DEFAULT_AUTHOR,
                timestamp: int | None = None) -> str:
    """Commit everything under `repo_dir` (additions, changes and deletions) as the new tip of `branch`.

    As with `git add -A`, what the tree's own .gitignore ignores stays out.

    Initialises the repository when `repo_dir` has none, with HEAD on `branch`. When the tree is the one
    the branch already points at, no commit is made and the existing sha is returned, so a retried stage
    does not pile up empty commits. With a fixed `timestamp` the same tree, parent and message give the
    same sha. Returns the commit sha.
    """
    ref = branch_ref(branch)
    if not repo_dir.is_dir():
        raise PermanentError(f"{repo_dir} is not a directory")
    identity = author.encode()
    try:
        check_user_identity(identity)
    except InvalidUserIdentity as exc:
        raise PermanentError(f"author {author!r} is not of the form 'Name <email>'") from exc
    when = int(time.time()) if timestamp is None else timestamp
    repo = Repo(str(repo_dir)) if (repo_dir / ".git").exists() else Repo.init(str(repo_dir))
    with repo:
        # The tree becomes the tip of `branch` whichever branch HEAD was on, e.g. in a fresh clone.
        repo.refs.set_symbolic_ref(Ref(b"HEAD"), ref)
        porcelain.add(repo)
        tree = repo.open_index().commit(repo.object_store)
        parent = repo.refs[ref] if ref in repo.refs else None
        if parent is not None:
            tip = repo[parent]
            if isinstance(tip, Commit) and tip.tree == tree:
                return parent.decode()
        # Hooks and signing come from the clone's or the user's git config: a build must not run or need them.
        sha = porcelain.commit(repo, message=message.encode(), author=identity, committer=identity,
                               author_timestamp=when, commit_timestamp=when, author_timezone=0,
                               commit_timezone=0, no_verify=True, sign=False, signoff=False)
    return sha.decode()


@contextmanager
def _remote_errors(shown: str, token: str | None, timeout_s: float, branch: str, action: str) -> Iterator[None]:
    """dulwich's and the network's errors as pipeline errors: transient for the network and 5xx, else permanent."""
    try:
        yield
    except AddressRefused as exc:
        raise AddressRefused(f"cannot {action} {shown}: {exc}") from None
    except HTTPUnauthorized as exc:
        raise PermanentError(f"{shown} refused the credentials (HTTP 401): the token is missing, wrong "
                             f"or expired") from cause(exc, token)
    except NotGitRepository as exc:
        raise PermanentError(f"{shown} was not found (HTTP 404), or the token cannot see it") from cause(exc, token)
    except porcelain.DivergedBranches as exc:
        raise PermanentError(f"{shown} has commits on {branch!r} that the local branch does not have; "
                             f"not overwriting them") from cause(exc, token)
    except (ConnectionError, TimeoutError, HangupException, OSError) as exc:
        raise TransientError(f"cannot reach {shown}: {_reason(exc, token)}") from cause(exc, token)
    except (porcelain.Error, GitProtocolError, KeyError, ValueError) as exc:
        text = _reason(exc, token)
        if _TIMED_OUT.search(text):
            raise TransientError(f"git server for {shown} did not answer within {timeout_s:g}s") from None
        status = http_status(text)
        if status in (401, 403):
            raise PermanentError(f"{shown} refused the push (HTTP {status}): the token lacks write permission "
                                 f"on the repository") from cause(exc, token)
        if status == 429 or (status is not None and status >= 500) or (status is None and _TRANSIENT.search(text)):
            raise TransientError(f"git server unreachable or failing for {shown}: {text}") from cause(exc, token)
        raise PermanentError(f"cannot {action} {shown}: {text}") from cause(exc, token)


def push(repo_dir: Path, remote_url: str, *, token: str | None = None, branch: str = "main",
         policy: AddressPolicy | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Push `branch` of `repo_dir` to the same branch of `remote_url`, fast-forward only.

    The remote is held to `policy` (public addresses only when None) and to `timeout_s` per request."""
    ref = branch_ref(branch)
    shown = mask_url(remote_url)
    try:
        with Repo(str(repo_dir)) as repo:
            if ref not in repo.refs:
                raise PermanentError(f"the repository to push has no commit on branch {branch!r}")
    except NotGitRepository as exc:
        raise PermanentError("the repository to push is not a git repository") from exc
    with _remote_errors(shown, token, timeout_s, branch, "push to"):
        kwargs = transport_kwargs(remote_url, policy=policy or AddressPolicy(), timeout_s=timeout_s, token=token)
        result = porcelain.push(str(repo_dir), remote_url, [ref + b":" + ref], outstream=io.BytesIO(),
                                errstream=io.BytesIO(), **kwargs)
    # A server that refuses one ref (a hook, a protected branch) still answers 200: the refusal is per ref.
    refused = {name.decode(errors="replace"): why for name, why in (result.ref_status or {}).items() if why}
    if refused:
        detail = mask_secrets(mask_url(", ".join(f"{name}: {why}" for name, why in refused.items())), [token])
        raise PermanentError(f"{shown} rejected the push: {detail}")


def fetch_branch(repo_dir: Path, remote_url: str, *, token: str | None = None, branch: str = "main",
                 policy: AddressPolicy | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> str | None:
    """Make `branch` of `repo_dir` the remote's `branch`, so the next commit_tree goes on top of it; the sha, or
    None when the remote has no such branch (a new, empty repository).

    Only the branch's objects are fetched, nothing is checked out: commit_tree commits the working tree as it is,
    so files the remote has and the tree has not are deleted by that commit. Initialises `repo_dir` if need be."""
    ref = branch_ref(branch)
    shown = mask_url(remote_url)
    repo_dir.mkdir(parents=True, exist_ok=True)
    with _remote_errors(shown, token, timeout_s, branch, "fetch from"):
        kwargs = transport_kwargs(remote_url, policy=policy or AddressPolicy(), timeout_s=timeout_s, token=token)
        client, path = get_transport_and_path(remote_url, **kwargs)
        with Repo(str(repo_dir)) if (repo_dir / ".git").exists() else Repo.init(str(repo_dir)) as repo:

            def wants(refs: Mapping[Ref, ObjectID], depth: int | None = None) -> list[ObjectID]:
                return [refs[ref]] if refs.get(ref) else []

            result = client.fetch(path.encode() if isinstance(path, str) else path, repo, determine_wants=wants)
            tip = result.refs.get(ref)
            if not tip:
                return None
            repo.refs[ref] = tip
            return tip.decode()
