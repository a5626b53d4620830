"""`vidbatch demo` as a newcomer runs it: it finishes, shows the table and a clean audit;
a busy port is named; Ctrl-C stops everything."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DEMO = [sys.executable, "-m", "vidbatch", "demo", "--gen-time", "0.5"]


def test_demo_runs_to_a_clean_audit(tmp_path: Path) -> None:
    done = subprocess.run(DEMO, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "audit: clean" in out
    assert "batch 1 — partial" in out  # the moderation failure is refunded
    assert "moderation" in out
    assert "batch 2 — cancelled" in out
    assert "credits: reserved 340" in out
    assert "/files/" in out  # the provider's URL is shown
    # every video is archived to the local store and shown under its durable link
    # batch 1's five successes, and what batch 2 finished before its cancel
    assert out.count("stored 1765 B 64x36") >= 5
    assert "/results/videos/" in out
    assert "SHA-256 matches" in out
    assert "its thumbnail: HTTP 200 image/jpeg" in out
    assert not list(tmp_path.iterdir())  # nothing left behind in the working directory


def test_demo_names_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [*DEMO, "--port", str(port)], capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1
    assert f"127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_demo_stops_on_ctrl_c() -> None:
    slow = [*DEMO[:-1], "10"]  # generation takes 10 s: the demo is mid-way when stopped
    # unbuffered: each line reaches the test when printed, not when a pipe buffer fills
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Ctrl-C as in a terminal, even when the tests run in a background job (whose
    # children inherit SIGINT ignored, and Python then never raises KeyboardInterrupt)
    proc = subprocess.Popen(
        slow,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    seen = []
    for line in proc.stdout:  # until both batches are posted and followed
        seen.append(line)
        if line.startswith("batch 2:"):
            break
    else:
        raise AssertionError("".join(seen)[-2000:] + proc.stderr.read()[-2000:])
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    out = "".join(seen) + out
    assert proc.returncode == 130, out[-1000:] + err[-1000:]
    assert "Traceback" not in err
