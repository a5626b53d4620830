"""The README's configuration table is the settings object's, so the two cannot drift."""

from __future__ import annotations

from pathlib import Path

from vidbatch.settings import Settings, configuration_table

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
