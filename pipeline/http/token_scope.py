"""Which git token, if any, may go to a host: credentials only to the hosts they are meant for.

The service's own GITHUB_TOKEN goes only to the configured GitHub: the host of REPOBUILD_GITHUB_API_URL and
github.com. A caller's token goes only to the hosts the caller's job names (its source and push URLs) and to
that GitHub, which template jobs ask to create repositories. A job that brings a token of its own never has
the service's token sent for it.
"""

from __future__ import annotations

from typing import Protocol

from pipeline.http.address_policy import url_host
from pipeline.models import JobSpec
from pipeline.settings import Settings

PUSH_URL_OPTIONS = ("repoUrl", "remoteUrl")


def github_hosts(settings: Settings) -> frozenset[str]:
    api = url_host(settings.github_api_url)
    return frozenset({"github.com", *([api] if api else [])})


def job_hosts(spec: JobSpec) -> frozenset[str]:
    """The hosts of the URLs the job itself names: its source and where it pushes."""
    urls = [spec.source.url if spec.source else None, *(spec.options.get(name) for name in PUSH_URL_OPTIONS)]
    return frozenset(host for url in urls if isinstance(url, str) and (host := url_host(url)))


def token_for(url: str, *, job_token: str | None, spec: JobSpec, settings: Settings) -> str | None:
    """The token to send to `url`'s host, or None."""
    host = url_host(url)
    if host is None:
        return None
    github = github_hosts(settings)
    if job_token:
        return job_token if host in github or host in job_hosts(spec) else None
    return settings.github_token if host in github else None


class JobSecrets(Protocol):
    """What of a stage's context the choice needs (StageContext has it)."""

    spec: JobSpec
    settings: Settings

    def secret(self, name: str) -> str | None: ...


def git_token(ctx: JobSecrets, url: str) -> str | None:
    """The git token the job may send to `url`: its own (`git_token`) or the service's, each within its hosts."""
    return token_for(url, job_token=ctx.secret("git_token"), spec=ctx.spec, settings=ctx.settings)
