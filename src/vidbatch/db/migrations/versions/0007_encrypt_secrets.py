"""encrypt the stored webhook and callback secrets (enc:v1:, AES-GCM)

The key is the keyring of the engine that runs the migration (``vidbatch db upgrade`` and
``vidbatch serve`` attach it from ``VIDBATCH_SECRET_KEY`` or the SQLite key file): rows
still in plain text are sealed; sealed rows are left alone, so running it again is harmless.
No schema change: the columns keep their types.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 23:00:00.000000
"""

from __future__ import annotations

from alembic import op

from vidbatch.db.secrets import SEALED_COLUMNS, reseal_rows, unseal_rows
from vidbatch.db.types import keyring_of

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    keyring = keyring_of(bind.dialect)
    if keyring is None:
        # Only a database without any secret can be migrated without the key.
        for table_name, _key, column_name in SEALED_COLUMNS:
            found = bind.exec_driver_sql(
                f"SELECT 1 FROM {table_name} WHERE {column_name} IS NOT NULL LIMIT 1"  # noqa: S608
            ).first()
            if found is not None:
                raise RuntimeError(
                    "migration 0007 encrypts the stored secrets and needs the secret key: "
                    "run it with `vidbatch db upgrade` (VIDBATCH_SECRET_KEY set)"
                )
        return
    reseal_rows(bind, keyring, only_plain=True)


def downgrade() -> None:
    # The version before 0007 reads the columns as plain text: decrypt them, or it would
    # sign every webhook and callback token with the ciphertext.
    bind = op.get_bind()
    keyring = keyring_of(bind.dialect)
    if keyring is None:
        for table_name, _key, column_name in SEALED_COLUMNS:
            found = bind.exec_driver_sql(
                f"SELECT 1 FROM {table_name} WHERE {column_name} LIKE 'enc:%' LIMIT 1"  # noqa: S608
            ).first()
            if found is not None:
                raise RuntimeError(
                    "downgrading below 0007 decrypts the stored secrets and needs the secret "
                    "key: run it through an engine vidbatch opened with VIDBATCH_SECRET_KEY"
                )
        return
    unseal_rows(bind, keyring)
