"""What a process says about itself when it starts: one log line per fact an operator needs
to know which mode is on (callback or polling, provider host, database, result store,
worker concurrency and lease). Nothing secret is ever part of a line."""

from __future__ import annotations

import logging

from sqlalchemy.engine import URL, make_url

from vidbatch.settings import Settings
from vidbatch.storage import ResultStore, StoreError, check_writable

log = logging.getLogger("vidbatch.startup")


def database_without_password(url: str) -> str:
    """The database URL with any password left out (user, host, port and name kept)."""
    try:
        parsed = make_url(url)
    except Exception:  # validated at start-up already; never echo an unparsable URL
        return "(unparsable URL)"
    bare = URL.create(
        parsed.drivername,
        username=parsed.username,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
        query=parsed.query,
    )
    return bare.render_as_string(hide_password=False)


def result_store_description(settings: Settings) -> str:
    """The result store the settings name (``VIDBATCH_RESULT_STORE``), for the start-up
    line, /readyz and doctor. Nothing secret: S3 keys are never part of it."""
    spec = settings.result_store_spec
    if spec.kind == "none":
        return "none (the provider's URLs are passed through; they expire after about 2 h)"
    if spec.kind == "local":
        return f"local directory {spec.root}"
    scheme = {"s3": "s3", "gcs": "gs", "azure": "az"}.get(spec.kind, spec.kind)
    return f"{scheme}://{spec.bucket}/{spec.prefix}".rstrip("/")


async def result_store_check(
    settings: Settings, store: ResultStore | None
) -> tuple[bool | None, str]:
    """Whether the result store takes a write: ``(True, where)``, ``(False, why)``, or
    ``(None, what)`` when no store is configured. Used by /readyz and ``vidbatch doctor``."""
    description = result_store_description(settings)
    if store is None:
        return None, description
    try:
        await check_writable(store)
    except StoreError as exc:
        return False, f"{description}: not writable: {exc}"
    return True, f"{description}: writable"


def callback_mode(settings: Settings) -> str:
    base = settings.public_base_url
    if base:
        return (
            f"webhook (provider callbacks to {base}/api/video/callback; a task with no "
            f"callback is polled at its model's typical generation time)"
        )
    return (
        "polling (no public base URL set: NEXT_PUBLIC_SITE_URL, SITE_URL, "
        "NEXT_PUBLIC_APP_URL or APP_URL)"
    )


def startup_lines(settings: Settings, *, role: str, worker: bool) -> list[tuple[str, str]]:
    """(what, value) pairs a process logs at start-up, one line each."""
    lines = [
        ("role", role),
        ("callback mode", callback_mode(settings)),
        ("provider host", settings.grsai_host),
        ("database", database_without_password(settings.database_url)),
        ("result store", result_store_description(settings)),
    ]
    if worker:
        lines.append(
            (
                "worker",
                f"concurrency {settings.task_concurrency} provider calls, lease "
                f"{settings.lease_seconds} s, shutdown grace "
                f"{settings.shutdown_grace_seconds:g} s",
            )
        )
    else:
        lines.append(("worker", "not in this process (run `vidbatch worker`)"))
    return lines


def log_startup(settings: Settings, *, role: str, worker: bool) -> None:
    for what, value in startup_lines(settings, role=role, worker=worker):
        log.info("%s: %s", what, value, extra={"action": "startup"})
