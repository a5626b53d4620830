"""The original system's published /api/v1 contract (its OpenAPI 1.0.0, its Node client and its
webhook specification), written down as JSON Schemas.

These are the shapes customers' code was written against. vidbatch may add fields (the schemas
allow additional properties) but never renames, retypes or drops one: every field below is
required with its published type and, where published, its enum.
"""

from __future__ import annotations

from typing import Any

BATCH_STATUS = ["pending", "running", "succeeded", "partial", "failed", "cancelled"]
BATCH_ENDED = ["succeeded", "failed", "cancelled", "partial"]
ITEM_STATUS = ["pending", "running", "succeeded", "failed"]
FAILURE_TYPE = ["model_error", "param_error", "timeout", "network", "unknown"]
LEDGER_TYPE = ["reserve", "settle", "refund", "purchase", "bonus"]

STRING = {"type": "string"}
INTEGER = {"type": "integer"}
BOOLEAN = {"type": "boolean"}
NULLABLE_STRING = {"type": ["string", "null"]}
DATE_TIME = {"type": "string", "format": "date-time"}
NULLABLE_DATE_TIME = {"type": ["string", "null"], "format": "date-time"}


def obj(required: dict[str, Any]) -> dict[str, Any]:
    """An object with these fields, all required; more fields are allowed (additions)."""
    return {"type": "object", "required": sorted(required), "properties": required}


OK = {"ok": {"const": True}}

CREATED = obj(
    {
        **OK,
        "batch_id": STRING,
        "request_id": STRING,
        "status": {"enum": BATCH_STATUS},
        "total_count": INTEGER,
        "cost_per_video": INTEGER,
        "required_credits": INTEGER,
        "available_credits": INTEGER,
        "idempotent_replay": BOOLEAN,
    }
)

BATCH = obj(
    {
        **OK,
        "batch_id": STRING,
        "request_id": NULLABLE_STRING,
        "status": {"enum": BATCH_STATUS},
        "total_count": INTEGER,
        "succeeded_count": INTEGER,
        "failed_count": INTEGER,
        "cost_per_video": INTEGER,
        "credits_reserved": INTEGER,
        "credits_settled": INTEGER,
        "credits_refunded": INTEGER,
        "created_at": DATE_TIME,
        "completed_at": NULLABLE_DATE_TIME,
    }
)

ITEM = obj(
    {
        "item_id": STRING,
        "index": INTEGER,
        "status": {"enum": ITEM_STATUS},
        "prompt": STRING,
        "model": STRING,
        "video_url": NULLABLE_STRING,
        "thumbnail_url": NULLABLE_STRING,
        "error": NULLABLE_STRING,
        "failure_type": {"enum": [*FAILURE_TYPE, None]},
        "metadata": {"type": ["object", "null"]},
        "created_at": DATE_TIME,
        "completed_at": NULLABLE_DATE_TIME,
    }
)

ITEMS = obj(
    {
        **OK,
        "items": {"type": "array", "items": ITEM},
        "total": INTEGER,
        "limit": INTEGER,
        "offset": INTEGER,
    }
)

CANCELLED = obj(
    {
        **OK,
        "batch_id": STRING,
        "status": {"enum": BATCH_STATUS},
        "credits_refunded": INTEGER,
    }
)

BALANCE = obj({**OK, "available": INTEGER, "reserved": INTEGER, "total": INTEGER})

LEDGER_ENTRY = obj(
    {
        "id": STRING,
        "type": {"enum": LEDGER_TYPE},
        "delta": INTEGER,
        "balance_after": INTEGER,
        "batch_id": NULLABLE_STRING,
        "item_id": NULLABLE_STRING,
        "description": NULLABLE_STRING,
        "created_at": DATE_TIME,
    }
)

LEDGER = obj({**OK, "entries": {"type": "array", "items": LEDGER_ENTRY}})

ERROR = {
    **obj({"ok": {"const": False}, "error": STRING, "message": STRING}),
    # `details`, when present, is an object (a list of per-item problems goes inside it).
    "properties": {
        "ok": {"const": False},
        "error": STRING,
        "message": STRING,
        "details": {"type": "object"},
    },
}

# --- customer webhooks (the original's docs/WEBHOOK_EVENTS.md) ------------------------------

SUMMARY = obj({"total": INTEGER, "succeeded": INTEGER, "failed": INTEGER, "pending": INTEGER})
LEDGER_FIGURES = obj({"reserved": INTEGER, "settled": INTEGER, "refunded": INTEGER})

EVENT_COMMON = {
    "event": STRING,
    "batch_id": STRING,
    "request_id": NULLABLE_STRING,
    "status": {"enum": BATCH_STATUS},
    "summary": SUMMARY,
    "ledger": LEDGER_FIGURES,
    "timestamp": DATE_TIME,
}

EVENT_ITEM = obj(
    {
        "item_id": STRING,
        "index": INTEGER,
        "status": {"enum": ITEM_STATUS},
        "video_url": NULLABLE_STRING,
        "thumbnail_url": NULLABLE_STRING,
        "error": NULLABLE_STRING,
        "failure_type": {"enum": [*FAILURE_TYPE, None]},
        "metadata": {"type": ["object", "null"]},
    }
)

EVENTS: dict[str, dict[str, Any]] = {
    "batch.created": obj(
        {**EVENT_COMMON, "event": {"const": "batch.created"}, "status": {"const": "pending"}}
    ),
    "batch.running": obj(
        {
            **EVENT_COMMON,
            "event": {"const": "batch.running"},
            "status": {"const": "running"},
            "summary": obj({**SUMMARY["properties"], "running": INTEGER}),
        }
    ),
    "batch.completed": obj(
        {
            **EVENT_COMMON,
            "event": {"const": "batch.completed"},
            "status": {"enum": ["succeeded", "partial", "failed", "cancelled"]},
            "items": {"type": "array", "items": EVENT_ITEM},
            "duration_ms": INTEGER,
        }
    ),
    "batch.failed": obj(
        {
            **EVENT_COMMON,
            "event": {"const": "batch.failed"},
            "error": STRING,
            "error_message": STRING,
        }
    ),
    "batch.refunded": obj(
        {
            **EVENT_COMMON,
            "event": {"const": "batch.refunded"},
            "refund_reason": STRING,
            "refund_details": {"type": "object"},
        }
    ),
}
