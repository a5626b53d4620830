"""Secrets at rest: AES-256-GCM under a key derived (HKDF-SHA256) from the operator's
``VIDBATCH_SECRET_KEY``.

A sealed value is ``enc:v1:`` followed by the URL-safe base64 of a random 12-byte nonce and
the ciphertext with its tag. The prefix tells a sealed value from a plain one (rows written
before encryption existed), so the migration and ``vidbatch secrets rotate`` know what to do
with each row. Opening tries the current key, then the previous one (rotation).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEALED_PREFIX = "enc:v1:"
MIN_SECRET_KEY_CHARS = 32
_INFO = b"vidbatch secrets at rest v1"


class CannotOpen(Exception):
    """A sealed value opens under none of the configured keys."""


def derive(secret_key: str) -> bytes:
    """The 256-bit AES key of ``secret_key`` (any string of 32 characters or more)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO)
    return hkdf.derive(secret_key.encode())


def is_sealed(value: str) -> bool:
    return value.startswith(SEALED_PREFIX)


@dataclass(frozen=True)
class Keyring:
    """The current key, and the previous one while a rotation is under way."""

    current: bytes = field(repr=False)
    previous: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_secrets(cls, secret_key: str, previous: str | None = None) -> Keyring:
        return cls(derive(secret_key), derive(previous) if previous else None)

    def seal(self, plain: str) -> str:
        nonce = os.urandom(12)
        sealed = AESGCM(self.current).encrypt(nonce, plain.encode(), None)
        return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def open(self, value: str) -> str:
        """The plain text of a sealed ``value``; a plain ``value`` is returned as it is."""
        if not is_sealed(value):
            return value
        body = value[len(SEALED_PREFIX) :]
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        for key in (self.current, self.previous):
            if key is None:
                continue
            try:
                return AESGCM(key).decrypt(raw[:12], raw[12:], None).decode()
            except InvalidTag:
                continue
        raise CannotOpen(
            "a stored secret was encrypted under another VIDBATCH_SECRET_KEY: set "
            "VIDBATCH_SECRET_KEY_PREVIOUS to the old key and run `vidbatch secrets rotate`"
        )

    def opens_with_current(self, value: str) -> bool:
        if not is_sealed(value):
            return False
        try:
            Keyring(self.current).open(value)
        except CannotOpen:
            return False
        return True
