"""`vidbatch doctor`, run for real: one line per check, exit 0 when all pass, exit 1 naming
what fails; and /readyz reporting the provider and the result store without failing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.processes import Proc, answers, clean_env, free_port, http_json, wait_until
from tests.simulator_fixture import SimulatorHandle

pytestmark = pytest.mark.slow

CHECKS = ["configuration", "database", "provider", "callback URL", "result store"]


def doctor(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vidbatch", "doctor"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert "Traceback" not in result.stdout + result.stderr
    out = {}
    for line in result.stdout.splitlines():
        mark, rest = line[:4], line[6:]  # "ok  ", "FAIL" or "skip", two spaces, the check
        name, detail = rest.split(": ", 1)
        out[name] = f"{mark.strip()} {detail}"
    assert list(out) == CHECKS, result.stdout
    return out


def test_doctor_passes_on_a_sound_deployment_and_readyz_reports(
    tmp_path: Path, sim: SimulatorHandle
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env(
        DATABASE_URL=f"sqlite:///{tmp_path}/v.db",
        GRSAI_HOST=sim.url,
        GRSAI_API_KEY="sk-doctor",
        APP_URL=base,
        VIDBATCH_REQUIRE_HTTPS_VIDEO_URL="false",
        PYTHONFAULTHANDLER="1",
    )
    serve = Proc(["serve", "--port", str(port)], env, tmp_path / "s.log", tmp_path)
    try:
        wait_until(lambda: answers(f"{base}/readyz"), what="ready")
        status, ready = http_json("GET", f"{base}/readyz")
        result = doctor(env, tmp_path)
    finally:
        serve.stop()
    assert status == 200 and ready["ok"] is True
    # nothing has asked the provider anything yet: reported, not failing
    assert ready["provider"] == {"answered_recently": False, "last_answer_at": None}
    # unset on SQLite: the local directory beside the database, which takes a write
    store = f"local directory {tmp_path / 'vidbatch-results'}: writable"
    assert ready["result_store"] == {"writable": True, "detail": store}
    found = lines(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert found["provider"].startswith("ok ") and sim.url in found["provider"]
    assert found["callback URL"].startswith("ok ") and base in found["callback URL"]
    assert found["database"].startswith("ok ")
    assert found["result store"] == f"ok {store}"


def test_doctor_names_each_failure_and_exits_1(tmp_path: Path, sim: SimulatorHandle) -> None:
    sim.configure(api_key="sk-the-right-one")
    env = clean_env(
        DATABASE_URL=f"sqlite:///{tmp_path}/never-migrated.db",
        GRSAI_HOST=sim.url,
        GRSAI_API_KEY="sk-a-wrong-one",
        APP_URL=f"http://127.0.0.1:{free_port()}",
    )
    result = doctor(env, tmp_path)
    assert result.returncode == 1
    found = lines(result)
    assert found["configuration"].startswith("ok ")
    assert found["database"].startswith("FAIL ") and "vidbatch db upgrade" in found["database"]
    assert found["provider"].startswith("FAIL ") and "refused" in found["provider"]
    assert found["callback URL"].startswith("FAIL ") and "unreachable" in found["callback URL"]
    assert "sk-a-wrong-one" not in result.stdout


def test_doctor_on_a_bad_setting_is_one_failing_line(tmp_path: Path) -> None:
    result = doctor(clean_env(VIDBATCH_LEASE_SECONDS="-4"), tmp_path)
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL  configuration: VIDBATCH_LEASE_SECONDS")
    assert len(result.stdout.splitlines()) == 1
