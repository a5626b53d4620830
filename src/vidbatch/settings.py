"""Configuration: one settings object, built once by an entry point and passed in.

Every environment variable of the original system is read under its original name
(``BATCH_CLAIM_LIMIT`` is accepted as an alias of ``BATCH_WORKER_MAX_CLAIM``); vidbatch's
own variables start with ``VIDBATCH_``. Nothing else in the code reads ``os.environ``.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vidbatch.domain.archive import StoreSpec, parse_store_spec
from vidbatch.domain.catalog import Catalog, parse_catalog_overrides
from vidbatch.domain.limits import (
    MAX_ARCHIVE_DEADLINE,
    MAX_ITEMS,
    MAX_RATE_LIMIT_PER_MIN,
    MAX_RESULT_URL_TTL,
    MAX_WAIT_SECONDS,
)
from vidbatch.exceptions import ConfigError

#: Every count and limit read at start-up has an upper bound: what it feeds must stay inside
#: its column (INTEGER) or its arithmetic (timedelta, sleep), or a create answers 500.
INT32_MAX = 2**31 - 1
PositiveInt = Annotated[int, Field(gt=0, le=INT32_MAX)]
NonNegInt = Annotated[int, Field(ge=0, le=INT32_MAX)]
#: Seconds: finite (no inf or nan), above zero, at most a day.
Seconds = Annotated[float, Field(gt=0, le=86_400, allow_inf_nan=False)]

#: The shortest admin or metrics token accepted.
MIN_TOKEN_CHARS = 32

#: Variables whose first non-empty value is the public base URL (webhook mode when set).
BASE_URL_VARS = ("NEXT_PUBLIC_SITE_URL", "SITE_URL", "NEXT_PUBLIC_APP_URL", "APP_URL")


class Settings(BaseSettings):
    """Every setting vidbatch reads, with its environment variable and default."""

    model_config = SettingsConfigDict(
        populate_by_name=True, extra="ignore", frozen=True, case_sensitive=True
    )

    # --- storage -----------------------------------------------------------------------
    database_url: str = Field(
        "sqlite:///vidbatch.db",
        validation_alias=AliasChoices("DATABASE_URL"),
        description="sqlite:///path or postgresql://user@host/db; the async driver is chosen",
    )

    # --- worker (the original's names) -------------------------------------------------
    internal_worker_secret: str | None = Field(
        None,
        validation_alias=AliasChoices("INTERNAL_WORKER_SECRET"),
        description="secret the worker trigger must present in x-worker-secret",
    )
    worker_max_claim: PositiveInt = Field(
        5,
        validation_alias=AliasChoices("BATCH_WORKER_MAX_CLAIM", "BATCH_CLAIM_LIMIT"),
        description="batches per submit pass or --once round (BATCH_CLAIM_LIMIT is an alias)",
    )
    worker_max_start_tasks_per_batch: PositiveInt = Field(
        10,
        validation_alias=AliasChoices("BATCH_WORKER_MAX_START_TASKS_PER_BATCH"),
        description="tasks of one batch submitted per submit pass (or --once round)",
    )
    worker_max_poll: PositiveInt = Field(
        25,
        validation_alias=AliasChoices("BATCH_WORKER_MAX_POLL"),
        description="polls per poll pass (or --once round)",
    )
    worker_max_settle: PositiveInt = Field(
        10,
        validation_alias=AliasChoices("BATCH_WORKER_MAX_SETTLE"),
        description="batches settled per settle pass (or --once round)",
    )
    # The original's 20 polls end after about 9 minutes of 5/15/30 s backoff, shorter than
    # many real generations; 64 polls reach the 30-minute wall-clock limit first.
    max_poll_count: PositiveInt = Field(
        64,
        validation_alias=AliasChoices("BATCH_MAX_POLL_COUNT"),
        description="polls of one task before it fails with failure_type timeout",
    )
    task_concurrency: PositiveInt = Field(
        3,
        validation_alias=AliasChoices("BATCH_TASK_CONCURRENCY"),
        description="provider calls in flight per process",
    )

    # --- customer webhooks -------------------------------------------------------------
    webhook_retries: int = Field(
        3,
        ge=0,
        le=100,
        validation_alias=AliasChoices("ENTERPRISE_WEBHOOK_RETRIES"),
        description="retries of a failed customer webhook after the first attempt",
    )
    webhook_timeout_ms: int = Field(
        5000,
        gt=0,
        le=600_000,
        validation_alias=AliasChoices("ENTERPRISE_WEBHOOK_TIMEOUT_MS"),
        description="timeout of one customer webhook attempt",
    )
    webhook_secret: str | None = Field(
        None,
        validation_alias=AliasChoices("ENTERPRISE_WEBHOOK_SECRET"),
        description="fallback signing secret for keys without their own",
    )

    # --- provider ----------------------------------------------------------------------
    grsai_api_key: str | None = Field(
        None, validation_alias=AliasChoices("GRSAI_API_KEY"), description="GrsAI API key (sk-...)"
    )
    grsai_host: str = Field(
        "https://grsai.dakka.com.cn",
        validation_alias=AliasChoices("GRSAI_HOST"),
        description="GrsAI base URL; a trailing /v1 is stripped",
    )
    provider_connect_timeout: Seconds = Field(
        5.0,
        validation_alias=AliasChoices("VIDBATCH_PROVIDER_CONNECT_TIMEOUT"),
        description="seconds to connect to the provider",
    )
    provider_read_timeout: Seconds = Field(
        30.0,
        validation_alias=AliasChoices("VIDBATCH_PROVIDER_READ_TIMEOUT"),
        description="seconds to wait for the provider's answer",
    )

    # --- public base URL (webhook mode) ------------------------------------------------
    next_public_site_url: str | None = Field(
        None,
        validation_alias=AliasChoices("NEXT_PUBLIC_SITE_URL"),
        description="public base URL (first of four; webhook mode when any is set)",
    )
    site_url: str | None = Field(
        None, validation_alias=AliasChoices("SITE_URL"), description="public base URL (second)"
    )
    next_public_app_url: str | None = Field(
        None,
        validation_alias=AliasChoices("NEXT_PUBLIC_APP_URL"),
        description="public base URL (third)",
    )
    app_url: str | None = Field(
        None, validation_alias=AliasChoices("APP_URL"), description="public base URL (fourth)"
    )

    # --- API ---------------------------------------------------------------------------
    max_items: int = Field(
        10_000,
        gt=0,
        le=MAX_ITEMS,
        validation_alias=AliasChoices("ENTERPRISE_BATCH_MAX_ITEMS"),
        description="items allowed in one batch",
    )
    max_body_bytes: PositiveInt = Field(
        32 * 1024 * 1024,
        validation_alias=AliasChoices("VIDBATCH_MAX_BODY_BYTES"),
        description="largest request body accepted",
    )
    default_rate_limit_per_min: int = Field(
        60,
        gt=0,
        le=MAX_RATE_LIMIT_PER_MIN,
        validation_alias=AliasChoices("VIDBATCH_DEFAULT_RATE_LIMIT"),
        description="rate_limit_per_min of new API keys",
    )
    read_rate_limit_per_min: int = Field(
        600,
        gt=0,
        le=MAX_RATE_LIMIT_PER_MIN,
        validation_alias=AliasChoices("VIDBATCH_READ_RATE_LIMIT"),
        description="GET requests a key may make a minute (its rate_limit_per_min counts "
        "creates and cancels only)",
    )
    allow_private_webhooks: bool = Field(
        False,
        validation_alias=AliasChoices("VIDBATCH_ALLOW_PRIVATE_WEBHOOKS"),
        description="allow http and private/loopback webhook, reference and frame URLs "
        "(development only)",
    )
    admin_token: str | None = Field(
        None,
        validation_alias=AliasChoices("VIDBATCH_ADMIN_TOKEN"),
        description="bearer token of the admin API and dashboard (32 characters or more); "
        "unset disables them",
    )
    metrics_token: str | None = Field(
        None,
        validation_alias=AliasChoices("VIDBATCH_METRICS_TOKEN"),
        description="bearer token /metrics requires when set; unset leaves /metrics open",
    )
    secret_key: str | None = Field(
        None,
        validation_alias=AliasChoices("VIDBATCH_SECRET_KEY"),
        description="encrypts the stored webhook and callback secrets (32 characters or more); "
        "required on PostgreSQL, generated into <database>.key on SQLite if unset",
    )
    secret_key_previous: str | None = Field(
        None,
        validation_alias=AliasChoices("VIDBATCH_SECRET_KEY_PREVIOUS"),
        description="the former VIDBATCH_SECRET_KEY during a rotation (vidbatch secrets rotate)",
    )
    model_catalog: str | None = Field(
        None,
        validation_alias=AliasChoices("VIDBATCH_MODEL_CATALOG"),
        description="JSON overrides of the model catalog (prices, new models)",
    )

    # --- worker (vidbatch's own) -------------------------------------------------------
    callback_secret: str | None = Field(
        None,
        validation_alias=AliasChoices("VIDBATCH_CALLBACK_SECRET"),
        description="key of the per-task callback tokens; generated and stored if unset",
    )
    confirm_callbacks: bool = Field(
        True,
        validation_alias=AliasChoices("VIDBATCH_CONFIRM_CALLBACKS"),
        description="confirm a succeeded callback with the provider before trusting it",
    )
    ambiguous_submit: Literal["fail", "retry"] = Field(
        "fail",
        validation_alias=AliasChoices("VIDBATCH_AMBIGUOUS_SUBMIT"),
        description="a submit with unknown outcome: fail and refund, or submit again",
    )
    provider_max_inflight: NonNegInt = Field(
        0,
        validation_alias=AliasChoices("VIDBATCH_PROVIDER_MAX_INFLIGHT"),
        description="tasks running at the provider across all workers; 0 = unlimited",
    )
    lease_seconds: int = Field(
        60,
        gt=0,
        le=86_400,
        validation_alias=AliasChoices("VIDBATCH_LEASE_SECONDS"),
        description="how long a claim is held before another worker may take it over",
    )
    submit_max_attempts: PositiveInt = Field(
        5,
        validation_alias=AliasChoices("VIDBATCH_SUBMIT_MAX_ATTEMPTS"),
        description="transient submit failures before a task fails",
    )
    max_wait_seconds: int = Field(
        1800,
        gt=0,
        le=MAX_WAIT_SECONDS,
        validation_alias=AliasChoices("VIDBATCH_MAX_WAIT_SECONDS"),
        description="wall-clock limit of one generation (per-model values in the catalog)",
    )
    callback_grace_seconds: Seconds = Field(
        120.0,
        validation_alias=AliasChoices("VIDBATCH_CALLBACK_GRACE_SECONDS"),
        description="webhook mode: poll a task anyway when no callback came for this long",
    )
    poll_intervals: str = Field(
        "5,15,30",
        validation_alias=AliasChoices("VIDBATCH_POLL_INTERVALS"),
        description="seconds before the first poll, while poll_count<=3, then after",
    )
    require_https_video_url: bool = Field(
        True,
        validation_alias=AliasChoices("VIDBATCH_REQUIRE_HTTPS_VIDEO_URL"),
        description="a succeeded task needs an https video URL (off for local simulators)",
    )
    worker_idle_seconds: Seconds = Field(
        1.0,
        validation_alias=AliasChoices("VIDBATCH_WORKER_IDLE_SECONDS"),
        description="longest sleep of the worker loop when nothing is due",
    )
    shutdown_grace_seconds: Seconds = Field(
        20.0,
        validation_alias=AliasChoices("VIDBATCH_SHUTDOWN_GRACE_SECONDS"),
        description="on SIGTERM, how long in-flight provider calls may finish before they are "
        "abandoned (their tasks come back when their leases run out)",
    )

    # --- result archive ----------------------------------------------------------------
    result_store: str = Field(
        "",
        validation_alias=AliasChoices("VIDBATCH_RESULT_STORE"),
        description="where videos and thumbnails are archived: a directory (a path or "
        "file:///abs/path), s3://bucket/prefix (gs://, az:// too), or none; unset: "
        "vidbatch-results/ beside the SQLite file (none on PostgreSQL)",
    )
    result_url_ttl_seconds: int = Field(
        7 * 86_400,
        gt=0,
        le=MAX_RESULT_URL_TTL,
        validation_alias=AliasChoices("VIDBATCH_RESULT_URL_TTL_SECONDS"),
        description="life of a signed result link (re-signed at each read; S3 presigned "
        "URLs at most 7 days)",
    )
    result_public_base_url: str | None = Field(
        None,
        validation_alias=AliasChoices("VIDBATCH_RESULT_PUBLIC_BASE_URL"),
        description="plain URLs under this base instead of signed links (a CDN before the bucket)",
    )
    archive_deadline_seconds: int = Field(
        900,
        gt=0,
        le=MAX_ARCHIVE_DEADLINE,
        validation_alias=AliasChoices("VIDBATCH_ARCHIVE_DEADLINE_SECONDS"),
        description="how long after a video's success archiving is retried before giving "
        "up (well under the provider's 2 h)",
    )
    archive_timeout_seconds: Seconds = Field(
        300.0,
        validation_alias=AliasChoices("VIDBATCH_ARCHIVE_TIMEOUT_SECONDS"),
        description="time-out of one download and upload of a video",
    )
    archive_max_bytes: int = Field(
        2 * 1024**3,
        gt=0,
        le=1024**4,
        validation_alias=AliasChoices("VIDBATCH_ARCHIVE_MAX_BYTES"),
        description="largest video archived; a larger one is not stored",
    )
    allow_private_urls: bool = Field(
        False,
        validation_alias=AliasChoices("VIDBATCH_ALLOW_PRIVATE_URLS"),
        description="allow result downloads from private/loopback addresses (simulators, tests)",
    )
    result_retention_days: int = Field(
        30,
        ge=0,
        le=36_500,
        validation_alias=AliasChoices("VIDBATCH_RESULT_RETENTION_DAYS"),
        description="days archived files are kept before the worker deletes them; 0 = forever",
    )
    aws_endpoint_url: str | None = Field(
        None,
        validation_alias=AliasChoices("AWS_ENDPOINT_URL"),
        description="S3 store: endpoint of an S3-compatible service (R2, MinIO, …)",
    )
    aws_access_key_id: str | None = Field(
        None, validation_alias=AliasChoices("AWS_ACCESS_KEY_ID"), description="S3 store: key id"
    )
    aws_secret_access_key: str | None = Field(
        None,
        validation_alias=AliasChoices("AWS_SECRET_ACCESS_KEY"),
        description="S3 store: secret key",
    )
    aws_region: str | None = Field(
        None, validation_alias=AliasChoices("AWS_REGION"), description="S3 store: region"
    )

    # --- logging -----------------------------------------------------------------------
    log_format: Literal["text", "json"] = Field(
        "text",
        validation_alias=AliasChoices("VIDBATCH_LOG_FORMAT"),
        description="text (human) or json",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias=AliasChoices("VIDBATCH_LOG_LEVEL"), description="log level"
    )
    access_log: bool = Field(
        True,
        validation_alias=AliasChoices("VIDBATCH_ACCESS_LOG"),
        description="one JSON line per HTTP request (method, path, status, duration, request "
        "and key id); 0 turns it off",
    )

    @field_validator("database_url")
    @classmethod
    def _check_db_url(cls, value: str) -> str:
        from vidbatch.db.engine import async_url  # local: avoid an import cycle

        async_url(value)  # raises ValueError with a clear message
        return value

    @field_validator("secret_key", "secret_key_previous")
    @classmethod
    def _check_secret_key(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if len(value.strip()) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"must be at least {MIN_TOKEN_CHARS} characters "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return value.strip()

    @field_validator("admin_token", "metrics_token")
    @classmethod
    def _check_token(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # unset: the admin surface is disabled, /metrics open
        if len(value.strip()) < MIN_TOKEN_CHARS:
            # A short token falls to guessing; the dashboard and /metrics are reachable.
            raise ValueError(
                f"must be at least {MIN_TOKEN_CHARS} characters "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return value

    @field_validator("poll_intervals")
    @classmethod
    def _check_intervals(cls, value: str) -> str:
        try:
            parts = [float(p) for p in value.split(",")]
        except ValueError:
            raise ValueError("must be three comma-separated numbers of seconds") from None
        if len(parts) != 3 or not all(0 < p <= 86_400 for p in parts):  # nan fails too
            raise ValueError(
                "must be three comma-separated numbers of seconds, each above 0 and at most 86400"
            )
        return value

    @field_validator("model_catalog")
    @classmethod
    def _check_catalog(cls, value: str | None) -> str | None:
        try:
            parse_catalog_overrides(value)
        except ConfigError as exc:
            raise ValueError(exc.message) from None
        return value

    @field_validator(
        "grsai_host", "next_public_site_url", "site_url", "next_public_app_url", "app_url"
    )
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None if value is None or not value.strip() else value
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("result_store")
    @classmethod
    def _check_result_store(cls, value: str) -> str:
        parse_store_spec(value, database_url="sqlite:///vidbatch.db")  # raises ValueError
        return value.strip()

    @field_validator("result_public_base_url", "aws_endpoint_url")
    @classmethod
    def _check_plain_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _lease_outlasts_a_provider_call(self) -> Settings:
        call = self.provider_connect_timeout + self.provider_read_timeout
        if self.lease_seconds <= call:
            raise ValueError(
                f"VIDBATCH_LEASE_SECONDS ({self.lease_seconds}) must be longer than "
                f"VIDBATCH_PROVIDER_CONNECT_TIMEOUT + VIDBATCH_PROVIDER_READ_TIMEOUT ({call:g}): "
                "a worker could otherwise lose a task while still waiting for the provider"
            )
        return self

    @property
    def public_base_url(self) -> str | None:
        """The first non-empty of the four base-URL variables; None means polling mode."""
        for value in (
            self.next_public_site_url,
            self.site_url,
            self.next_public_app_url,
            self.app_url,
        ):
            if value:
                return value
        return None

    @cached_property
    def catalog(self) -> Catalog:
        return parse_catalog_overrides(self.model_catalog)

    @cached_property
    def result_store_spec(self) -> StoreSpec:
        """Where results are archived (``none`` turns archiving off)."""
        return parse_store_spec(self.result_store, database_url=self.database_url)

    @property
    def webhook_max_attempts(self) -> int:
        """Attempts a customer webhook event gets: the first one and its retries."""
        return self.webhook_retries + 1

    @property
    def poll_schedule(self) -> tuple[float, float, float]:
        a, b, c = (float(p) for p in self.poll_intervals.split(","))
        return a, b, c


def env_name(field: str) -> str:
    """The primary environment variable of a settings field."""
    alias = Settings.model_fields[field].validation_alias
    assert isinstance(alias, AliasChoices)
    first = alias.choices[0]
    assert isinstance(first, str)
    return first


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment (plus overrides by field name).

    An invalid value raises :class:`ConfigError` with one line naming the variable.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a rule across settings: the message names the variables
            raise ConfigError(msg) from None
        name = str(err["loc"][0])
        if name in Settings.model_fields:
            name = env_name(name)
        raise ConfigError(f"{name}: {msg}") from None


def configuration_table() -> str:
    """The README's configuration table, made from the settings themselves."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        assert isinstance(alias, AliasChoices)
        names = " / ".join(f"`{n}`" for n in alias.choices if isinstance(n, str))
        default = field.default
        shown = (
            "—"
            if default is None or default == ""
            else f"`{str(default).lower()}`"
            if (isinstance(default, bool))
            else f"`{default}`"
        )
        rows.append(f"| {names} | {shown} | {field.description or name} |")
    return "\n".join(rows)
