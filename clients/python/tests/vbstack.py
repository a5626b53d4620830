"""A real vidbatch server for the client's tests: ``vidbatch simulator`` and ``vidbatch serve``
as subprocesses (the server's command line, taken from ``VIDBATCH_SERVER_BIN``), on SQLite or
PostgreSQL; plus a fault-injecting proxy and a webhook receiver, both plain HTTP servers."""

from __future__ import annotations

import http.server
import json
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

PG_URL = os.environ.get(
    "VIDBATCH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_PG = os.environ.get("VIDBATCH_REQUIRE_POSTGRES") == "1"
GRSAI_KEY = "sk-client-tests"
STANDARD_CREDITS = 100_000


def server_bin() -> str | None:
    """The server's command line: ``VIDBATCH_SERVER_BIN``, else ``vidbatch`` on PATH."""
    return os.environ.get("VIDBATCH_SERVER_BIN") or shutil.which("vidbatch")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args!r} exited {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} did not come up:\n{log.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def create_pg_database(binary: str) -> str:
    """A fresh PostgreSQL database for one server (made with the server's own Python, so the
    client's environment needs no database driver); its URL, or raises RuntimeError."""
    name = f"vbclient_{uuid.uuid4().hex[:12]}"
    python = str(Path(binary).with_name("python"))
    script = (
        "import asyncio, sys, asyncpg\n"
        "async def main():\n"
        "    conn = await asyncpg.connect(sys.argv[1], timeout=5)\n"
        "    await conn.execute(f'CREATE DATABASE \"{sys.argv[2]}\"')\n"
        "    await conn.close()\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run(
        [python, "-c", script, PG_URL, name], capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else "failed")
    parts = urlsplit(PG_URL)
    return parts._replace(path=f"/{name}").geturl()


def drop_pg_database(binary: str, url: str) -> None:
    python = str(Path(binary).with_name("python"))
    name = urlsplit(url).path.lstrip("/")
    script = (
        "import asyncio, sys, asyncpg\n"
        "async def main():\n"
        "    conn = await asyncpg.connect(sys.argv[1], timeout=5)\n"
        "    await conn.execute(f'DROP DATABASE IF EXISTS \"{sys.argv[2]}\" WITH (FORCE)')\n"
        "    await conn.close()\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([python, "-c", script, PG_URL, name], capture_output=True, timeout=30)


@dataclass
class Account:
    api_key: str
    webhook_secret: str
    account_id: str
    credits: int


@dataclass
class Server:
    """``vidbatch serve`` (API and worker) on one database, with the simulator behind it."""

    binary: str
    database_url: str
    simulator_url: str
    tmp: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    #: Customers with STANDARD_CREDITS, made ahead by a thread (each takes a CLI process).
    ready: queue.Queue[Account] = field(default_factory=lambda: queue.Queue(maxsize=2))
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("NEXT_PUBLIC_SITE_URL", "SITE_URL", "NEXT_PUBLIC_APP_URL")
            and not k.startswith(("VIDBATCH_API_KEY", "VIDBATCH_BASE_URL"))
        }
        env.update(
            {
                "DATABASE_URL": self.database_url,
                "GRSAI_HOST": self.simulator_url,
                "GRSAI_API_KEY": GRSAI_KEY,
                "INTERNAL_WORKER_SECRET": "client-tests-worker-secret",
                "VIDBATCH_CALLBACK_SECRET": "client-tests-callback-secret",
                # callbacks from the simulator reach the server directly
                # polling mode (no APP_URL): the fastest with a zero-latency simulator
                "VIDBATCH_REQUIRE_HTTPS_VIDEO_URL": "false",
                "VIDBATCH_ALLOW_PRIVATE_WEBHOOKS": "1",
                # the provider's URLs pass through (no result store), which keeps the suite
                # short; archived fields are exercised against a stand-in file server
                "VIDBATCH_RESULT_STORE": "none",
                "VIDBATCH_ALLOW_PRIVATE_URLS": "1",
                "VIDBATCH_SECRET_KEY": "client-tests-secret-key-of-32-characters",
                "ENTERPRISE_BATCH_MAX_ITEMS": "1000",
                "VIDBATCH_DEFAULT_RATE_LIMIT": "100000",
                # the worker settings bench/README.md found fastest with a zero-latency
                # provider (about 60 tasks/s on SQLite on a 2-core machine)
                "BATCH_WORKER_MAX_CLAIM": "20",
                "BATCH_WORKER_MAX_START_TASKS_PER_BATCH": "100",
                "BATCH_WORKER_MAX_POLL": "500",
                "BATCH_WORKER_MAX_SETTLE": "50",
                "BATCH_TASK_CONCURRENCY": "16",
                "VIDBATCH_POLL_INTERVALS": "0.05,0.1,0.2",
                "VIDBATCH_WORKER_IDLE_SECONDS": "0.05",
                "VIDBATCH_LOG_LEVEL": "WARNING",
            }
        )
        return env

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.binary, *args], env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"vidbatch {args}: {done.stdout}\n{done.stderr}"
        return done

    def start(self) -> None:
        self.cli("db", "upgrade")
        log = self.tmp / f"serve-{self.port}.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [self.binary, "serve", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_http(f"{self.base_url}/readyz", self.proc, log)
        threading.Thread(target=self._make_accounts, daemon=True).start()

    def _make_accounts(self) -> None:
        while not self.stopping.is_set():
            try:
                account = self.account(STANDARD_CREDITS)
            except (AssertionError, subprocess.SubprocessError):
                return  # the server is being stopped; fresh_account() reports a shortage
            while not self.stopping.is_set():
                try:
                    self.ready.put(account, timeout=0.5)
                    break
                except queue.Full:
                    continue

    def fresh_account(self) -> Account:
        """A new customer with STANDARD_CREDITS credits (its own ledger and batches)."""
        return self.ready.get(timeout=120)

    def stop(self) -> None:
        self.stopping.set()
        if self.proc is not None:
            stop(self.proc)

    def account(self, credits: int) -> Account:
        """A new customer with its own key and webhook secret, made with the server's CLI."""
        name = f"client-{uuid.uuid4().hex[:8]}"
        out = self.cli("accounts", "create", name, "--credits", str(credits), "--json").stdout
        data = json.loads(out.strip().splitlines()[-1])
        return Account(
            api_key=data["api_key"],
            webhook_secret=data["webhook_secret"],
            account_id=data["account_id"],
            credits=credits,
        )


def start_simulator(binary: str, tmp: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    log = tmp / "simulator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                "simulator",
                "--port",
                str(port),
                "--seed",
                "7",
                "--gen-time",
                "0",
                "--callback-interval",
                "0.05",
                "--log-level",
                "warning",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/_sim/health", proc, log)
    return url, proc


# --- a small HTTP server for the proxy and the webhook receiver ---------------------------

Handler = Callable[[str, str, dict[str, str], bytes], tuple[int, dict[str, str], bytes]]


class Tiny:
    """A threaded HTTP server calling ``handle(method, path, headers, body)``."""

    def __init__(self, handle: Handler) -> None:
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, payload = outer.handle(
                    self.command, self.path, dict(self.headers.items()), body
                )
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client is gone (killed on purpose)

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.handle = handle
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class FaultProxy:
    """Forwards to the server; ``faults`` are answered instead of forwarding, in order, for
    requests matching ``(method, path prefix)``: an int status (with ``Retry-After: 0`` on a
    429), or ``"hold"`` (the request is forwarded, then its answer waits for ``release``: a
    client killed meanwhile never sees it), or ``"lose"`` (forwarded, then answered 502: the
    server did the work, the client never heard)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: list[tuple[str, str, int | str]] = []
        self.seen: list[tuple[str, str, int]] = []
        self.release = threading.Event()
        self.held = threading.Event()
        self.lock = threading.Lock()
        self.http = httpx.Client(base_url=upstream, timeout=60)
        self.server = Tiny(self._handle)
        self.url = self.server.url

    def inject(self, method: str, prefix: str, *answers: int | str) -> None:
        with self.lock:
            self.faults.extend((method, prefix, a) for a in answers)

    def _next_fault(self, method: str, path: str) -> int | str | None:
        with self.lock:
            for n, (m, prefix, answer) in enumerate(self.faults):
                if m == method and path.startswith(prefix):
                    del self.faults[n]
                    return answer
        return None

    def _handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        fault = self._next_fault(method, path)
        if isinstance(fault, int):
            self.seen.append((method, path, fault))
            extra = {"retry-after": "0"} if fault == 429 else {}
            payload = {"ok": False, "error": "INJECTED", "message": f"injected {fault}"}
            return (
                fault,
                {"content-type": "application/json", **extra},
                json.dumps(payload).encode(),
            )
        forwarded = {k: v for k, v in headers.items() if k.lower() not in HOP}
        r = self.http.request(method, path, headers=forwarded, content=body)
        self.seen.append((method, path, r.status_code))
        if fault == "hold":
            self.held.set()
            self.release.wait(60)
        if fault == "lose":
            self.seen[-1] = (method, path, 502)
            return 502, {"content-type": "text/plain"}, b"bad gateway"
        out = {k: v for k, v in r.headers.items() if k.lower() not in HOP | {"content-encoding"}}
        return r.status_code, out, r.content

    def close(self) -> None:
        self.release.set()
        self.server.close()
        self.http.close()


class Receiver:
    """Records every webhook delivery (raw body and headers) and answers 204."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.server = Tiny(self._handle)
        self.url = self.server.url + "/hooks"

    def _handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        self.deliveries.append((headers, body))
        return 204, {}, b""

    def events(self) -> list[str]:
        return [json.loads(b)["event"] for _, b in self.deliveries]

    def close(self) -> None:
        self.server.close()
