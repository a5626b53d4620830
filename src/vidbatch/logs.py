"""Logging set-up for entry points: human-readable by default, JSON with
``VIDBATCH_LOG_FORMAT=json``. Structured fields (``batch_id``, ``task_id``, ``action``,
``request_id``…) passed as ``extra`` are shown in both. Nothing secret is ever passed."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from typing import Any

from vidbatch.settings import Settings

#: Loggers kept at WARNING whatever the level: access lines, and the drivers' statement
#: traces (aiosqlite's DEBUG lines carry a statement's parameters).
QUIET_LOGGERS = ("uvicorn.access", "aiosqlite", "sqlalchemy.engine")

#: uvicorn's ``color_message`` (its message with ANSI escapes) is never shown.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}

#: What Alembic says each time it opens a migration context (every /readyz): not news.
_ALEMBIC_CHATTER = ("Context impl ", "Will assume ")


class AlembicChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_ALEMBIC_CHATTER)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extra:
            line += f"  {extra}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(settings: Settings, stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    migration = logging.getLogger("alembic.runtime.migration")
    migration.filters[:] = [f for f in migration.filters if not isinstance(f, AlembicChatter)]
    migration.addFilter(AlembicChatter())
    # The access log is JSON lines whatever VIDBATCH_LOG_FORMAT says (for log shipping).
    access = logging.getLogger("vidbatch.access")
    access_handler = logging.StreamHandler(stream or sys.stderr)
    access_handler.setFormatter(JsonFormatter())
    access.handlers[:] = [access_handler]
    access.propagate = False
    access.setLevel(logging.INFO)


class LogLimiter:
    """Identical failures logged once a window: during a database outage every request
    fails the same way, and thousands of identical lines a second hide everything else.

    ``allow(key)`` is None while ``key`` was logged less than ``window`` seconds ago (the
    occurrence is counted), else how many occurrences were held back since the last line.
    """

    def __init__(self, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def allow(self, key: Hashable) -> int | None:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.window:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        if len(self._last) > 1000:  # many distinct failures: forget the old ones
            self._last.clear()
            self._held.clear()
        self._last[key] = now
        return self._held.pop(key, 0)

    def log(
        self,
        logger: logging.Logger,
        level: int,
        message: str,
        *,
        key: Hashable,
        exc: BaseException | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """One line for ``message`` unless the same ``key`` was logged within the window;
        the line says how many were held back before it. The traceback (``exc``) goes
        with the first line of a window only."""
        held = self.allow(key)
        if held is None:
            return
        if held:
            message += f" ({held} more like it in the last {self.window:g} s not logged)"
        logger.log(level, message, exc_info=exc, extra={**(extra or {}), "repeated": held})
