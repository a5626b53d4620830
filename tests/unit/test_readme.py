"""The README tells the truth: its configuration table is the settings object's, and its
webhook-verification examples verify what vidbatch really sends."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from vidbatch.settings import Settings, configuration_table
from vidbatch.webhooks.signing import encode_body, signature_headers

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_configuration_table_matches_settings() -> None:
    assert configuration_table() in README.read_text()


def test_every_setting_is_in_the_table() -> None:
    table = configuration_table()
    for field in Settings.model_fields.values():
        assert f"`{field.validation_alias.choices[0]}`" in table  # type: ignore[union-attr]


def test_readme_gives_the_two_commands() -> None:
    text = README.read_text()
    assert "make demo" in text
    assert "make test" in text


def _snippet(language: str, defines: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.DOTALL)
    found = [b for b in blocks if defines in b]
    assert found, f"no {language} example defining {defines} in the README"
    return found[0]


def _signed_delivery(secret: str) -> tuple[bytes, dict[str, str]]:
    body = encode_body({"event": "batch.created", "batch_id": "b1", "note": "crème"})
    return body, signature_headers([secret], "evt_1", int(time.time()), body)


def test_readme_python_verifier_accepts_a_real_delivery() -> None:
    namespace: dict[str, Any] = {}
    exec(
        _snippet("python", "def verify_sora2"), namespace
    )  # the README's own code, as a customer copies it
    body, headers = _signed_delivery("whsec_abc/+=")
    assert namespace["verify_sora2"](body, headers, "whsec_abc/+=")
    assert not namespace["verify_sora2"](body, headers, "whsec_other")
    assert not namespace["verify_sora2"](body + b" ", headers, "whsec_abc/+=")


def test_readme_javascript_verifier_accepts_a_real_delivery(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the README's JavaScript example is not run")
    body, headers = _signed_delivery("whsec_abc/+=")
    script = tmp_path / "verify.mjs"
    script.write_text(
        _snippet("js", "function verifySora2")
        + "\nconst h = new Headers(JSON.parse(process.argv[2]));\n"
        + "const body = new TextEncoder().encode(process.argv[3]).buffer;\n"
        + "console.log(await verifySora2(body, h, 'whsec_abc/+='),"
        + " await verifySora2(body, h, 'whsec_other'));\n"
    )
    out = subprocess.run(
        [node, str(script), json.dumps(headers), body.decode()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split() == ["true", "false"]
