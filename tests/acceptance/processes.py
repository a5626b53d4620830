"""Running the real `vidbatch` command as long-lived processes and reading their logs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

BASE_URL_VARS = ("NEXT_PUBLIC_SITE_URL", "SITE_URL", "NEXT_PUBLIC_APP_URL", "APP_URL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a first-time operator: nothing of vidbatch's set but ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VIDBATCH_", "GRSAI_", "BATCH_", "ENTERPRISE_"))
        and k not in BASE_URL_VARS
        and k != "DATABASE_URL"
    }
    env.update(extra)
    return env


class Proc:
    """One `vidbatch ...` process, its stdout and stderr in ``log``."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.log = log
        self._file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(
            [sys.executable, "-m", "vidbatch", *args],
            env=env,
            cwd=cwd,
            stdout=self._file,
            stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if needle in text:
                return text
            if self.p.poll() is not None:
                raise AssertionError(f"process exited {self.p.returncode}:\n{text}")
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not logged:\n{self.text()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            code = None
        self._file.close()
        return code


def http_json(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_until(pred: Callable[[], Any], timeout: float = 90.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached")


def log_records(text: str) -> list[dict[str, Any]]:
    """The JSON lines of a log (others ignored)."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def answers(url: str) -> bool:
    """True when ``url`` answers 200 (False while nothing listens yet)."""
    try:
        return http_json("GET", url)[0] == 200
    except OSError:
        return False
