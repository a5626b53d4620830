"""Checking what the real command line printed, as an operator would read it."""

from __future__ import annotations

import json
import subprocess
from typing import Any


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


def one_json(result: subprocess.CompletedProcess[str]) -> Any:
    """The output is exactly one JSON value on one line."""
    lines = ok(result).strip().splitlines()
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


def assert_usage_error(result: subprocess.CompletedProcess[str]) -> str:
    """Exit code 2 and exactly one line on stderr starting with 'error:', no traceback."""
    assert result.returncode == 2, (
        f"{result.args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"{result.args}: {result.stderr!r}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]
