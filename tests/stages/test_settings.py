"""Pure tier: the settings model reads the service's environment variables and writes them for a worker."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from pipeline.settings import Settings

DEFAULTS = Settings()


def declared_names(field: FieldInfo) -> list[str]:
    choices = getattr(field.validation_alias, "choices", None)
    assert choices, "each field names its environment variables"
    return [str(name) for name in choices]


def other_value(name: str, field: FieldInfo) -> Any:
    """A value of the field's type that is not its default (and that the field keeps as given)."""
    default, kind = getattr(DEFAULTS, name), field.annotation
    if kind is bool:
        return not default
    if kind is float:
        return default + 1.25
    if kind is int:
        return default + 7
    if kind == int | None:
        return 384
    if kind in (str, str | None):
        return f"x-{name}"
    if kind == tuple[str, ...]:
        return ("k1", "k2")
    if kind == Literal["text", "json"]:
        return "json"
    raise AssertionError(f"no test value for {name}: {kind}; add one here")


FIELDS = sorted(Settings.model_fields)
ALL_NAMES = [n for f in Settings.model_fields.values() for n in declared_names(f)]


@pytest.mark.parametrize("name", FIELDS)
def test_every_field_survives_the_round_trip_through_the_environment(name: str) -> None:
    value = other_value(name, Settings.model_fields[name])
    assert value != getattr(DEFAULTS, name)
    settings = Settings(**{name: value})
    back = Settings.from_env(settings.to_env())
    assert getattr(back, name) == value
    assert back == settings


def test_all_fields_changed_at_once_survive_the_round_trip() -> None:
    settings = Settings(**{name: other_value(name, f) for name, f in Settings.model_fields.items()})
    assert Settings.from_env(settings.to_env()) == settings


def test_to_env_writes_each_fields_first_name_and_nothing_unset() -> None:
    first = {declared_names(f)[0] for f in Settings.model_fields.values()}
    env = DEFAULTS.to_env()
    assert set(env) <= first
    assert "REPOBUILD_REDIS_URL" not in env and "GITHUB_TOKEN" not in env and "REPOBUILD_API_KEYS" not in env
    assert env["REPOBUILD_PORT"] == "8080" and env["KEEP_TMP_FILES"] == "0"
    assert Settings(api_keys=("a", "b"), skip_embeddings=True).to_env()["REPOBUILD_API_KEYS"] == "a,b"


def test_every_variable_name_is_declared_once() -> None:
    assert len(ALL_NAMES) == len(set(ALL_NAMES))


@pytest.mark.parametrize(("variable", "text", "field", "expected"), [
    ("TEMP_DIR", "/srv/tmp", "temp_dir", "/srv/tmp"),
    ("PORT", "9000", "port", 9000),
    ("GITHUB_TOKEN", "ghp_x", "github_token", "ghp_x"),
    ("OPENAI_API_KEY", "sk-x", "openai_api_key", "sk-x"),
    ("OPENAI_BASE_URL", "http://llm/v1", "openai_base_url", "http://llm/v1"),
    ("SKIP_EMBEDDINGS", "1", "skip_embeddings", True),
    ("KEEP_TMP_FILES", "true", "keep_tmp_files", True),
    ("R2_ACCESS_KEY_ID", "ak", "s3_access_key_id", "ak"),
    ("R2_SECRET_ACCESS_KEY", "sk", "s3_secret_access_key", "sk"),
    ("R2_BUCKET_NAME", "bundles", "s3_bucket", "bundles"),
    ("R2_ACCOUNT_ID", "acc1", "s3_endpoint_url", "https://acc1.r2.cloudflarestorage.com"),
    ("R2_ACCOUNT_ID", "acc1", "s3_region", "auto"),
    ("REPOBUILD_PUBLISH_TARGET", "s3://b/sites/x/", "s3_bucket", "b"),
    ("REPOBUILD_PUBLISH_TARGET", "s3://b/sites/x/", "s3_prefix", "sites/x"),
])
def test_the_originals_names_are_read(variable: str, text: str, field: str, expected: object) -> None:
    assert getattr(Settings.from_env({variable: text}), field) == expected


@pytest.mark.parametrize(("ours", "theirs", "field"), [
    ("REPOBUILD_TEMP_DIR", "TEMP_DIR", "temp_dir"),
    ("REPOBUILD_PORT", "PORT", "port"),
    ("REPOBUILD_OPENAI_BASE_URL", "OPENAI_BASE_URL", "openai_base_url"),
    ("REPOBUILD_S3_ACCESS_KEY_ID", "R2_ACCESS_KEY_ID", "s3_access_key_id"),
    ("REPOBUILD_S3_SECRET_ACCESS_KEY", "R2_SECRET_ACCESS_KEY", "s3_secret_access_key"),
    ("REPOBUILD_S3_BUCKET", "R2_BUCKET_NAME", "s3_bucket"),
])
def test_repobuild_spelling_wins_and_an_empty_one_counts_as_unset(ours: str, theirs: str, field: str) -> None:
    assert getattr(Settings.from_env({ours: "1", theirs: "2"}), field) in ("1", 1)
    assert getattr(Settings.from_env({ours: "", theirs: "2"}), field) in ("2", 2)


def test_derived_defaults_follow_the_explicit_values() -> None:
    tmp = Settings.from_env({"TEMP_DIR": "/srv/t"})
    assert tmp.artifacts == "/srv/t/repobuild/artifacts"
    own = Settings.from_env({"R2_ACCOUNT_ID": "acc", "REPOBUILD_S3_ENDPOINT_URL": "http://127.0.0.1:9000"})
    assert (own.s3_endpoint_url, own.s3_region) == ("http://127.0.0.1:9000", None)
    assert Settings.from_env({"R2_ACCOUNT_ID": "acc", "REPOBUILD_S3_REGION": "eu"}).s3_region == "eu"
    both = Settings.from_env({"REPOBUILD_PUBLISH_TARGET": "s3://a/x", "REPOBUILD_S3_PREFIX": "/y/"})
    assert (both.s3_bucket, both.s3_prefix) == ("a", "y")


@pytest.mark.parametrize(("env", "variable", "raw"), [
    ({"REPOBUILD_PORT": "abc"}, "REPOBUILD_PORT", "abc"),
    ({"PORT": "eighty"}, "PORT", "eighty"),
    ({"REPOBUILD_TASK_BUDGET_S": "fast"}, "REPOBUILD_TASK_BUDGET_S", "fast"),
    ({"REPOBUILD_UPLOAD_BATCH": "nan"}, "REPOBUILD_UPLOAD_BATCH", "nan"),
    ({"REPOBUILD_OPENAI_DIMENSIONS": "1,5"}, "REPOBUILD_OPENAI_DIMENSIONS", "1,5"),
])
def test_an_invalid_number_names_its_variable(env: dict[str, str], variable: str, raw: str) -> None:
    with pytest.raises(ValueError) as caught:
        Settings.from_env(env)
    assert str(caught.value) == f"{variable} must be a number, got {raw!r}"


def test_every_invalid_variable_is_reported_at_once() -> None:
    with pytest.raises(ValueError, match="^REPOBUILD_PORT must .*; REPOBUILD_UPLOAD_BATCH must be a number, got 'x'$"):
        Settings.from_env({"REPOBUILD_PORT": "x", "REPOBUILD_UPLOAD_BATCH": "x"})


@pytest.mark.parametrize(("text", "expected"), [
    ("1", True), ("true", True), ("TRUE", True), (" yes ", True), ("On", True),
    ("0", False), ("false", False), ("no", False), ("off", False), ("maybe", False), ("", False), (" ", False),
])
def test_flags_parse_as_before(text: str, expected: bool) -> None:
    for variable, field in (("REPOBUILD_SKIP_EMBEDDINGS", "skip_embeddings"), ("KEEP_TMP_FILES", "keep_tmp_files"),
                            ("REPOBUILD_ALLOW_PRIVATE_IMAGE_URLS", "allow_private_image_urls")):
        assert getattr(Settings.from_env({variable: text}), field) is expected


def test_lists_numbers_and_text_parse_as_before() -> None:
    assert Settings.from_env({"REPOBUILD_API_KEYS": " a, b ,,c "}).api_keys == ("a", "b", "c")
    assert Settings.from_env({"REPOBUILD_API_KEYS": '["a"]'}).api_keys == ('["a"]',)  # commas, not JSON
    assert Settings.from_env({"REPOBUILD_API_KEYS": ","}).api_keys == ()
    whole = Settings.from_env({"REPOBUILD_PARSE_BATCH": "2.0", "REPOBUILD_EMBED_BATCH": "1e3", "PORT": "80.9"})
    assert (whole.parse_batch, whole.embed_batch, whole.port) == (2, 1000, 80)
    assert Settings.from_env({"REPOBUILD_LEASE_TTL_S": "2"}).lease_ttl_s == 2.0
    clamped = Settings.from_env({"REPOBUILD_UPLOAD_BATCH": "0", "REPOBUILD_S3_MULTIPART_THRESHOLD_MB": "1",
                                 "REPOBUILD_S3_MAX_CONCURRENCY": "-3", "REPOBUILD_OPENAI_DIMENSIONS": "0"})
    assert (clamped.upload_batch, clamped.s3_multipart_threshold_mb, clamped.s3_max_concurrency,
            clamped.openai_dimensions) == (1, 5, 1, None)
    text = Settings.from_env({"REPOBUILD_EMBED_PROVIDER": "OpenAI", "REPOBUILD_GITHUB_API_URL": "https://ghe/api/v3/",
                              "REPOBUILD_PUBLIC_BASE_URL": "https://cdn//", "REPOBUILD_S3_PREFIX": "/a/b/"})
    assert (text.embed_provider, text.github_api_url, text.public_base_url, text.s3_prefix) == (
        "openai", "https://ghe/api/v3", "https://cdn", "a/b")


def test_empty_variables_keep_the_defaults() -> None:
    assert Settings.from_env({name: "" for name in ALL_NAMES}) == Settings.from_env({})
    assert Settings.from_env({}) == DEFAULTS


def test_python_names_and_unknown_variables_are_not_read() -> None:
    assert Settings.from_env({"port": "1", "artifacts": "/x", "REPOBUILD_NOPE": "1"}) == DEFAULTS


def test_only_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPOBUILD_PORT", "9001")
    monkeypatch.setenv("REPOBUILD_ARTIFACTS", "/srv/art")
    assert Settings().port == 8080
    env = Settings.from_env()
    assert (env.port, env.artifacts) == (9001, "/srv/art")
    assert {"port", "artifacts"} <= env.model_fields_set


def test_fields_set_tell_an_explicit_variable_from_a_default() -> None:
    assert "artifacts" not in Settings.from_env({}).model_fields_set
    chosen = Settings.from_env({"REPOBUILD_ARTIFACTS": "/a"}).with_(redis_url="redis://x")
    assert {"artifacts", "redis_url"} <= chosen.model_fields_set
    assert (chosen.artifacts, chosen.redis_url) == ("/a", "redis://x")


def test_settings_are_immutable_and_copied_with_changes() -> None:
    with pytest.raises(ValidationError):
        DEFAULTS.port = 1
    changed = DEFAULTS.with_(port=1, callback_secret="s")
    assert (changed.port, changed.callback_secret, DEFAULTS.port) == (1, "s", 8080)
    assert hash(changed) != hash(DEFAULTS)
