"""Running the installed ``vidbatch-client`` command as a customer would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from vbstack import Account, Server


def command() -> list[str]:
    found = shutil.which("vidbatch-client", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "vidbatch_client.cli"]


def env_for(base_url: str, account: Account) -> dict[str, str]:
    return {
        **os.environ,
        "VIDBATCH_API_KEY": account.api_key,
        "VIDBATCH_BASE_URL": base_url,
        "COLUMNS": "120",
    }


def run(
    server: Server | str, account: Account, *args: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    base = server if isinstance(server, str) else server.base_url
    return subprocess.run(
        [*command(), *args],
        env=env_for(base, account),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def popen(base_url: str, account: Account, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*command(), *args],
        env=env_for(base_url, account),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
