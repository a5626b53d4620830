"""The production checklist, the deployment files and the CLI-only variables name only
variables that exist: a setting, or an option's environment variable."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from vidbatch.cli.main import app
from vidbatch.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
VARIABLE = re.compile(
    r"\b(?:VIDBATCH|GRSAI|BATCH|ENTERPRISE|DATABASE|INTERNAL|APP|SITE|NEXT)_[A-Z0-9_]*[A-Z0-9]\b"
)


def settings_variables() -> set[str]:
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias: Any = field.validation_alias
        names |= {c for c in alias.choices if isinstance(c, str)}
    return names


def option_variables() -> set[str]:
    found: set[str] = set()

    def walk(cmd: Any) -> None:
        for param in cmd.params:
            env = getattr(param, "envvar", None)
            if isinstance(env, str):
                found.add(env)
            elif env:
                found.update(env)
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(typer.main.get_command(app))
    return found


def section(heading: str) -> str:
    start = README.index(heading + "\n")
    end = README.index("\n## ", start) if "\n## " in README[start:] else len(README)
    nxt = README.find("\n### ", start + len(heading))
    return README[start : min(end, nxt) if nxt != -1 else end]


def test_cli_only_variables_are_real_options() -> None:
    line = README[README.index("CLI-only:") :].split("\n\n", 1)[0]
    named = {v for v in VARIABLE.findall(line) if not v.startswith("VIDBATCH_TEST")}
    named -= {"VIDBATCH_REQUIRE_POSTGRES"}  # read by the tests
    assert named, line
    assert named <= option_variables(), named - option_variables()


def test_checklist_and_deploy_files_name_only_existing_variables() -> None:
    texts = [
        section("### Production checklist"),
        section("### Behind a reverse proxy, kept running"),
    ]
    texts += [p.read_text() for p in sorted((ROOT / "deploy").iterdir())]
    named = {v for text in texts for v in VARIABLE.findall(text)}
    assert {"GRSAI_API_KEY", "VIDBATCH_METRICS_TOKEN", "DATABASE_URL"} <= named
    unknown = named - settings_variables() - option_variables()
    assert unknown == set(), unknown


def test_checklist_covers_what_production_needs() -> None:
    text = section("### Production checklist").lower()
    for topic in (
        "secrets",
        "tls",
        "database",
        "backups",
        "metrics",
        "log shipping",
        "result store",
    ):
        assert f"**{topic}**" in text, topic
