"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from vidbatch.domain.sealing import CannotOpen, Keyring, is_sealed
from vidbatch.exceptions import ConfigError


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes everywhere; SQLite stores them naive, in UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return as_utc(value)


def as_utc(value: Any) -> datetime | None:
    """A datetime read from either database (SQLite may give ISO text, naive) in UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")


#: The attribute of an engine's dialect that holds its :class:`Keyring` (see db/secrets.py).
KEYRING_ATTRIBUTE = "vidbatch_keyring"


def keyring_of(dialect: Dialect) -> Keyring | None:
    found = getattr(dialect, KEYRING_ATTRIBUTE, None)
    return found if isinstance(found, Keyring) else None


class Sealed(TypeDecorator[str]):
    """A secret encrypted at rest (``enc:v1:…``, AES-GCM) with the keyring of the engine
    that writes or reads it; a row written before encryption existed reads as it is."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None or is_sealed(value):
            return value
        keyring = keyring_of(dialect)
        if keyring is None:
            raise MissingKeyring("no secret key: open the database with open_database()")
        return keyring.seal(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        if value is None or not is_sealed(value):
            return value
        keyring = keyring_of(dialect)
        if keyring is None:
            raise MissingKeyring("no secret key: open the database with open_database()")
        try:
            return keyring.open(value)
        except CannotOpen as exc:
            raise ConfigError(str(exc)) from None


class SealedText(Sealed):
    """:class:`Sealed` over an unbounded text column."""

    impl = Text
    cache_ok = True


class MissingKeyring(RuntimeError):
    """A sealed column was written or read on an engine without a keyring (a bug)."""
