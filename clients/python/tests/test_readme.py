"""Every snippet of clients/python/README.md, run against a real server as a customer would
run it: the shell commands in a shell (with the README's placeholders replaced by the test
server's URL and a real key), the Python snippets as they are, the example webhook receiver
with a real delivery."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from test_webhooks import wait_for
from vbstack import Account, Receiver, Server
from vidbatch_client import Client

HERE = Path(__file__).resolve().parent.parent
README = HERE / "README.md"
MAKEFILE = HERE.parent.parent / "Makefile"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)

pytestmark = pytest.mark.one_database


def blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(README.read_text())]


def of(kind: str) -> list[str]:
    return [text for lang, text in blocks() if lang == kind]


def shell(
    script: str, cwd: Path, server: Server, account: Account
) -> subprocess.CompletedProcess[str]:
    script = script.replace("https://vidbatch.example.com", server.base_url).replace(
        "vb_your_key", account.api_key
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDBATCH_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )


def test_every_snippet_is_one_the_tests_run() -> None:
    """The tests below unpack the README's blocks by kind and order: a new snippet must come
    with its test."""
    kinds = [lang for lang, _ in blocks()]
    assert (
        kinds == ["bash", "bash", "jsonl", "csv", "bash", "bash", "bash", "bash"] + ["python"] * 6
    )


def test_the_install_command_is_the_one_ci_runs() -> None:
    install = of("bash")[0].strip()
    assert install == "pip install ./clients/python"
    assert install in MAKEFILE.read_text()


def test_the_command_line_snippets(server: Server, account: Account, tmp_path: Path) -> None:
    (tmp_path / "prompts.jsonl").write_text(of("jsonl")[0])
    (tmp_path / "prompts.csv").write_text(of("csv")[0])
    _, setup, submit, again, others, cancel = of("bash")

    first = shell(f"set -euo pipefail\n{setup}\n{submit}", tmp_path, server, account)
    assert first.returncode == 0, first.stderr
    assert "created" in first.stderr and first.stdout.count(".mp4") == 3

    second = shell(f"set -euo pipefail\n{setup}\n{again}", tmp_path, server, account)
    assert second.returncode == 0, second.stderr
    assert (
        "already submitted" in second.stderr and "0 downloaded, 3 already present" in second.stderr
    )

    rest = shell(
        f"set -euo pipefail\n{setup}\n{others}\n{cancel}\necho $?", tmp_path, server, account
    )
    assert "Traceback" not in rest.stderr
    balance = json.loads([line for line in rest.stdout.splitlines() if line.startswith("{")][-1])
    assert balance["total"] == balance["available"] + balance["reserved"]
    assert (tmp_path / "results.csv").read_text().startswith("index,")
    # cancel either refunded what had not started or said the batch had already ended
    assert "refunded" in rest.stdout or "BATCH_ALREADY_ENDED" in rest.stderr


def test_the_python_snippets(
    server: Server,
    account: Account,
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VIDBATCH_API_KEY", account.api_key)
    monkeypatch.setenv("VIDBATCH_BASE_URL", server.base_url)
    monkeypatch.setenv("VIDBATCH_WEBHOOK_SECRET", account.webhook_secret)
    quickstart, errors, retries, credits, asynchronous, receiver_app = of("python")

    exec(compile(quickstart, "README quickstart", "exec"), {})
    out = capsys.readouterr().out
    assert "succeeded" in out and "2 downloaded, 0 already there" in out
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 2

    exec(compile(errors, "README errors", "exec"), {})
    problems = capsys.readouterr().out.splitlines()
    assert [p.split()[:2] for p in problems] == [["0", "prompt"], ["1", "duration"]]

    exec(compile(retries, "README retries", "exec"), {})
    exec(compile(credits, "README credits", "exec"), {})
    exec(compile(asynchronous, "README async", "exec"), {})
    out = capsys.readouterr().out
    assert "succeeded 1" in out

    namespace: dict[str, object] = {}
    exec(compile(receiver_app, "README receiver", "exec"), namespace)
    with Client(account.api_key, server.base_url) as vb:
        vb.create_batch(["hooked"], webhook_url=receiver.url)
    wait_for(lambda: bool(receiver.deliveries), "a delivery")
    headers, body = receiver.deliveries[0]
    signed = {k: v for k, v in headers.items() if k.lower().startswith(("webhook-", "x-"))}
    with TestClient(namespace["app"]) as app:  # type: ignore[arg-type]
        assert app.post("/hooks/vidbatch", content=body, headers=signed).status_code == 204
        forged = app.post("/hooks/vidbatch", content=body + b" ", headers=signed)
        assert forged.status_code == 400
