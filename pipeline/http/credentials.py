"""Credentials a caller puts in a job: split out at the edge, put back only where they are sent.

Everything a job's spec holds is readable — `GET /jobs/<id>`, its events, Flower, the Redis hash — so no
value stored there may carry a secret, whatever the URL scheme: the userinfo of `https://token@…`,
`ssh://user:pass@…`, `git://user:pass@…` or scp-like `user:pass@host:path`, and credential query parameters
(`?access_token=`, `?token=`, `?api_key=`, a presigned URL's signature). `split_url` is the one place that
knows these forms, and `split_spec` runs it over every field of a job (both API bodies and the CLI use it).
The original values go to the job's secrets under `original_key(field)`; only the code that sends a URL —
git clone and push, callback delivery — takes it back, with `restore`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit, urlunsplit

from pipeline.models import JobSpec

GIT_TOKEN = "git_token"
# httpx (and httpx2, the OpenAI SDK's copy) log every request's URL at INFO, urllib3 (dulwich's HTTP) at DEBUG,
# userinfo and query string included.
URL_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2", "urllib3")
# Where a token in an http(s) userinfo counts as the job's git token (sent as basic auth by git.py), in order:
# the clone URL (`data.repoInfo.path` too, when it is the source), then the push URLs.
GIT_URL_FIELDS = ("source", "options.repoUrl", "options.remoteUrl")

# Query (and fragment) parameter names that carry a credential, normalised by _normal().
_SECRET_NAMES = frozenset({"key", "sig", "pass", "pwd", "auth", "code", "credential", "credentials"})
_SECRET_SUFFIXES = ("token", "secret", "password", "passwd", "apikey", "signature", "credential")
_USERINFO = re.compile(r"(?<=://)[^/\s?#]*@")
_PARAM = re.compile(r"(?P<lead>[?&#;](?P<name>[^=&#;\s?]+)=)(?P<value>[^&#;\s'\"<>]*)")
_SCP = re.compile(r"^(?P<user>[^@/:\s]+):(?P<password>[^@/\s]+)@(?P<rest>[^:/\s]+:.*)$")


def _normal(name: str) -> str:
    return unquote(name).lower().replace("-", "").replace("_", "")


def is_credential_param(name: str) -> bool:
    """A query parameter like `access_token`, `X-Amz-Signature`, `api_key`, `sig`."""
    normal = _normal(name)
    return normal in _SECRET_NAMES or normal.endswith(_SECRET_SUFFIXES)


def is_credential_field(name: str) -> bool:
    """A request field like `gitToken`, `webhookSecret`, `apiKey`, `password` (stricter: `key` alone is a name)."""
    return _normal(name).endswith(_SECRET_SUFFIXES)


class SplitUrl(NamedTuple):
    url: str  # what may be stored and shown
    token: str | None  # an http(s) userinfo's credential: its password, else its user name (`https://tok@host`)
    is_url: bool = True  # False: `value` was text, masked where it named a URL's credentials


def split_url(value: str) -> SplitUrl:
    """`value` without its credentials: userinfo and credential parameters removed (nothing else is touched).

    http(s) loses its whole userinfo, since a user name alone is a token there; other schemes keep the user name
    (ssh's `git@`, an account, not a secret) and lose the password. A value that is not a URL is masked as text.
    """
    text = value.strip()
    scp = _SCP.match(text)
    if scp:
        return SplitUrl(f"{scp['user']}@{scp['rest']}", None)
    try:
        parts = urlsplit(text)
        _ = parts.port  # a malformed port raises ValueError: then this is text, not a URL
    except ValueError:
        return SplitUrl(mask_text(value), None, is_url=False)
    if not parts.scheme or not parts.netloc or any(c.isspace() for c in text):
        return SplitUrl(mask_text(value), None, is_url=False)
    userinfo, at, host = parts.netloc.rpartition("@")
    token = None
    if at:
        user, _, password = userinfo.partition(":")
        if parts.scheme.lower() in ("http", "https"):
            token, netloc = unquote(password or user) or None, host
        else:
            netloc = f"{user}@{host}" if user else host
    else:
        netloc = host
    query, fragment = _without_credentials(parts.query), _without_credentials(parts.fragment)
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return SplitUrl(value, None)
    return SplitUrl(urlunsplit((parts.scheme, netloc, parts.path, query, fragment)), token)


def _without_credentials(params: str) -> str:
    if "=" not in params:
        return params
    kept = [p for p in params.split("&") if not is_credential_param(p.partition("=")[0])]
    return "&".join(kept)


def mask_text(text: str) -> str:
    """`text` (an error message, a log line) with every URL's userinfo dropped and credential parameters `***`."""
    text = _USERINFO.sub("", text)
    return _PARAM.sub(lambda m: m["lead"] + "***" if is_credential_param(m["name"]) and m["value"] else m[0], text)


def original_key(field: str) -> str:
    """The job secret holding the value `field` (`callback_url`, `source`, `options.repoUrl`) had before the split."""
    return f"original:{field}"


def restore(stored: str, original: str | None) -> str:
    """The URL to send: the caller's original, if `stored` is still what splitting it gave; else `stored` as is."""
    if original and split_url(original).url == stored.strip():
        return original.strip()
    return stored


def split_spec(spec: JobSpec, token: str | None = None) -> tuple[JobSpec, dict[str, str]]:
    """`spec` without a credential in any field, and the job's secrets: the originals, and the git token.

    The git token is `token` (the request's token field), else the first token of an http(s) URL in
    GIT_URL_FIELDS. A field named like a credential (`webhookSecret`) is moved to the secrets whole.
    """
    found: dict[str, str] = {}
    url_tokens: dict[str, str] = {}

    def clean(field: str, value: Any) -> Any:
        if isinstance(value, dict):
            kept = {}
            for name, item in value.items():
                where = f"{field}.{name}"
                if isinstance(item, str) and item and is_credential_field(str(name)):
                    found[original_key(where)] = item
                else:
                    kept[name] = clean(where, item)
            return kept
        if isinstance(value, list):
            return [clean(f"{field}.{n}", item) for n, item in enumerate(value)]
        if not isinstance(value, str):
            return value
        split = split_url(value)
        if split.url != value and split.is_url:  # text is only masked: nothing sends it anywhere
            found[original_key(field)] = value
        if split.token:
            url_tokens[field] = split.token
        return split.url

    source = spec.source
    if source is not None and source.url:
        source = source.model_copy(update={"url": clean("source", source.url)})
    callback = clean("callback_url", spec.callback_url) if spec.callback_url else spec.callback_url
    options = clean("options", spec.options)
    git_token = token or next((url_tokens[f] for f in GIT_URL_FIELDS if f in url_tokens), None)
    if git_token:
        found[GIT_TOKEN] = git_token
    return spec.model_copy(update={"source": source, "callback_url": callback, "options": options}), found


class MaskCredentials(logging.Filter):
    """A handler filter: whatever a record says (message and traceback), URLs in it lose their credentials."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        return True


def keep_credentials_out_of_logs(handlers: Iterable[logging.Handler] = ()) -> None:
    """Hold the URL_LOGGERS at WARNING, and have each of `handlers` mask credentials in all it writes.

    The worker and the API call this when they set up logging; no request URL with credentials reaches a log.
    """
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(max(logging.WARNING, logger.level))
    for handler in handlers:
        if not any(isinstance(f, MaskCredentials) for f in handler.filters):
            handler.addFilter(MaskCredentials())
