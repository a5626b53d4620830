"""Validation of a batch request: every problem reported at once, with item index, field
and reason. Pure: no I/O (URLs are checked by domain/urls.py; webhook hosts are resolved again at
delivery time).

Decisions a customer should know (documented in the README):
- unknown fields of an item or of the body are ignored, as the original did;
- ``model`` defaults to ``sora-2``; ``duration`` is for Sora only (10 or 15, default 10):
  Veo clips have a fixed length, so a ``duration`` sent with a Veo model is ignored;
- ``duration: 5`` (the published ``/api/v1`` default) is made and priced as 10 seconds, as the
  original's worker did: the provider makes nothing shorter. The item's ``duration`` says 10;
- ``aspect_ratio`` has no default (the provider's) unless the caller passes one
  (``/api/v1`` defaults to ``16:9``, as published).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vidbatch.domain.catalog import Catalog, ModelSpec
from vidbatch.domain.provider import DEFAULT_PROVIDER
from vidbatch.domain.urls import MAX_URL, check_url, is_private_host, non_public_address
from vidbatch.exceptions import FieldError, InvalidInput, TooManyItems

__all__ = [
    "MAX_URL",
    "check_webhook_url",
    "is_private_host",
    "non_public_address",
    "validate_batch",
]

MAX_PROMPT = 4000
MAX_METADATA_BYTES = 4096
MAX_META_URLS = 3
ASPECT_RATIOS = ("9:16", "16:9")
META_KEYS = ("firstFrameUrl", "lastFrameUrl", "urls")
DEFAULT_MODEL = "sora-2"
#: Durations the published spec offers that the provider cannot make: made (and priced) as
#: the next one it can.
ROUNDED_UP_DURATIONS = {5: 10}


@dataclass(frozen=True)
class ItemSpec:
    """One validated item, ready to be priced and stored."""

    index: int
    prompt: str
    model: str
    aspect_ratio: str | None
    duration: int | None
    reference_url: str | None
    meta: dict[str, Any] | None
    metadata: dict[str, Any] | None
    cost_credits: int
    #: The provider that serves ``model`` (from the catalog).
    provider: str = DEFAULT_PROVIDER


@dataclass(frozen=True)
class BatchSpec:
    items: list[ItemSpec]
    webhook_url: str | None
    metadata: dict[str, Any] | None

    @property
    def total_credits(self) -> int:
        return sum(i.cost_credits for i in self.items)

    @property
    def cost_per_video(self) -> int:
        """The price of one item; for a batch mixing prices, the highest (the published
        contract has an integer here, never null)."""
        return max(i.cost_credits for i in self.items)


def check_webhook_url(value: Any, *, allow_private: bool) -> str | None:
    """None when ``value`` may receive webhooks (https, public), else the reason; the same
    check as every delivery attempt's."""
    return check_url(value, allow_private=allow_private, https_only=not allow_private)


#: Reports one problem of an item: ``report(field, message)``.
Report = Callable[[str, str], None]


def _validate_item(
    index: int,
    raw: Any,
    catalog: Catalog,
    errors: list[FieldError],
    default_aspect_ratio: str | None = None,
    allow_private: bool = False,
) -> ItemSpec | None:
    """The item as an :class:`ItemSpec`, or None with its problems added to ``errors`` (in
    the order of its fields)."""
    start = len(errors)

    def report(field: str, message: str) -> None:
        errors.append(FieldError(field=field, message=message, index=index))

    if not isinstance(raw, dict):
        report("item", "must be an object")
        return None
    prompt = _prompt(raw.get("prompt"), report)
    spec = _model(raw.get("model"), catalog, report)
    aspect = _aspect_ratio(raw.get("aspect_ratio"), default_aspect_ratio, report)
    duration = None if spec is None else _duration(raw.get("duration"), spec, report)
    reference_url = raw.get("reference_url")
    _check_url("reference_url", reference_url, report, allow_private)
    meta = raw.get("meta")
    _check_meta(meta, report, allow_private)
    metadata = raw.get("metadata")
    _check_metadata(metadata, report)

    if len(errors) > start or spec is None or prompt is None:
        return None
    return ItemSpec(
        index=index,
        prompt=prompt,
        model=spec.name,
        aspect_ratio=aspect,
        duration=duration,
        reference_url=reference_url,
        meta=meta or None,
        metadata=metadata,
        cost_credits=spec.price_for(duration),
        provider=spec.provider,
    )


def _prompt(prompt: Any, report: Report) -> str | None:
    """The prompt when it is acceptable, else None (reported)."""
    if not isinstance(prompt, str) or not prompt.strip():
        report("prompt", "is required and must be a non-empty string")
        return None
    if len(prompt) > MAX_PROMPT:
        report("prompt", f"must be at most {MAX_PROMPT} characters (got {len(prompt)})")
        return None
    return prompt


def _model(model: Any, catalog: Catalog, report: Report) -> ModelSpec | None:
    """The catalog's entry for the model (``sora-2`` when none is given), else None."""
    if model is None:
        model = DEFAULT_MODEL
    if not isinstance(model, str):
        report("model", "must be a string")
        return None
    spec = catalog.get(model)
    if spec is None:
        report("model", f"unknown model {model!r}; expected one of {', '.join(catalog.names)}")
    return spec


def _aspect_ratio(aspect: Any, default: str | None, report: Report) -> str | None:
    """The aspect ratio, the default when none is given."""
    if aspect is None:
        return default
    if aspect not in ASPECT_RATIOS:
        report("aspect_ratio", f"must be one of {', '.join(ASPECT_RATIOS)}")
        return None
    return aspect


def _duration(duration: Any, spec: ModelSpec, report: Report) -> int | None:
    """The duration the model makes: its default when none is given, a published one it
    cannot make rounded up, None for a model of fixed length (a given one is ignored)."""
    if not spec.durations:
        return None
    if duration is None:
        return spec.default_duration
    whole = (isinstance(duration, int) and not isinstance(duration, bool)) or (
        isinstance(duration, float) and duration.is_integer()
    )
    if whole and ROUNDED_UP_DURATIONS.get(int(duration)) in spec.durations:
        return ROUNDED_UP_DURATIONS[int(duration)]
    if (
        isinstance(duration, bool)
        or not isinstance(duration, int | float)
        or (int(duration) != duration or int(duration) not in spec.durations)
    ):
        allowed = " or ".join(str(d) for d in spec.durations)
        report("duration", f"must be {allowed} seconds for {spec.name}")
        return None
    return int(duration)


def _check_url(field: str, value: Any, report: Report, allow_private: bool) -> None:
    """An optional public http(s) URL (the provider fetches it)."""
    if value is not None:
        reason = check_url(value, allow_private=allow_private)
        if reason:
            report(field, reason)


def _check_meta(meta: Any, report: Report, allow_private: bool) -> None:
    """The provider hints: frame URLs (a last frame only with a first) and reference URLs."""
    if meta is None:
        return
    if not isinstance(meta, dict):
        report("meta", "must be an object")
        return
    for key in meta:
        if key not in META_KEYS:
            report(f"meta.{key}", f"unknown key; expected {', '.join(META_KEYS)}")
    for key in ("firstFrameUrl", "lastFrameUrl"):
        _check_url(f"meta.{key}", meta.get(key), report, allow_private)
    if meta.get("lastFrameUrl") is not None and meta.get("firstFrameUrl") is None:
        report("meta.lastFrameUrl", "is only allowed together with meta.firstFrameUrl")
    _check_meta_urls(meta.get("urls"), report, allow_private)


def _check_meta_urls(urls: Any, report: Report, allow_private: bool) -> None:
    if urls is None:
        return
    if not isinstance(urls, list):
        report("meta.urls", "must be a list of URLs")
    elif len(urls) > MAX_META_URLS:
        report("meta.urls", f"must have at most {MAX_META_URLS} URLs (got {len(urls)})")
    else:
        for n, url in enumerate(urls):
            _check_url(f"meta.urls[{n}]", url, report, allow_private)


def _check_metadata(metadata: Any, report: Report) -> None:
    """The caller's own object, kept as given, up to a size."""
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        report("metadata", "must be an object")
    elif len(json.dumps(metadata, separators=(",", ":")).encode()) > MAX_METADATA_BYTES:
        report("metadata", f"must be at most {MAX_METADATA_BYTES} bytes as JSON")


def validate_batch(
    body: Any,
    *,
    catalog: Catalog,
    max_items: int,
    allow_private_webhooks: bool,
    default_aspect_ratio: str | None = None,
) -> BatchSpec:
    """Validate a parsed request body; raise InvalidInput (or TooManyItems) listing every
    problem, each with its item index and field. ``default_aspect_ratio`` is used for items
    that give none. ``allow_private_webhooks`` lets the webhook, reference and frame URLs
    point at private addresses (development)."""
    if not isinstance(body, dict):
        raise InvalidInput(
            "the body must be a JSON object with an 'items' list",
            details=[FieldError(field="body", message="must be a JSON object")],
        )
    items = body.get("items")
    if not isinstance(items, list) or not items:
        raise InvalidInput(
            "'items' must be a non-empty list",
            details=[FieldError(field="items", message="must be a non-empty list")],
        )
    if len(items) > max_items:
        raise TooManyItems(
            f"a batch may have at most {max_items} items (got {len(items)})",
            details=[FieldError(field="items", message=f"at most {max_items} items")],
            max_items=max_items,
        )
    errors: list[FieldError] = []
    webhook_url = body.get("webhook_url")
    if webhook_url is not None:
        reason = check_webhook_url(webhook_url, allow_private=allow_private_webhooks)
        if reason:
            errors.append(FieldError(field="webhook_url", message=reason))
    metadata = body.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, dict)
        or len(json.dumps(metadata, separators=(",", ":")).encode()) > MAX_METADATA_BYTES
    ):
        errors.append(
            FieldError(
                field="metadata", message=f"must be an object of at most {MAX_METADATA_BYTES} bytes"
            )
        )
    specs = [
        _validate_item(i, raw, catalog, errors, default_aspect_ratio, allow_private_webhooks)
        for i, raw in enumerate(items)
    ]
    if errors:
        shown = errors[:100]
        first = shown[0]
        where = f"item {first.index}: " if first.index is not None else ""
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InvalidInput(f"{where}{first.field} {first.message}{more}", details=shown)
    return BatchSpec(
        items=[s for s in specs if s is not None], webhook_url=webhook_url, metadata=metadata
    )


def request_fingerprint(body: dict[str, Any]) -> str:
    """A hash of what the request asks for, to tell a replay from a different request."""
    import hashlib

    relevant = {k: v for k, v in body.items() if k != "request_id"}
    canonical = json.dumps(relevant, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
