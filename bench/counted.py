"""Run the ``vidbatch`` command line with database statements counted.

    python -m bench.counted worker            # = vidbatch worker, counted
    python -m bench.counted serve --no-worker

Listens on every SQLAlchemy engine of the process: statements executed (by their text),
commits, rollbacks and pool checkouts. At exit (``vidbatch`` stops gracefully on SIGTERM;
uvicorn's re-raised SIGTERM is turned into a normal exit) the counts are written as JSON
to the file named by ``BENCH_COUNT_FILE``. The listeners add
a few microseconds per statement; nothing else changes.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import signal
import sys
from collections import Counter
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool

COUNTS: Counter[str] = Counter()
BY_STATEMENT: Counter[str] = Counter()


def install() -> None:
    @event.listens_for(Engine, "before_cursor_execute")
    def _statement(
        _conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, executemany: bool
    ) -> None:
        COUNTS["statements"] += 1
        BY_STATEMENT[statement] += 1

    @event.listens_for(Engine, "commit")
    def _commit(_conn: Any) -> None:
        COUNTS["commits"] += 1

    @event.listens_for(Engine, "rollback")
    def _rollback(_conn: Any) -> None:
        COUNTS["rollbacks"] += 1

    @event.listens_for(Pool, "checkout")
    def _checkout(*_args: Any) -> None:
        COUNTS["checkouts"] += 1


def dump() -> None:
    path = os.environ.get("BENCH_COUNT_FILE")
    if not path:
        return
    top = [{"n": n, "sql": " ".join(sql.split())[:300]} for sql, n in BY_STATEMENT.most_common(25)]
    with open(path, "w") as fh:
        json.dump({**COUNTS, "top": top}, fh)


def _on_term(_signum: int, _frame: Any) -> None:
    # uvicorn re-raises SIGTERM after its graceful shutdown: exit normally so the counts
    # are written (the worker handles SIGTERM itself and returns).
    sys.exit(0)


def main() -> None:
    install()
    atexit.register(dump)
    signal.signal(signal.SIGTERM, _on_term)
    sys.argv = ["vidbatch", *sys.argv[1:]]
    runpy.run_module("vidbatch", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
