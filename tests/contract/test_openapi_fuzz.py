"""Schemathesis, a schema-driven tester nobody here wrote, against a real `vidbatch serve`:
every customer operation in `/openapi.json` (the /api/v1 endpoints, the original's create
endpoints and the provider callback), with a valid key, a fixed seed and a bounded number of
examples. No answer may be a 5xx, use an undocumented status code or content type, or have a
body that violates the document."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.test_seed_acceptance import wait_http
from vidbatch.embedded import bind

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance"
)
#: Operator surfaces (admin token, worker secret, dashboard) are not a customer's.
EXCLUDE = r"^/(api/admin|admin|api/internal)"
EXAMPLES = 15


def _vidbatch(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "vidbatch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A `vidbatch serve` on a fresh SQLite file, and an API key with ample credits."""
    sock = bind()
    port = sock.getsockname()[1]
    sock.close()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'fuzz.db'}",
        "GRSAI_HOST": "http://127.0.0.1:9",  # never reached: no worker runs
        "GRSAI_API_KEY": "sk-fuzz",
        "VIDBATCH_LOG_LEVEL": "WARNING",
    }
    _vidbatch(env, "db", "upgrade")
    account = json.loads(
        _vidbatch(
            env,
            "accounts",
            "create",
            "fuzz",
            "--credits",
            "100000000",
            "--rate-limit",
            "100000",
            "--json",
        )
    )
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "vidbatch", "serve", "--no-worker", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield f"http://127.0.0.1:{port}", account["api_key"]
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_schemathesis_finds_no_violation_of_the_document(
    served: tuple[str, str], tmp_path: Path
) -> None:
    base_url, api_key = served
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli, "schemathesis is a dev dependency: `make venv` installs it"
    result = subprocess.run(
        [
            cli,
            "run",
            f"{base_url}/openapi.json",
            "--header",
            f"x-api-key: {api_key}",
            "--exclude-path-regex",
            EXCLUDE,
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            "20261202",
            "--checks",
            CHECKS,
            "--phases",
            "examples,coverage,fuzzing",
            "--workers",
            "1",
            "--report-dir",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # its cache and reports stay out of the repository
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "generated" in result.stdout
