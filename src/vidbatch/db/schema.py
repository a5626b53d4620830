"""The tables. Names and columns follow the original system where it had them.

The database enforces what must never break: unique idempotency keys, non-negative credits,
status enums, one task per (batch, index). Indexes serve what a worker round filters by.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.sql.elements import TextClause

from vidbatch.db.types import JSONType, Sealed, SealedText, UTCDateTime
from vidbatch.domain.archive import ArchiveStatus
from vidbatch.domain.states import (
    BatchStatus,
    FailureType,
    LedgerType,
    SettlementStatus,
    TaskStatus,
    WebhookStatus,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = String(36)
#: 64-bit ids on PostgreSQL; INTEGER PRIMARY KEY (the rowid) on SQLite.
BIG_ID = BigInteger().with_variant(Integer, "sqlite")

BATCH_STATUSES = tuple(BatchStatus)
TASK_STATUSES = tuple(TaskStatus)
LEDGER_TYPES = tuple(LedgerType)
SETTLEMENT_STATUSES = tuple(SettlementStatus)
WEBHOOK_STATUSES = tuple(WebhookStatus)
FAILURE_TYPES = tuple(FailureType)
ARCHIVE_STATUSES = tuple(ArchiveStatus)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


def _default(value: str) -> TextClause:
    return text(repr(str(value)))


accounts = Table(
    "accounts",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("balance_credits", BigInteger, nullable=False, server_default=text("0")),
    Column("frozen_credits", BigInteger, nullable=False, server_default=text("0")),
    Column("is_active", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    CheckConstraint("frozen_credits >= 0", name="frozen_non_negative"),
    CheckConstraint("balance_credits >= frozen_credits", name="available_non_negative"),
)

enterprise_api_keys = Table(
    "enterprise_api_keys",
    metadata,
    Column("id", ID, primary_key=True),
    Column("account_id", ID, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    # The key's first characters, shown to operators and used to find the row.
    Column("key_prefix", String(32), nullable=False, unique=True),
    # SHA-256 of the whole key; the key itself is never stored.
    Column("key_hash", String(64), nullable=False),
    Column("is_active", Boolean, nullable=False, server_default=text("true")),
    Column("rate_limit_per_min", Integer, nullable=False, server_default=text("60")),
    # Signing secret of this key's customer webhooks, and the previous one during rotation.
    # Both encrypted at rest (db/types.Sealed).
    Column("webhook_secret", Sealed(128), nullable=True),
    Column("webhook_secret_previous", Sealed(128), nullable=True),
    Column("webhook_secret_previous_expires_at", UTCDateTime(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("last_seen_at", UTCDateTime(), nullable=True),
    CheckConstraint("rate_limit_per_min > 0", name="rate_limit_positive"),
)

api_usage = Table(
    "api_usage",
    metadata,
    Column("id", BIG_ID, primary_key=True, autoincrement=True),
    Column("key_id", ID, ForeignKey("enterprise_api_keys.id"), nullable=False),
    Column("account_id", ID, ForeignKey("accounts.id"), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("minute_bucket", BigInteger, nullable=False),
    Column("ip", String(64), nullable=True),
    Column("user_agent", String(512), nullable=True),
    Column("batch_id", ID, nullable=True),
    Column("status_code", Integer, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_api_usage_key_minute", "key_id", "minute_bucket"),
)

# Per-key request counters, one row per minute: incremented by one conditional upsert, so a
# burst cannot exceed the limit (the original's check-then-insert could).
# Reads and writes are counted apart (``scope``), so polling never spends the budget of
# creates.
rate_limit_counters = Table(
    "rate_limit_counters",
    metadata,
    Column("key_id", ID, primary_key=True),
    Column("scope", String(8), primary_key=True),
    Column("minute_bucket", BigInteger, primary_key=True),
    Column("count", Integer, nullable=False),
)

batch_jobs = Table(
    "batch_jobs",
    metadata,
    Column("id", ID, primary_key=True),
    # The original's name; points at accounts.id.
    Column("user_id", ID, ForeignKey("accounts.id"), nullable=False),
    Column("key_id", ID, ForeignKey("enterprise_api_keys.id"), nullable=True),
    Column("status", String(16), nullable=False, server_default=_default(BatchStatus.QUEUED)),
    Column("total_count", Integer, nullable=False),
    Column("success_count", Integer, nullable=False, server_default=text("0")),
    Column("failed_count", Integer, nullable=False, server_default=text("0")),
    Column("cancelled_count", Integer, nullable=False, server_default=text("0")),
    Column("cost_per_video", Integer, nullable=True),
    # Credits reserved at creation; never changes afterwards.
    Column("frozen_credits", BigInteger, nullable=False),
    Column("credits_spent", BigInteger, nullable=False, server_default=text("0")),
    # Released so far (cancelled items at once, the rest at settlement).
    Column("credits_refunded", BigInteger, nullable=False, server_default=text("0")),
    Column(
        "settlement_status",
        String(16),
        nullable=False,
        server_default=_default(SettlementStatus.PENDING),
    ),
    Column("settled_at", UTCDateTime(), nullable=True),
    Column("webhook_url", Text, nullable=True),
    Column(
        "webhook_status", String(16), nullable=False, server_default=_default(WebhookStatus.NONE)
    ),
    Column("webhook_attempts", Integer, nullable=False, server_default=text("0")),
    Column("webhook_last_error", Text, nullable=True),
    Column("webhook_last_sent_at", UTCDateTime(), nullable=True),
    Column("request_id", String(128), nullable=False),
    # Set only when the client gave a request id: the idempotency key and its body's hash.
    Column("idempotency_key", String(128), nullable=True),
    Column("request_hash", String(64), nullable=True),
    Column("source", String(32), nullable=False, server_default=text("'enterprise'")),
    Column("metadata", JSONType, nullable=True),
    Column("parent_batch_id", ID, ForeignKey("batch_jobs.id"), nullable=True),
    Column("cancel_requested_at", UTCDateTime(), nullable=True),
    # When a worker last took tasks of this batch: batches are served round-robin.
    Column("last_dispatch_at", UTCDateTime(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("completed_at", UTCDateTime(), nullable=True),
    CheckConstraint(_in("status", BATCH_STATUSES), name="status"),
    CheckConstraint(_in("settlement_status", SETTLEMENT_STATUSES), name="settlement_status"),
    CheckConstraint(_in("webhook_status", WEBHOOK_STATUSES), name="webhook_status"),
    CheckConstraint("total_count >= 0", name="total_non_negative"),
    CheckConstraint("frozen_credits >= 0", name="frozen_non_negative"),
    CheckConstraint("credits_spent >= 0", name="spent_non_negative"),
    CheckConstraint("credits_refunded >= 0", name="refunded_non_negative"),
    CheckConstraint(
        "credits_spent + credits_refunded <= frozen_credits", name="settled_within_frozen"
    ),
    UniqueConstraint("key_id", "idempotency_key", name="uq_batch_jobs_key_idempotency"),
    Index("ix_batch_jobs_user_created", "user_id", "created_at"),
    Index(
        "ix_batch_jobs_unsettled",
        "created_at",
        sqlite_where=text("settled_at IS NULL"),
        postgresql_where=text("settled_at IS NULL"),
    ),
)

video_tasks = Table(
    "video_tasks",
    metadata,
    Column("id", ID, primary_key=True),
    Column("batch_job_id", ID, ForeignKey("batch_jobs.id"), nullable=False),
    Column("account_id", ID, ForeignKey("accounts.id"), nullable=False),
    Column("batch_index", Integer, nullable=False),
    Column("provider", String(32), nullable=False, server_default=text("'grsai'")),
    Column("grsai_task_id", String(128), nullable=True),
    Column("model", String(64), nullable=True),
    Column("prompt", Text, nullable=False),
    Column("reference_url", Text, nullable=True),
    Column("aspect_ratio", String(8), nullable=True),
    Column("duration", Integer, nullable=True),
    Column("size", String(16), nullable=True),
    Column("meta", JSONType, nullable=True),
    Column("metadata", JSONType, nullable=True),
    Column("cost_credits", Integer, nullable=False),
    Column("status", String(16), nullable=False, server_default=_default(TaskStatus.PENDING)),
    Column("progress", Integer, nullable=False, server_default=text("0")),
    Column("video_url", Text, nullable=True),
    Column("remove_watermark", Boolean, nullable=True),
    Column("pid", String(128), nullable=True),
    Column("failure_reason", Text, nullable=True),
    Column("failure_type", String(16), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text, nullable=True),
    Column("next_retry_at", UTCDateTime(), nullable=True),
    Column("poll_count", Integer, nullable=False, server_default=text("0")),
    Column("last_poll_at", UTCDateTime(), nullable=True),
    # When the task next needs attention (submit, poll, give up); NULL once it has ended.
    Column("next_attempt_at", UTCDateTime(), nullable=True),
    # A remote task still running at this time fails with failure_type timeout.
    Column("deadline_at", UTCDateTime(), nullable=True),
    Column("submitted_at", UTCDateTime(), nullable=True),
    Column("callback_at", UTCDateTime(), nullable=True),
    # Lease: who holds the task, until when, and a fencing token bumped on every claim.
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", UTCDateTime(), nullable=True),
    Column("lease_token", Integer, nullable=False, server_default=text("0")),
    # In a retry batch: the failed task this one retries. Unique, so no item is ever retried
    # (and paid for) twice, whichever variant of the retry asked for it.
    Column("retry_of_task_id", ID, nullable=True),
    # The result archive (``video_url`` stays the provider's URL). A succeeded task whose
    # archive is pending is claimed by the worker's archive lane when ``archive_due_at`` is
    # due, under the same lease columns as the rest of its life; its batch settles only once
    # no task of it is pending.
    Column("archive_status", String(16), nullable=True),
    Column("archive_due_at", UTCDateTime(), nullable=True),
    Column("archive_attempts", Integer, nullable=False, server_default=text("0")),
    Column("archive_error", Text, nullable=True),
    Column("archived_at", UTCDateTime(), nullable=True),
    Column("archive_key", Text, nullable=True),
    Column("thumbnail_key", Text, nullable=True),
    Column("video_size_bytes", BigInteger, nullable=True),
    Column("video_sha256", String(64), nullable=True),
    Column("video_duration_seconds", Float, nullable=True),
    Column("video_width", Integer, nullable=True),
    Column("video_height", Integer, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("completed_at", UTCDateTime(), nullable=True),
    CheckConstraint(_in("status", TASK_STATUSES), name="status"),
    CheckConstraint(
        "archive_status IS NULL OR " + _in("archive_status", ARCHIVE_STATUSES),
        name="archive_status",
    ),
    CheckConstraint(
        "failure_type IS NULL OR " + _in("failure_type", FAILURE_TYPES), name="failure_type"
    ),
    CheckConstraint("cost_credits >= 0", name="cost_non_negative"),
    CheckConstraint("progress >= 0 AND progress <= 100", name="progress_range"),
    UniqueConstraint("batch_job_id", "batch_index", name="uq_video_tasks_batch_index"),
    Index("ix_video_tasks_batch_status", "batch_job_id", "status"),
    Index("ix_video_tasks_grsai_task_id", "grsai_task_id"),
    Index("uq_video_tasks_retry_of_task_id", "retry_of_task_id", unique=True),
    # Tasks we gave up on may still run at the provider until their deadline (fleet cap).
    Index(
        "ix_video_tasks_timeout_hold",
        "deadline_at",
        sqlite_where=text("failure_reason IN ('timeout', 'ambiguous_submit')"),
        postgresql_where=text("failure_reason IN ('timeout', 'ambiguous_submit')"),
    ),
    # The archive lane's queue, and the retention sweep's.
    Index(
        "ix_video_tasks_archive_due",
        "archive_due_at",
        sqlite_where=text("archive_status = 'pending'"),
        postgresql_where=text("archive_status = 'pending'"),
    ),
    Index(
        "ix_video_tasks_archived_at",
        "archived_at",
        sqlite_where=text("archive_status = 'stored'"),
        postgresql_where=text("archive_status = 'stored'"),
    ),
    # What a round looks for: live tasks that are due. Ended tasks stay out of the index.
    Index(
        "ix_video_tasks_due",
        "status",
        "next_attempt_at",
        sqlite_where=text("next_attempt_at IS NOT NULL"),
        postgresql_where=text("next_attempt_at IS NOT NULL"),
    ),
)

credit_ledger = Table(
    "credit_ledger",
    metadata,
    Column("id", BIG_ID, primary_key=True, autoincrement=True),
    Column("account_id", ID, ForeignKey("accounts.id"), nullable=False),
    Column("type", String(16), nullable=False),
    # Change to the account's balance, and to its frozen (reserved) credits.
    Column("delta", BigInteger, nullable=False),
    Column("frozen_delta", BigInteger, nullable=False, server_default=text("0")),
    Column("balance_after", BigInteger, nullable=False),
    Column("frozen_after", BigInteger, nullable=False),
    Column("batch_id", ID, ForeignKey("batch_jobs.id"), nullable=True),
    Column("item_id", ID, nullable=True),
    # One entry per operation: a retried operation finds its key taken and posts nothing.
    Column("idempotency_key", String(200), nullable=False),
    Column("description", Text, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    CheckConstraint(_in("type", LEDGER_TYPES), name="type"),
    UniqueConstraint("account_id", "idempotency_key", name="uq_credit_ledger_idempotency"),
    Index("ix_credit_ledger_account_id", "account_id", "id"),
    Index("ix_credit_ledger_batch_id", "batch_id"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", ID, primary_key=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("batch_id", ID, ForeignKey("batch_jobs.id"), nullable=False),
    Column("url", Text, nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("payload", JSONType, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("max_attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime(), nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("delivered_at", UTCDateTime(), nullable=True),
    Column("failed_at", UTCDateTime(), nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", UTCDateTime(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("batch_id", "event_type", name="uq_webhook_deliveries_batch_event"),
    Index(
        "ix_webhook_deliveries_due",
        "next_attempt_at",
        sqlite_where=text("next_attempt_at IS NOT NULL"),
        postgresql_where=text("next_attempt_at IS NOT NULL"),
    ),
)

# Server-side values generated once and shared by every process (e.g. the callback secret).
server_secrets = Table(
    "server_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", SealedText, nullable=False),  # encrypted at rest
    Column("created_at", UTCDateTime(), nullable=False),
)

# Signed-in dashboard sessions: a session is valid only while its row exists, so signing
# out ends it for good. The id is the SHA-256 of the session's random nonce (never the
# cookie itself).
admin_sessions = Table(
    "admin_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False, index=True),
)


#: Provider calls of every process, per minute, call (submit, poll) and outcome: the
#: dashboard's fleet-wide provider figures.
provider_calls = Table(
    "provider_calls",
    metadata,
    Column("minute", UTCDateTime(), primary_key=True),
    Column("call", String(16), primary_key=True),
    Column("outcome", String(32), primary_key=True),
    Column("count", BigInteger(), nullable=False),
)
