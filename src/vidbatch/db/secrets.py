"""The keyring that encrypts secrets at rest, and the rows it seals.

The key comes from ``VIDBATCH_SECRET_KEY`` (passed in by the entry point). On SQLite
without it, one is generated on first start into a ``0600`` file beside the database
(``<database>.key``) so the embedded default keeps working; on PostgreSQL there is no such
place every process shares, so the key is required.

Each engine carries its keyring on its dialect (:data:`vidbatch.db.types.KEYRING_ATTRIBUTE`):
the ``Sealed`` columns encrypt on write and decrypt on read with it, and a migration run on
that engine's connection finds it there too.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from sqlalchemy import Connection, column, table, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from vidbatch.db.types import KEYRING_ATTRIBUTE, keyring_of
from vidbatch.domain.sealing import MIN_SECRET_KEY_CHARS, CannotOpen, Keyring, is_sealed
from vidbatch.exceptions import ConfigError

log = logging.getLogger(__name__)

#: Every column holding a secret: (table, primary key, column).
SEALED_COLUMNS = (
    ("enterprise_api_keys", "id", "webhook_secret"),
    ("enterprise_api_keys", "id", "webhook_secret_previous"),
    ("server_secrets", "name", "value"),
)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for PostgreSQL or an in-memory database."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return None
    if not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def create_private_file(path: Path) -> None:
    """Create ``path`` readable by its owner only when it does not exist yet (SQLite gives
    its -wal and -shm files the same permissions)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def key_file(database: Path) -> Path:
    return database.with_name(database.name + ".key")


def _file_key(database: Path) -> str:
    path = key_file(database)
    if not path.exists():
        # Written aside and linked into place: two processes starting at once agree on
        # one key, and nobody reads a half-written file.
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48) + "\n")
        try:
            os.link(tmp, path)
            log.warning(
                "VIDBATCH_SECRET_KEY is not set: generated a secret key into %s (readable by "
                "its owner only); it encrypts the stored webhook and callback secrets, so "
                "keep it with the database but out of its backups",
                path,
                extra={"action": "secret_key_generated"},
            )
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    value = path.read_text().strip()
    if len(value) < MIN_SECRET_KEY_CHARS:
        raise ConfigError(f"{path}: the secret key file holds fewer than 32 characters")
    return value


def resolve_keyring(url: str, secret_key: str | None, previous: str | None = None) -> Keyring:
    """The keyring of ``VIDBATCH_SECRET_KEY`` (and ``_PREVIOUS``), or of the key file beside
    a SQLite database; ConfigError naming the variable on PostgreSQL without one."""
    if secret_key:
        return Keyring.from_secrets(secret_key, previous)
    database = sqlite_path(url)
    if database is not None:
        return Keyring.from_secrets(_file_key(database), previous)
    if make_url(url).drivername.startswith("sqlite"):
        return Keyring.from_secrets(secrets.token_urlsafe(48))  # in memory: dies with it
    raise ConfigError(
        "VIDBATCH_SECRET_KEY must be set on PostgreSQL (32 characters or more; it encrypts "
        "the stored webhook and callback secrets)"
    )


def attach_keyring(engine: AsyncEngine, keyring: Keyring) -> AsyncEngine:
    setattr(engine.sync_engine.dialect, KEYRING_ATTRIBUTE, keyring)
    return engine


def reseal_rows(conn: Connection, keyring: Keyring, *, only_plain: bool) -> int:
    """Encrypt every secret with the current key: the plain ones only (the migration), or
    also those sealed under the previous key (rotation). Returns how many rows changed."""
    changed = 0
    for table_name, key_name, column_name in SEALED_COLUMNS:
        raw = table(table_name, column(key_name), column(column_name))
        rows = conn.execute(raw.select().where(raw.c[column_name].is_not(None))).all()
        for key, value in rows:
            if is_sealed(value) and (only_plain or keyring.opens_with_current(value)):
                continue
            try:
                plain = keyring.open(value)
            except CannotOpen as exc:
                raise ConfigError(str(exc)) from None
            conn.execute(
                update(raw).where(raw.c[key_name] == key).values({column_name: keyring.seal(plain)})
            )
            changed += 1
    return changed


def unseal_rows(conn: Connection, keyring: Keyring) -> int:
    """Decrypt every sealed secret back to plain text (migration 0007's downgrade, so the
    version before it can sign with them again). Returns how many rows changed."""
    changed = 0
    for table_name, key_name, column_name in SEALED_COLUMNS:
        raw = table(table_name, column(key_name), column(column_name))
        rows = conn.execute(raw.select().where(raw.c[column_name].is_not(None))).all()
        for key, value in rows:
            if not is_sealed(value):
                continue
            try:
                plain = keyring.open(value)
            except CannotOpen as exc:
                raise ConfigError(str(exc)) from None
            conn.execute(update(raw).where(raw.c[key_name] == key).values({column_name: plain}))
            changed += 1
    return changed


async def rotate(engine: AsyncEngine) -> int:
    """Re-encrypt every stored secret under the current key (``vidbatch secrets rotate``)."""
    keyring = keyring_of(engine.sync_engine.dialect)
    if keyring is None:
        raise ConfigError("VIDBATCH_SECRET_KEY: no secret key configured")
    async with engine.begin() as conn:
        return await conn.run_sync(lambda sync: reseal_rows(sync, keyring, only_plain=False))
