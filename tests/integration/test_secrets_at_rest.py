"""Webhook signing secrets and the callback secret are encrypted at rest (AES-GCM under a
key derived from VIDBATCH_SECRET_KEY), on SQLite and PostgreSQL: what a copy of the
database shows, the migration of plain-text rows, rotation, and the key's provenance."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import TEST_SECRET_KEY, assert_audit_clean, keyed, keyed_engine, new_account
from vidbatch.db.engine import make_engine
from vidbatch.db.migrate import alembic_config, current_revision, head_revision, upgrade
from vidbatch.db.schema import enterprise_api_keys, server_secrets
from vidbatch.exceptions import ConfigError
from vidbatch.runtime import CALLBACK_SECRET, Runtime, open_engine
from vidbatch.services import accounts as account_svc
from vidbatch.settings import Settings
from vidbatch.webhooks.delivery import signing_secrets

OTHER_KEY = "another-secret-key-of-32-characters-or-more"


async def raw_secrets(engine: AsyncEngine) -> list[str]:
    """Every stored secret as a copy of the database shows it."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT webhook_secret FROM enterprise_api_keys "
                    "UNION ALL SELECT webhook_secret_previous FROM enterprise_api_keys "
                    "UNION ALL SELECT value FROM server_secrets"
                )
            )
        ).all()
    return [r[0] for r in rows if r[0] is not None]


async def stored(engine: AsyncEngine) -> dict[str, Any]:
    """The secrets as vidbatch reads them (decrypted)."""
    async with engine.connect() as conn:
        keys = (
            await conn.execute(
                enterprise_api_keys.select().order_by(enterprise_api_keys.c.created_at)
            )
        ).all()
        server = (await conn.execute(server_secrets.select())).all()
    return {
        "keys": [(k.id, k.webhook_secret, k.webhook_secret_previous) for k in keys],
        "server": {s.name: s.value for s in server},
    }


async def test_secrets_are_encrypted_in_the_database(
    settings_factory: Any, engine: AsyncEngine
) -> None:
    caller = await new_account(engine)
    first = await stored(engine)
    rotated = await account_svc.rotate_webhook_secret(engine, str(caller.key_id))
    rt = await Runtime.open(settings_factory(callback_secret=None), engine=engine)
    try:
        callback_key = rt.callback_key.decode()
    finally:
        await rt.close()

    raw = await raw_secrets(engine)
    assert len(raw) == 3  # current, previous, callback secret
    assert all(value.startswith("enc:v1:") for value in raw), raw
    old = first["keys"][0][1]
    for plain in (old, rotated, callback_key):
        assert plain and not any(plain in value for value in raw)

    # vidbatch itself reads them in clear: webhooks are signed with both during the overlap.
    now = await stored(engine)
    assert now["keys"][0][1:] == (rotated, old)
    assert now["server"][CALLBACK_SECRET] == callback_key
    from tests.helpers import items, new_batch
    from vidbatch.clock import utcnow

    batch = await new_batch(engine, caller, items(1))
    async with engine.connect() as conn:
        found = await signing_secrets(conn, [batch.batch_id], fallback=None, now=utcnow())
    assert found[batch.batch_id] == (rotated, old)
    # A process restarting reads the same callback secret back.
    rt = await Runtime.open(settings_factory(callback_secret=None), engine=engine)
    try:
        assert rt.callback_key.decode() == callback_key
    finally:
        await rt.close()
    await assert_audit_clean(engine)


async def test_migration_encrypts_plain_text_rows(db_url: str) -> None:
    engine = keyed_engine(db_url)
    try:

        def down(conn: Any) -> None:
            command.downgrade(alembic_config(conn), "0005")

        async with engine.begin() as conn:
            await conn.run_sync(down)
        assert await current_revision(engine) == "0005"
        caller = await new_account(engine)  # sealed already: the migration leaves it alone
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE enterprise_api_keys SET webhook_secret = 'whsec_plainAAAA', "
                    "webhook_secret_previous = 'whsec_plainBBBB'"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO server_secrets (name, value, created_at) "
                    "VALUES ('callback_secret', 'plain-callback', CURRENT_TIMESTAMP)"
                )
            )
        assert "whsec_plainAAAA" in await raw_secrets(engine)

        await upgrade(engine)

        assert await current_revision(engine) == head_revision()
        raw = await raw_secrets(engine)
        assert len(raw) == 3 and all(v.startswith("enc:v1:") for v in raw), raw
        now = await stored(engine)
        assert now["keys"] == [(caller.key_id, "whsec_plainAAAA", "whsec_plainBBBB")]
        assert now["server"] == {"callback_secret": "plain-callback"}
        # Without the key, sealed secrets cannot be downgraded nor plain ones upgraded.
        bare = make_engine(db_url)
        try:
            with pytest.raises(RuntimeError, match="needs the secret key"):
                async with bare.begin() as conn:
                    await conn.run_sync(down)
            # With it, the downgrade gives the version before 0007 its plain secrets back.
            async with engine.begin() as conn:
                await conn.run_sync(down)
            raw = await raw_secrets(engine)
            assert sorted(raw) == sorted(["whsec_plainAAAA", "whsec_plainBBBB", "plain-callback"])
            async with bare.begin() as conn:
                await conn.execute(text("UPDATE server_secrets SET value = 'plain-again'"))
            with pytest.raises(RuntimeError, match="needs the secret key"):
                await upgrade(bare)
        finally:
            await bare.dispose()
        await upgrade(engine)
        await assert_audit_clean(engine)
    finally:
        await engine.dispose()


def cli(db_url: str, *args: str, **env: str | None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "DATABASE_URL": db_url}
    for name, value in env.items():
        if value is None:
            full.pop(name, None)
        else:
            full[name] = value
    return subprocess.run(
        [sys.executable, "-m", "vidbatch", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_rotation_re_encrypts_every_secret(db_url: str, engine: AsyncEngine) -> None:
    caller = await new_account(engine)
    await account_svc.rotate_webhook_secret(engine, str(caller.key_id))
    await new_account(engine, name="other")
    async with engine.begin() as conn:
        await conn.execute(
            server_secrets.insert().values(
                name=CALLBACK_SECRET, value="the-callback-secret", created_at=_now()
            )
        )
    before = await stored(engine)
    raw_before = await raw_secrets(engine)

    # The new key alone cannot read what the old one sealed: start-up says what to do.
    new_only = keyed(make_engine(db_url), OTHER_KEY)
    try:
        with pytest.raises(ConfigError, match="VIDBATCH_SECRET_KEY_PREVIOUS"):
            await stored(new_only)
    finally:
        await new_only.dispose()

    done = cli(
        db_url,
        "secrets",
        "rotate",
        VIDBATCH_SECRET_KEY=OTHER_KEY,
        VIDBATCH_SECRET_KEY_PREVIOUS=TEST_SECRET_KEY,
    )
    assert done.returncode == 0, done.stderr
    assert "re-encrypted 4 secret(s)" in done.stdout

    new_only = keyed(make_engine(db_url), OTHER_KEY)
    try:
        assert await stored(new_only) == before
        raw_after = await raw_secrets(new_only)
        assert all(v.startswith("enc:v1:") for v in raw_after)
        assert not set(raw_after) & set(raw_before)
        # Rotating again changes nothing: every row is under the current key already.
        again = cli(db_url, "secrets", "rotate", VIDBATCH_SECRET_KEY=OTHER_KEY)
        assert again.returncode == 0 and "re-encrypted 0 secret(s)" in again.stdout
    finally:
        await new_only.dispose()
    # The old key alone no longer opens anything.
    with pytest.raises(ConfigError):
        await stored(engine)
    await assert_audit_clean(engine)


def _now() -> Any:
    from vidbatch.clock import utcnow

    return utcnow()


async def test_sqlite_without_a_key_generates_one_beside_the_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VIDBATCH_SECRET_KEY", raising=False)
    path = tmp_path / "fresh.db"
    settings = Settings(database_url=f"sqlite:///{path}", grsai_api_key="sk-test")
    assert settings.secret_key is None
    caplog.set_level(logging.INFO)
    engine = await open_engine(settings)
    try:
        caller = await new_account(engine)
        first = await stored(engine)
        assert all(v.startswith("enc:v1:") for v in await raw_secrets(engine))
    finally:
        await engine.dispose()
    key_path = tmp_path / "fresh.db.key"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key_path.read_text().strip()) >= 32
    said = [r.getMessage() for r in caplog.records if "VIDBATCH_SECRET_KEY" in r.getMessage()]
    assert len(said) == 1 and str(key_path) in said[0]
    assert key_path.read_text().strip() not in caplog.text

    # The next start reads the same key and says nothing more.
    caplog.clear()
    engine = await open_engine(settings)
    try:
        assert (await stored(engine))["keys"][0] == first["keys"][0]
        assert first["keys"][0][0] == caller.key_id
        await assert_audit_clean(engine)
    finally:
        await engine.dispose()
    assert "generated" not in caplog.text


@pytest.mark.postgres
def test_postgresql_refuses_to_start_without_a_key(pg_url: str) -> None:
    done = cli(pg_url, "accounts", "list", VIDBATCH_SECRET_KEY=None)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "VIDBATCH_SECRET_KEY" in lines[0], done.stderr
    served = cli(pg_url, "serve", "--port", "0", VIDBATCH_SECRET_KEY=None)
    assert served.returncode != 0
    assert served.stderr.strip().splitlines()[-1].count("VIDBATCH_SECRET_KEY") == 1


def test_a_short_secret_key_is_refused(tmp_path: Path) -> None:
    done = cli(f"sqlite:///{tmp_path / 'x.db'}", "accounts", "list", VIDBATCH_SECRET_KEY="short")
    assert done.returncode == 2
    assert "VIDBATCH_SECRET_KEY" in done.stderr and len(done.stderr.strip().splitlines()) == 1
