"""A first-time operator follows only the README: its own commands, run as written (ports
and the database URL substituted), reach a settled batch against the simulator — in
single-machine mode and in the PostgreSQL multi-process mode."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.processes import Proc, clean_env, free_port, http_json, wait_until

README = Path(__file__).resolve().parents[2] / "README.md"

pytestmark = pytest.mark.slow


def section(heading: str) -> str:
    """The README text under ``heading`` up to the next heading of the same or higher level."""
    text = README.read_text()
    level = heading.split(" ")[0]
    start = text.index(heading + "\n")
    rest = text[start + len(heading) + 1 :]
    stop = re.search(rf"^#{{1,{len(level)}}} ", rest, re.MULTILINE)
    return rest[: stop.start()] if stop else rest


def bash_blocks(text: str) -> list[list[str]]:
    return [
        [ln for ln in block.splitlines() if ln.strip()]
        for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
    ]


class Operator:
    """Runs README lines as a shell would, in a fresh directory, with `vidbatch` on PATH."""

    def __init__(self, tmp: Path, api_port: int, sim_port: int) -> None:
        self.tmp = tmp
        self.api_port = api_port
        self.sim_port = sim_port
        shim = tmp / "bin"
        shim.mkdir()
        exe = shim / "vidbatch"
        exe.write_text(f'#!/bin/sh\nexec {sys.executable} -m vidbatch "$@"\n')
        exe.chmod(0o755)
        self.env = clean_env()
        self.env["PATH"] = f"{shim}:{self.env.get('PATH', '')}"
        # The README's default ports may be taken on this machine: the same commands on
        # free ones (VIDBATCH_PORT and VIDBATCH_SIM_PORT are the options' variables).
        self.env["VIDBATCH_PORT"] = str(api_port)
        self.env["VIDBATCH_SIM_PORT"] = str(sim_port)
        self.procs: list[Proc] = []
        self.key: str | None = None
        self.batch_id: str | None = None
        self.last_output: Any = None
        self.database_url: str | None = None

    def substitute(self, line: str) -> str:
        line = line.replace("127.0.0.1:8000", f"127.0.0.1:{self.api_port}")
        line = line.replace("--port 8000", f"--port {self.api_port}")
        line = line.replace("8100", str(self.sim_port))
        if self.database_url:
            line = re.sub(r"postgresql://\S+", self.database_url, line)
        if self.key:
            line = line.replace("vb_...", self.key)
        if self.batch_id:
            line = line.replace("BATCH_ID", self.batch_id)
        return line

    def run(self, raw: str) -> None:
        words = shlex.split(self.substitute(raw), comments=True)
        if not words:
            return
        background = words[-1] == "&"
        words = [w for w in words if w != "&"]
        if words[0] == "export":
            for pair in words[1:]:
                name, _, value = pair.partition("=")
                self.env[name] = value
            return
        words = [self._expand(w) for w in words]
        if words[0] == "vidbatch" and (background or words[1] in ("serve", "worker", "simulator")):
            self._start(words)
        elif words[0] in ("vidbatch", "curl"):
            out = subprocess.run(
                words, env=self.env, cwd=self.tmp, capture_output=True, text=True, timeout=60
            )
            assert out.returncode == 0, f"{raw}: exit {out.returncode}\n{out.stdout}{out.stderr}"
            self._read(words, out.stdout)
        else:
            raise AssertionError(f"the test does not know how to run {raw!r}")

    def _expand(self, word: str) -> str:
        return re.sub(r"\$(\w+)", lambda m: self.env.get(m.group(1), ""), word)

    def _read(self, words: list[str], stdout: str) -> None:
        if words[:3] == ["vidbatch", "accounts", "create"]:
            found = re.search(r"vb_[A-Za-z0-9_-]{20,}", stdout)
            assert found, stdout
            self.key = found.group(0)
        if words[0] == "curl":
            self.last_output = json.loads(stdout)
            if "-X" in words and "batch_id" in self.last_output:
                self.batch_id = self.last_output["batch_id"]

    def _start(self, words: list[str]) -> None:
        name = f"{words[1]}-{len(self.procs)}"
        proc = Proc(words[1:], self.env, self.tmp / f"{name}.log", self.tmp)
        self.procs.append(proc)
        if words[1] == "serve":
            wait_until(
                lambda: self._ready(f"http://127.0.0.1:{self.api_port}/readyz", proc),
                what="the API answering",
            )
        elif words[1] == "simulator":
            wait_until(
                lambda: self._ready(f"http://127.0.0.1:{self.sim_port}/_sim/health", proc),
                what="the simulator answering",
            )
        else:
            proc.wait_for("worker started")

    @staticmethod
    def _ready(url: str, proc: Proc) -> bool:
        assert proc.p.poll() is None, proc.text()
        try:
            return http_json("GET", url)[0] == 200
        except OSError:
            return False

    def logs(self) -> str:
        return "\n".join(p.text() for p in self.procs)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


def settle_with_readme_curl(op: Operator, curl_block: list[str]) -> dict[str, Any]:
    post, get = curl_block[-2], curl_block[-1]
    op.run(curl_block[0])  # export KEY=...
    op.run(post)
    assert op.batch_id, op.last_output

    def settled() -> Any:
        op.run(get)
        view = op.last_output
        return view if view.get("completed_at") else None

    view: dict[str, Any] = wait_until(settled, timeout=90, what="the batch settling")
    return view


def assert_partial(op: Operator, view: dict[str, Any]) -> None:
    assert view["status"] == "partial", view
    assert (view["succeeded_count"], view["failed_count"]) == (1, 1)
    logs = op.logs()
    failed = [ln for ln in logs.splitlines() if "item failed" in ln]
    assert len(failed) == 1, logs
    assert f"batch_id={op.batch_id}" in failed[0]
    assert "task_id=" in failed[0] and "output_moderation" in failed[0]


def test_single_machine_with_the_simulator(tmp_path: Path) -> None:
    activate = bash_blocks(section("## Running it"))[0]
    assert "source .venv/bin/activate" in activate[0]  # the shim below stands for it
    blocks = bash_blocks(section("### Trying it against the simulator (no provider account)"))
    start, requests = blocks[0], blocks[1]
    op = Operator(tmp_path, free_port(), free_port())
    try:
        for line in start:
            op.run(line)
        view = settle_with_readme_curl(op, requests)
        assert_partial(op, view)
        serve_log = op.procs[0].text()
        assert f"provider host: http://127.0.0.1:{op.sim_port}" in serve_log
        assert "callback mode: polling" in serve_log
    finally:
        op.stop()


def test_postgresql_processes_with_the_simulator(tmp_path: Path, pg_url: str) -> None:
    blocks = bash_blocks(section("### Many machines (PostgreSQL)"))
    trial = next(b for b in blocks if any("vidbatch simulator" in ln for ln in b))
    requests = bash_blocks(section("### Trying it against the simulator (no provider account)"))[1]
    op = Operator(tmp_path, free_port(), free_port())
    op.database_url = pg_url
    try:
        for line in trial:
            op.run(line)
        kinds = [p.p.args[3] for p in op.procs]  # type: ignore[index]
        assert kinds == ["simulator", "serve", "worker"]
        view = settle_with_readme_curl(op, requests)
        assert_partial(op, view)
        # the API process has no worker; the worker process did the work
        assert "worker: not in this process" in op.procs[1].text()
        assert "task submitted" in op.procs[2].text()
    finally:
        op.stop()
