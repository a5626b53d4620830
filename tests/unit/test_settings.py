"""Settings: every environment variable is read under its name, invalid values are refused
with one line naming the variable, and the model catalog can be re-priced and extended."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import AliasChoices

from vidbatch.domain.catalog import default_catalog
from vidbatch.exceptions import ConfigError
from vidbatch.settings import BASE_URL_VARS, Settings, load_settings


def _all_env_names() -> set[str]:
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        assert isinstance(alias, AliasChoices)
        names.update(str(c) for c in alias.choices)
    return names


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No setting leaks in from the environment the tests run in."""
    for name in _all_env_names():
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _set(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


# Every variable, a non-default value, and what the settings object must hold for it.
ORIGINAL_ENV: dict[str, tuple[str, str, Any]] = {
    "DATABASE_URL": (
        "postgresql://u@db.example/vb",
        "database_url",
        "postgresql://u@db.example/vb",
    ),
    "INTERNAL_WORKER_SECRET": ("s3cret", "internal_worker_secret", "s3cret"),
    "BATCH_WORKER_MAX_CLAIM": ("7", "worker_max_claim", 7),
    "BATCH_WORKER_MAX_START_TASKS_PER_BATCH": ("11", "worker_max_start_tasks_per_batch", 11),
    "BATCH_WORKER_MAX_POLL": ("26", "worker_max_poll", 26),
    "BATCH_WORKER_MAX_SETTLE": ("12", "worker_max_settle", 12),
    "BATCH_MAX_POLL_COUNT": ("21", "max_poll_count", 21),
    "BATCH_TASK_CONCURRENCY": ("4", "task_concurrency", 4),
    "ENTERPRISE_WEBHOOK_RETRIES": ("0", "webhook_retries", 0),
    "ENTERPRISE_WEBHOOK_TIMEOUT_MS": ("2500", "webhook_timeout_ms", 2500),
    "ENTERPRISE_WEBHOOK_SECRET": ("whsec_x", "webhook_secret", "whsec_x"),
    "GRSAI_API_KEY": ("sk-abc", "grsai_api_key", "sk-abc"),
    "GRSAI_HOST": ("https://grsai.example/", "grsai_host", "https://grsai.example"),
    "NEXT_PUBLIC_SITE_URL": ("https://a.example", "next_public_site_url", "https://a.example"),
    "SITE_URL": ("https://b.example", "site_url", "https://b.example"),
    "NEXT_PUBLIC_APP_URL": ("https://c.example", "next_public_app_url", "https://c.example"),
    "APP_URL": ("https://d.example", "app_url", "https://d.example"),
    "ENTERPRISE_BATCH_MAX_ITEMS": ("500", "max_items", 500),
}

OWN_ENV: dict[str, tuple[str, str, Any]] = {
    "VIDBATCH_PROVIDER_CONNECT_TIMEOUT": ("2.5", "provider_connect_timeout", 2.5),
    "VIDBATCH_PROVIDER_READ_TIMEOUT": ("12", "provider_read_timeout", 12.0),
    "VIDBATCH_MAX_BODY_BYTES": ("1024", "max_body_bytes", 1024),
    "VIDBATCH_DEFAULT_RATE_LIMIT": ("90", "default_rate_limit_per_min", 90),
    "VIDBATCH_READ_RATE_LIMIT": ("120", "read_rate_limit_per_min", 120),
    "VIDBATCH_ALLOW_PRIVATE_WEBHOOKS": ("true", "allow_private_webhooks", True),
    "VIDBATCH_ADMIN_TOKEN": ("t" * 32, "admin_token", "t" * 32),
    "VIDBATCH_METRICS_TOKEN": ("m" * 40, "metrics_token", "m" * 40),
    "VIDBATCH_CALLBACK_SECRET": ("cb", "callback_secret", "cb"),
    "VIDBATCH_SECRET_KEY": ("k" * 32, "secret_key", "k" * 32),
    "VIDBATCH_SECRET_KEY_PREVIOUS": ("p" * 40, "secret_key_previous", "p" * 40),
    "VIDBATCH_CONFIRM_CALLBACKS": ("false", "confirm_callbacks", False),
    "VIDBATCH_AMBIGUOUS_SUBMIT": ("retry", "ambiguous_submit", "retry"),
    "VIDBATCH_PROVIDER_MAX_INFLIGHT": ("8", "provider_max_inflight", 8),
    "VIDBATCH_LEASE_SECONDS": ("90", "lease_seconds", 90),
    "VIDBATCH_SUBMIT_MAX_ATTEMPTS": ("3", "submit_max_attempts", 3),
    "VIDBATCH_MAX_WAIT_SECONDS": ("600", "max_wait_seconds", 600),
    "VIDBATCH_CALLBACK_GRACE_SECONDS": ("30", "callback_grace_seconds", 30.0),
    "VIDBATCH_POLL_INTERVALS": ("1,2,3", "poll_intervals", "1,2,3"),
    "VIDBATCH_REQUIRE_HTTPS_VIDEO_URL": ("0", "require_https_video_url", False),
    "VIDBATCH_WORKER_IDLE_SECONDS": ("0.5", "worker_idle_seconds", 0.5),
    "VIDBATCH_LOG_FORMAT": ("json", "log_format", "json"),
    "VIDBATCH_LOG_LEVEL": ("DEBUG", "log_level", "DEBUG"),
    "VIDBATCH_SHUTDOWN_GRACE_SECONDS": ("5", "shutdown_grace_seconds", 5.0),
    "VIDBATCH_ACCESS_LOG": ("0", "access_log", False),
    "VIDBATCH_MODEL_CATALOG": (
        '{"sora-2": {"price_credits": 12}}',
        "model_catalog",
        '{"sora-2": {"price_credits": 12}}',
    ),
    "VIDBATCH_RESULT_STORE": ("s3://videos/out", "result_store", "s3://videos/out"),
    "VIDBATCH_RESULT_URL_TTL_SECONDS": ("3600", "result_url_ttl_seconds", 3600),
    "VIDBATCH_RESULT_PUBLIC_BASE_URL": (
        "https://cdn.example/",
        "result_public_base_url",
        "https://cdn.example",
    ),
    "VIDBATCH_ARCHIVE_DEADLINE_SECONDS": ("600", "archive_deadline_seconds", 600),
    "VIDBATCH_ARCHIVE_TIMEOUT_SECONDS": ("120", "archive_timeout_seconds", 120.0),
    "VIDBATCH_ARCHIVE_MAX_BYTES": ("1000000", "archive_max_bytes", 1_000_000),
    "VIDBATCH_ALLOW_PRIVATE_URLS": ("1", "allow_private_urls", True),
    "VIDBATCH_RESULT_RETENTION_DAYS": ("0", "result_retention_days", 0),
    "AWS_ENDPOINT_URL": ("http://127.0.0.1:9000", "aws_endpoint_url", "http://127.0.0.1:9000"),
    "AWS_ACCESS_KEY_ID": ("AKIDEXAMPLE", "aws_access_key_id", "AKIDEXAMPLE"),
    "AWS_SECRET_ACCESS_KEY": ("secret", "aws_secret_access_key", "secret"),
    "AWS_REGION": ("eu-west-1", "aws_region", "eu-west-1"),
}


def test_every_variable_is_known_to_the_settings() -> None:
    aliases = {"BATCH_CLAIM_LIMIT"}
    assert set(ORIGINAL_ENV) | set(OWN_ENV) | aliases == _all_env_names()


def test_defaults_without_environment() -> None:
    s = load_settings()
    assert s.database_url == "sqlite:///vidbatch.db"
    assert s.worker_max_claim == 5
    assert s.task_concurrency == 3
    assert s.ambiguous_submit == "fail"
    assert s.public_base_url is None
    assert s.poll_schedule == (5.0, 15.0, 30.0)
    assert s.catalog.get("sora-2").price_credits == 10  # type: ignore[union-attr]


def test_every_original_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, {name: raw for name, (raw, _, _) in ORIGINAL_ENV.items()})
    s = load_settings()
    for name, (_, attr, expected) in ORIGINAL_ENV.items():
        assert getattr(s, attr) == expected, name


def test_every_vidbatch_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, {name: raw for name, (raw, _, _) in OWN_ENV.items()})
    s = load_settings()
    for name, (_, attr, expected) in OWN_ENV.items():
        assert getattr(s, attr) == expected, name
    assert s.poll_schedule == (1.0, 2.0, 3.0)
    assert s.catalog.get("sora-2").price_credits == 12  # type: ignore[union-attr]


def test_batch_claim_limit_is_an_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_CLAIM_LIMIT", "9")
    assert load_settings().worker_max_claim == 9


def test_primary_claim_name_wins_over_the_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, {"BATCH_CLAIM_LIMIT": "9", "BATCH_WORKER_MAX_CLAIM": "4"})
    assert load_settings().worker_max_claim == 4


def test_overrides_by_field_name_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite:///from-env.db")
    assert load_settings(database_url="sqlite:///cli.db").database_url == "sqlite:///cli.db"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BATCH_TASK_CONCURRENCY", "abc"),
        ("BATCH_TASK_CONCURRENCY", "0"),
        ("BATCH_TASK_CONCURRENCY", "-3"),
        ("BATCH_WORKER_MAX_CLAIM", "1.5"),
        ("BATCH_CLAIM_LIMIT", "0"),
        ("ENTERPRISE_WEBHOOK_RETRIES", "-1"),
        ("DATABASE_URL", "mysql://x"),
        ("DATABASE_URL", "not a url"),
        ("DATABASE_URL", "sqlite://"),
        ("DATABASE_URL", ""),
        ("VIDBATCH_AMBIGUOUS_SUBMIT", "maybe"),
        ("VIDBATCH_LOG_FORMAT", "xml"),
        ("VIDBATCH_ALLOW_PRIVATE_WEBHOOKS", "perhaps"),
        ("VIDBATCH_POLL_INTERVALS", "5,15"),
        ("VIDBATCH_POLL_INTERVALS", "5,0,30"),
        ("VIDBATCH_POLL_INTERVALS", "a,b,c"),
        ("VIDBATCH_PROVIDER_READ_TIMEOUT", "0"),
        ("GRSAI_HOST", "grsai.example"),
        ("SITE_URL", "ftp://example.com"),
        ("VIDBATCH_MODEL_CATALOG", "{not json"),
        # every numeric limit has an upper bound too (an INTEGER column, a timedelta)
        ("VIDBATCH_DEFAULT_RATE_LIMIT", "2147483648"),
        ("VIDBATCH_DEFAULT_RATE_LIMIT", "1000001"),
        ("VIDBATCH_MAX_WAIT_SECONDS", "-5"),
        ("VIDBATCH_MAX_WAIT_SECONDS", "100000000000"),
        ("ENTERPRISE_BATCH_MAX_ITEMS", "1000000000000"),
        ("ENTERPRISE_WEBHOOK_RETRIES", "9999999999"),
        ("VIDBATCH_LEASE_SECONDS", "99999999999"),
        ("BATCH_MAX_POLL_COUNT", "2147483648"),
        ("VIDBATCH_PROVIDER_READ_TIMEOUT", "inf"),
        ("VIDBATCH_CALLBACK_GRACE_SECONDS", "nan"),
        ("VIDBATCH_WORKER_IDLE_SECONDS", "1e300"),
        ("VIDBATCH_POLL_INTERVALS", "nan,1,1"),
        ("VIDBATCH_POLL_INTERVALS", "inf,1,1"),
        ("VIDBATCH_ADMIN_TOKEN", "a"),
        ("VIDBATCH_ADMIN_TOKEN", "x" * 31),
        ("VIDBATCH_METRICS_TOKEN", "short"),
        # the archive: a store that is none, a deadline not well under the provider's 2 h
        ("VIDBATCH_RESULT_STORE", "ftp://host/dir"),
        ("VIDBATCH_RESULT_STORE", "s3://"),
        ("VIDBATCH_RESULT_STORE", "file://host/dir"),
        ("VIDBATCH_ARCHIVE_DEADLINE_SECONDS", "7200"),
        ("VIDBATCH_ARCHIVE_DEADLINE_SECONDS", "3601"),
        ("VIDBATCH_ARCHIVE_DEADLINE_SECONDS", "0"),
        ("VIDBATCH_RESULT_URL_TTL_SECONDS", "604801"),
        ("VIDBATCH_ARCHIVE_MAX_BYTES", "0"),
        ("VIDBATCH_RESULT_RETENTION_DAYS", "-1"),
        ("VIDBATCH_RESULT_PUBLIC_BASE_URL", "cdn.example"),
        ("AWS_ENDPOINT_URL", "minio:9000"),
    ],
)
def test_invalid_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = err.value.message
    assert "\n" not in message
    # BATCH_CLAIM_LIMIT is reported under the primary name of the setting it feeds.
    shown = "BATCH_WORKER_MAX_CLAIM" if name == "BATCH_CLAIM_LIMIT" else name
    assert message.startswith(f"{shown}: "), message
    assert len(message) > len(shown) + 2
    assert str(err.value) == message


def test_a_short_admin_token_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VIDBATCH_ADMIN_TOKEN", "a")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert err.value.message.startswith("VIDBATCH_ADMIN_TOKEN: must be at least 32 characters")


@pytest.mark.parametrize("name", ["VIDBATCH_ADMIN_TOKEN", "VIDBATCH_METRICS_TOKEN"])
def test_an_empty_token_means_unset(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "  ")
    s = load_settings()
    assert s.admin_token is None and s.metrics_token is None


def test_public_base_url_takes_the_first_non_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    urls = {
        "NEXT_PUBLIC_SITE_URL": "https://one.example/",
        "SITE_URL": "https://two.example//",
        "NEXT_PUBLIC_APP_URL": "https://three.example/base/",
        "APP_URL": "https://four.example",
    }
    expected = {
        "NEXT_PUBLIC_SITE_URL": "https://one.example",
        "SITE_URL": "https://two.example",
        "NEXT_PUBLIC_APP_URL": "https://three.example/base",
        "APP_URL": "https://four.example",
    }
    assert tuple(urls) == BASE_URL_VARS
    # Drop the leading variables one by one (set empty, or unset): the next one wins.
    for i, winner in enumerate(BASE_URL_VARS):
        for name in BASE_URL_VARS:
            monkeypatch.delenv(name, raising=False)
        for j, name in enumerate(BASE_URL_VARS):
            if j < i:
                monkeypatch.setenv(name, "" if j % 2 == 0 else "   ")
            else:
                monkeypatch.setenv(name, urls[name])
        assert load_settings().public_base_url == expected[winner], winner


def test_public_base_url_from_the_last_variable_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_URL", "http://localhost:3000/")
    assert load_settings().public_base_url == "http://localhost:3000"


def test_public_base_url_unset_or_empty_means_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in BASE_URL_VARS:
        monkeypatch.setenv(name, "")
    assert load_settings().public_base_url is None


def test_catalog_reprices_and_adds_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "VIDBATCH_MODEL_CATALOG",
        json.dumps(
            {
                "sora-2": {"price_credits": 12, "duration_prices": {"15": 18}},
                "veo-flash-4k": {
                    "family": "veo",
                    "provider_model": "veo3.1-fast-4k",
                    "price_credits": 90,
                },
            }
        ),
    )
    catalog = load_settings().catalog
    sora = catalog.get("sora-2")
    assert sora is not None
    assert (sora.price_for(10), sora.price_for(15), sora.price_for(None)) == (12, 18, 12)
    assert sora.provider_model == "sora-2" and sora.durations == (10, 15)  # kept
    new = catalog.get("veo-flash-4k")
    assert new is not None
    assert (new.family, new.provider_model, new.price_for(None)) == ("veo", "veo3.1-fast-4k", 90)
    # untouched models keep their defaults
    assert catalog.get("veo-pro") == default_catalog().get("veo-pro")
    assert set(default_catalog().names) < set(catalog.names)


def test_catalog_models_name_their_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "VIDBATCH_MODEL_CATALOG",
        json.dumps(
            {
                "clip-1": {
                    "family": "veo",
                    "provider_model": "clip-v1",
                    "price_credits": 7,
                    "provider": "clipworks",
                }
            }
        ),
    )
    catalog = load_settings().catalog
    assert {name: catalog.models[name].provider for name in catalog.names} == {
        "clip-1": "clipworks",
        "sora-2": "grsai",
        "veo-flash": "grsai",
        "veo-pro": "grsai",
    }


@pytest.mark.parametrize(
    "raw",
    [
        "[1, 2]",
        '{"sora-2": 5}',
        '{"sora-2": {"price": 5}}',
        '{"sora-2": {"price_credits": -1}}',
        '{"sora-2": {"price_credits": "ten"}}',
        '{"sora-2": {"price_credits": true}}',
        '{"sora-2": {"price_credits": 9.5}}',
        '{"x": {"family": "kling", "provider_model": "k", "price_credits": 1}}',
        '{"new-model": {"family": "veo", "price_credits": 1}}',
        '{"sora-2": {"provider": ""}}',
        '{"sora-2": {"provider": 7}}',
        '{"sora-2": {"provider": "a-provider-name-longer-than-32-chars"}}',
        # prices, durations and limits are whole numbers within their bounds
        '{"sora-2": {"price_credits": 100000000000000000000}}',
        '{"sora-2": {"price_credits": 1000001}}',
        '{"sora-2": {"duration_prices": {"15": -5}}}',
        '{"sora-2": {"duration_prices": {"15": 7.5}}}',
        '{"sora-2": {"duration_prices": {"15": true}}}',
        '{"sora-2": {"duration_prices": {"fifteen": 5}}}',
        '{"sora-2": {"durations": [10.5]}}',
        '{"sora-2": {"durations": [-10]}}',
        '{"sora-2": {"durations": "10"}}',
        '{"sora-2": {"default_duration": 12}}',
        '{"sora-2": {"max_wait_seconds": -1}}',
        '{"sora-2": {"max_wait_seconds": 0}}',
        '{"sora-2": {"max_wait_seconds": 1.5}}',
        '{"sora-2": {"max_wait_seconds": 100000000000}}',
        '{"sora-2": {"provider_model": ""}}',
        '{"%s": {"family": "veo", "provider_model": "m", "price_credits": 1}}' % ("m" * 65),
    ],
)
def test_bad_catalog_is_refused(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("VIDBATCH_MODEL_CATALOG", raw)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert err.value.message.startswith("VIDBATCH_MODEL_CATALOG: ")
    assert "\n" not in err.value.message


def test_result_store_defaults_beside_the_sqlite_file(tmp_path: Any) -> None:
    beside = load_settings(database_url=f"sqlite:///{tmp_path}/data/v.db").result_store_spec
    assert (beside.kind, beside.root) == ("local", tmp_path / "data" / "vidbatch-results")
    on_pg = load_settings(database_url="postgresql://u@h/db").result_store_spec
    assert on_pg.kind == "none"
    off = load_settings(result_store="none").result_store_spec
    assert not off.enabled
    s3 = load_settings(result_store="s3://bucket/a/b/").result_store_spec
    assert (s3.kind, s3.bucket, s3.prefix) == ("s3", "bucket", "a/b")
    gcs = load_settings(result_store="gs://media/v").result_store_spec
    assert (gcs.kind, gcs.bucket, gcs.prefix) == ("gcs", "media", "v")
    azure = load_settings(result_store="az://container").result_store_spec
    assert (azure.kind, azure.bucket, azure.prefix) == ("azure", "container", "")
    there = load_settings(result_store=f"file://{tmp_path}/r").result_store_spec
    assert (there.kind, there.root) == ("local", tmp_path / "r")
