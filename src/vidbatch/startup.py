"""What a process says about itself when it starts: one log line per fact an operator needs
to know which mode is on (callback or polling, provider host, database, result store,
worker concurrency and lease). Nothing secret is ever part of a line."""

from __future__ import annotations

import logging

from sqlalchemy.engine import URL, make_url

from vidbatch.settings import Settings

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
    """The result store the settings name, for the start-up line, /readyz and doctor.

    The result store is configured by ``VIDBATCH_RESULT_STORE`` where that setting exists;
    without it this says "not configured".
    """
    store = getattr(settings, "result_store", None)
    if not store or str(store).lower() == "none":
        return "not configured"
    return str(store)


def result_store_check(settings: Settings) -> tuple[bool | None, str]:
    """Whether the result store is writable: ``(True, where)``, ``(False, why)``, or
    ``(None, what)`` when there is nothing to check. Used by /readyz and ``vidbatch doctor``;
    the store's own writability check belongs here once ``VIDBATCH_RESULT_STORE`` exists."""
    description = result_store_description(settings)
    if description == "not configured":
        return None, "not configured"
    return None, f"{description} (writability not checked)"


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
