"""An S3-compatible server for the tests: moto's standalone server (``moto_server``, from
the ``moto[server]`` dev extra) started as a separate process on a free port, once per
session. Tests reach it over real HTTP, as any S3 client would.

When it cannot start, the S3 tests skip with the reason, unless ``VIDBATCH_REQUIRE_S3=1``
(``.ci/run`` sets it) makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REQUIRE_S3 = os.environ.get("VIDBATCH_REQUIRE_S3") == "1"
#: moto accepts any credentials; these are what the tests sign with.
ACCESS_KEY = "vidbatch-test"
SECRET_KEY = "vidbatch-test-secret"
REGION = "us-east-1"


@dataclass
class S3Server:
    url: str
    process: subprocess.Popen[bytes] | None = None

    def create_bucket(self, name: str | None = None) -> str:
        """A new empty bucket (moto takes an unsigned CreateBucket)."""
        bucket = name or f"vb-{uuid.uuid4().hex[:12]}"
        httpx.put(f"{self.url}/{bucket}", timeout=10).raise_for_status()
        return bucket

    def settings(self, bucket: str, prefix: str = "archive") -> dict[str, str]:
        """The settings of a store in ``bucket`` (for ``settings_factory``)."""
        return {
            "result_store": f"s3://{bucket}/{prefix}",
            "aws_endpoint_url": self.url,
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
            "aws_region": REGION,
        }

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _moto_server() -> str | None:
    here = Path(sys.executable).parent / "moto_server"
    return str(here) if here.exists() else shutil.which("moto_server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unavailable(reason: str) -> None:
    if REQUIRE_S3:
        pytest.fail(f"VIDBATCH_REQUIRE_S3=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto_server on a free port for the whole session, stopped at the end."""
    binary = _moto_server()
    if binary is None:
        _unavailable("moto_server is not installed (pip install 'moto[server]')")
    assert binary is not None
    port = _free_port()
    process = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = S3Server(f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{server.url}/moto-api/", timeout=2)
            break
        except httpx.HTTPError:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                _unavailable(f"moto_server did not start (exit {process.poll()})")
            time.sleep(0.1)
    try:
        yield server
    finally:
        server.stop()
