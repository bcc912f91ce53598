"""Creating a repository from a GitHub template repository, and waiting until the new one can be cloned.

GitHub's REST endpoint `POST /repos/{owner}/{repo}/generate` answers 201 at once but fills the new
repository asynchronously: for a few seconds its git URL answers 404 or has no branch yet.
`wait_until_cloneable` polls it, bounded in time, before the caller clones or pushes.
The token is sent as a bearer token to the API and as basic auth to git, and is masked out of every message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import httpx
import tenacity
from dulwich.client import HTTPUnauthorized, get_transport_and_path
from dulwich.errors import GitProtocolError, NotGitRepository
from dulwich.refs import Ref

from pipeline.errors import PermanentError, TransientError
from pipeline.http.address_policy import AddressPolicy, AddressRefused
from pipeline.http.git_transport import DEFAULT_TIMEOUT_S, transport_kwargs
from pipeline.http.pinned import http_client
from pipeline.http.retry import retrying
from pipeline.sources.git import _reason, mask_secrets, mask_url
from pipeline.sources.git_write import branch_ref, cause, http_status

DEFAULT_API_BASE = "https://api.github.com"
API_VERSION = "2022-11-28"

_OWNER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_NAME = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class RepoRef:
    owner: str
    name: str

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass(frozen=True)
class GeneratedRepo:
    full_name: str
    clone_url: str
    html_url: str
    default_branch: str | None


def parse_repo_ref(text: str) -> RepoRef:
    """`owner/name` from `https://github.com/o/r`, `https://github.com/o/r.git`, `git@github.com:o/r.git` or `o/r`.

    Any host is accepted so that GitHub Enterprise URLs work; which API answers is `api_base`'s business.
    """
    raw = text.strip()
    if raw.startswith(("http://", "https://")):
        path = urlparse(raw).path
    elif re.match(r"[^/@:]+@[^:/]+:", raw):  # scp-like ssh form
        path = raw.split(":", 1)[1]
    else:
        path = raw
    parts = [p for p in path.split("/") if p]
    if len(parts) == 2:
        owner, name = parts[0], parts[1].removesuffix(".git")
        if _OWNER.fullmatch(owner) and _NAME.fullmatch(name) and name not in (".", ".."):
            return RepoRef(owner, name)
    raise PermanentError(f"{mask_url(raw)!r} is not a GitHub repository (expected https://github.com/owner/name "
                         f"or owner/name)")


def generate_from_template(template: str, name: str, *, token: str, owner: str | None = None,
                           description: str = "", private: bool = True, include_all_branches: bool = False,
                           api_base: str = DEFAULT_API_BASE, timeout: float = 30.0,
                           policy: AddressPolicy | None = None) -> GeneratedRepo:
    """Create `owner/name` from the template repository `template` (any form parse_repo_ref takes).

    `owner` defaults to the token's user. The new repository is not cloneable at once: see wait_until_cloneable.
    """
    source = parse_repo_ref(template)
    if not token:
        raise PermanentError("creating a repository from a template needs a GitHub token")
    body: dict[str, Any] = {"name": name, "description": description, "private": private,
                            "include_all_branches": include_all_branches}
    if owner:
        body["owner"] = owner
    url = f"{api_base.rstrip('/')}/repos/{source.owner}/{source.name}/generate"
    target = f"{owner or '(token owner)'}/{name}"
    what = f"creating {target} from template {source.full_name}"
    resp = _call("POST", url, token=token, api_base=api_base, timeout=timeout, body=body, policy=policy)
    if resp.status_code == 201:
        return _generated(resp, token)
    if resp.status_code == 404:
        raise PermanentError(f"template repository {source.full_name} not found, not marked as a template, "
                             f"or not visible to the token (HTTP 404)")
    raise _failure(resp, token, what)


def create_repository(name: str, *, token: str, owner: str | None = None, description: str = "",
                      private: bool = True, api_base: str = DEFAULT_API_BASE, timeout: float = 30.0,
                      policy: AddressPolicy | None = None) -> GeneratedRepo:
    """An empty repository `owner/name` (the token's user by default) to push a generated project to.

    Idempotent, as a retried stage needs: when the name exists already (our own earlier attempt, or a
    repository the user made for this), that repository is returned and the push decides the rest.
    """
    if not token:
        raise PermanentError(f"creating the repository {name} needs a GitHub token")
    base = api_base.rstrip("/")
    url = f"{base}/orgs/{owner}/repos" if owner else f"{base}/user/repos"
    body = {"name": name, "description": description, "private": private, "auto_init": False}
    what = f"creating the repository {owner or '(token owner)'}/{name}"
    resp = _call("POST", url, token=token, api_base=api_base, timeout=timeout, body=body, policy=policy)
    if resp.status_code == 201:
        return _generated(resp, token)
    if resp.status_code == 422 and "already exists" in _github_message(resp):
        login = owner or _login(token=token, api_base=api_base, timeout=timeout, policy=policy)
        found = _call("GET", f"{base}/repos/{login}/{name}", token=token, api_base=api_base, timeout=timeout,
                      policy=policy)
        if found.status_code == 200:
            return _generated(found, token)
    raise _failure(resp, token, what)


def _login(*, token: str, api_base: str, timeout: float, policy: AddressPolicy | None) -> str:
    resp = _call("GET", f"{api_base.rstrip('/')}/user", token=token, api_base=api_base, timeout=timeout,
                 policy=policy)
    if resp.status_code != 200:
        raise _failure(resp, token, "reading the token's user")
    login = resp.json().get("login") if isinstance(resp.json(), dict) else None
    if not isinstance(login, str) or not login:
        raise PermanentError("GitHub's /user answer has no login")
    return login


def _call(method: str, url: str, *, token: str, api_base: str, timeout: float, policy: AddressPolicy | None,
          body: dict[str, Any] | None = None) -> httpx.Response:
    """One GitHub API request; network trouble is transient, a malformed base URL permanent.

    Redirects are followed, each hop held to the address policy; httpx drops the token on a hop to another host."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
               "X-GitHub-Api-Version": API_VERSION}
    try:
        with http_client(policy or AddressPolicy(), timeout_s=timeout, follow_redirects=True) as client:
            return client.request(method, url, json=body, headers=headers)
    except AddressRefused as exc:
        raise AddressRefused(f"cannot call the GitHub API at {mask_url(api_base)}: {exc}") from None
    except httpx.UnsupportedProtocol as exc:
        raise PermanentError(f"GitHub API base {mask_url(api_base)!r} is not an http(s) URL") from exc
    except httpx.TransportError as exc:
        raise TransientError(f"cannot reach the GitHub API at {mask_url(api_base)}: {_reason(exc, token)}") \
            from cause(exc, token)
    except (httpx.RequestError, httpx.InvalidURL) as exc:
        raise PermanentError(f"cannot call the GitHub API at {mask_url(api_base)}: {_reason(exc, token)}") \
            from cause(exc, token)


def _failure(resp: httpx.Response, token: str, what: str) -> PermanentError | TransientError:
    """The error for a GitHub answer that is not a success: rate limits and 5xx are worth a retry."""
    said = mask_secrets(_github_message(resp), [token])
    status = resp.status_code
    if _rate_limited(resp, said):
        return TransientError(f"GitHub rate limit hit while {what} (HTTP {status}): {said}")
    if status in (401, 403):
        return PermanentError(f"GitHub refused {what} (HTTP {status}): the token lacks permission ({said})")
    if status == 422:
        return PermanentError(f"GitHub cannot do {what}: the name exists or is invalid (HTTP 422): {said}")
    if status >= 500:
        return TransientError(f"GitHub failed {what} (HTTP {status}): {said}")
    return PermanentError(f"GitHub answered HTTP {status} {what}: {said}")


def _generated(resp: httpx.Response, token: str) -> GeneratedRepo:
    try:
        data = resp.json()
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        fields = {key: data[key] for key in ("full_name", "clone_url", "html_url")}
    except (ValueError, KeyError) as exc:
        raise PermanentError(f"GitHub's answer to generate is not a repository: "
                             f"{mask_secrets(str(exc), [token])}") from None
    if not all(isinstance(v, str) and v for v in fields.values()):
        raise PermanentError("GitHub's answer to generate lacks full_name, clone_url or html_url")
    branch = data.get("default_branch")
    return GeneratedRepo(full_name=fields["full_name"], clone_url=fields["clone_url"], html_url=fields["html_url"],
                         default_branch=branch if isinstance(branch, str) and branch else None)


def _github_message(resp: httpx.Response) -> str:
    """GitHub's `message` plus each of its `errors`, which is where a 422 says what was wrong."""
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:300] or resp.reason_phrase
    if not isinstance(data, dict):
        return str(data)[:300]
    parts = [str(data.get("message") or resp.reason_phrase)]
    for err in data.get("errors") or []:
        detail = err.get("message") or err.get("code") if isinstance(err, dict) else err
        if detail:
            parts.append(str(detail))
    return ": ".join(parts)


def _rate_limited(resp: httpx.Response, said: str) -> bool:
    # GitHub answers its primary and secondary rate limits with 403 (or 429), which waiting does cure.
    if resp.status_code == 429:
        return True
    return resp.status_code == 403 and (resp.headers.get("x-ratelimit-remaining") == "0"
                                        or "retry-after" in resp.headers or "rate limit" in said.lower())


class _NotYet(TransientError):
    """What the new repository still lacks."""


def wait_until_cloneable(clone_url: str, *, token: str | None = None, branch: str | None = None,
                         timeout: float = 60.0, interval: float = 1.0, policy: AddressPolicy | None = None,
                         request_timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Poll `clone_url` until it has `branch` (or, without one, any commit); returns that commit's sha.

    404, an empty repository, a 5xx or a network failure mean "not yet" until `timeout` seconds have passed,
    then TransientError, so a stage retries later rather than failing the job. 401 and 403 are permanent at once.
    A poll, not a retry of a failed request: GitHub answered, the repository is only not filled yet.
    """
    shown = mask_url(clone_url)
    want = branch_ref(branch) if branch else None
    try:
        kwargs = transport_kwargs(clone_url, policy=policy or AddressPolicy(), timeout_s=request_timeout_s,
                                  token=token)
    except AddressRefused as exc:
        raise AddressRefused(f"cannot reach {shown}: {exc}") from None

    def look() -> str:
        try:
            client, path = get_transport_and_path(clone_url, **kwargs)
            refs = client.get_refs(path.encode()).refs
        except HTTPUnauthorized as exc:
            raise PermanentError(f"{shown} refused the credentials (HTTP 401)") from cause(exc, token)
        except NotGitRepository:
            waiting_for = "the repository (HTTP 404)"
        except (GitProtocolError, OSError) as exc:
            text = _reason(exc, token)
            if http_status(text) == 403:
                raise PermanentError(f"{shown} refused access (HTTP 403): the token lacks permission") \
                    from cause(exc, token)
            waiting_for = f"a working server ({text})"
        else:
            heads = {ref: sha for ref, sha in refs.items() if sha and ref.startswith(b"refs/heads/")}
            if want is not None and heads.get(want):
                return heads[want].decode()
            if want is None and heads:
                head = refs.get(Ref(b"HEAD"))
                return (head or heads[min(heads)]).decode()
            waiting_for = f"branch {branch!r}" if branch else "a first commit"
        # raised here, outside the except blocks, so no unmasked dulwich error is chained to it
        raise _NotYet(waiting_for)

    try:
        return retrying(within_s=timeout, wait=tenacity.wait_fixed(interval), on=_NotYet)(look)
    except AddressRefused as exc:  # a redirect, or the name resolving, into a refused address
        raise AddressRefused(f"cannot reach {shown}: {exc}") from None
    except _NotYet as exc:
        raise TransientError(f"{shown} is not cloneable after {timeout:g}s: still waiting for {exc}") from None
