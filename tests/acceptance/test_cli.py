"""The operator's command line, run for real: `python -m vidbatch ...` in a subprocess against
a SQLite file (and once against PostgreSQL), reading only what an operator would see."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.acceptance.cli_helpers import assert_usage_error, ok, one_json

ACCOUNT_VIEW = {"account_id", "name", "balance_credits", "frozen_credits", "available_credits"}


def vb(args: Sequence[str], db_url: str | None, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the real command line; ``db_url`` goes in DATABASE_URL (None leaves it to env)."""
    full_env = {**os.environ, "COLUMNS": "200"}  # a terminal wide enough for the tables
    if db_url is not None:
        full_env["DATABASE_URL"] = db_url
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "vidbatch", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def vb_many(
    calls: Sequence[tuple[Sequence[str], dict[str, str]]], db_url: str
) -> list[subprocess.CompletedProcess[str]]:
    """Several independent commands at once (each is a separate process)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda c: vb(c[0], db_url, **c[1]), calls))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/x.db"


def test_account_and_key_lifecycle(tmp_path: Path, sqlite_url: str) -> None:
    created = one_json(vb(["accounts", "create", "acme", "--credits", "100", "--json"], sqlite_url))
    assert isinstance(created, dict)
    assert {"account_id", "key_id", "api_key"} <= set(created)
    assert created["api_key"].startswith("vb_") and len(created["api_key"]) > 20
    acc = created["account_id"]

    shown = one_json(vb(["accounts", "show", acc, "--json"], sqlite_url))
    assert shown == {
        "account_id": acc,
        "name": "acme",
        "balance_credits": 100,
        "frozen_credits": 0,
        "available_credits": 100,
    }

    out = ok(
        vb(
            ["accounts", "topup", acc, "--credits", "50", "--idempotency-key", "order-7"],
            sqlite_url,
        )
    )
    assert "balance 150" in out and out.startswith("added 50 credits")
    # the same top-up retried adds nothing, and says so
    out = ok(
        vb(
            ["accounts", "topup", acc, "--credits", "50", "--idempotency-key", "order-7"],
            sqlite_url,
        )
    )
    assert "balance 150" in out
    assert out.startswith("already applied") and "nothing added" in out
    assert "added 50 credits" not in out
    out = ok(
        vb(
            ["accounts", "adjust", acc, "--credits", "-30", "--reason", "goodwill reversal"],
            sqlite_url,
        )
    )
    assert "balance 120" in out

    key2 = one_json(vb(["keys", "create", acc, "--name", "ci", "--json"], sqlite_url))
    assert key2["account_id"] == acc and key2["api_key"].startswith("vb_")
    assert key2["api_key"] != created["api_key"]
    secrets = (created["api_key"], key2["api_key"])

    listed, keys_text = vb_many(
        [(["accounts", "list", "--json"], {}), (["keys", "list"], {})], sqlite_url
    )
    assert one_json(listed) == [
        {
            "account_id": acc,
            "name": "acme",
            "balance_credits": 120,
            "frozen_credits": 0,
            "available_credits": 120,
        }
    ]
    text = ok(keys_text) + keys_text.stderr
    assert created["api_key"][:11] in text  # the prefix, to tell keys apart
    assert not any(s in text for s in secrets)

    out = ok(vb(["keys", "revoke", key2["key_id"]], sqlite_url))
    assert key2["key_id"] in out
    keys_json, audit = vb_many([(["keys", "list", acc, "--json"], {}), (["audit"], {})], sqlite_url)
    assert not any(s in keys_json.stdout for s in secrets)
    keys = one_json(keys_json)
    assert {k["id"]: k["is_active"] for k in keys} == {
        created["key_id"]: True,
        key2["key_id"]: False,
    }
    assert {k["key_prefix"] for k in keys} == {s[:11] for s in secrets}
    assert not any({"key_hash", "webhook_secret"} & set(k) for k in keys)
    assert ok(audit).strip() == "audit: clean"

    # the database holds the keys' hashes, never the keys themselves
    stored = b"".join(f.read_bytes() for f in tmp_path.glob("x.db*"))
    assert created["key_id"].encode() in stored  # this is the right database
    for key in secrets:
        assert key.encode() not in stored
        assert key[11:].encode() not in stored  # not even the part after the prefix


def test_bad_input_is_one_error_line_and_changes_nothing(sqlite_url: str) -> None:
    created = one_json(vb(["accounts", "create", "acme", "--credits", "100", "--json"], sqlite_url))
    acc = created["account_id"]
    before = one_json(vb(["accounts", "show", acc, "--json"], sqlite_url))
    unknown = str(uuid.uuid4())
    cases: list[tuple[list[str], dict[str, str], str]] = [
        (["accounts", "show", unknown, "--json"], {}, "not found"),
        (["accounts", "topup", unknown, "--credits", "5"], {}, "not found"),
        (["accounts", "topup", acc, "--credits", "-5"], {}, "--credits"),
        (["accounts", "topup", acc, "--credits", "abc"], {}, "--credits"),
        (["accounts", "topup", acc, "--credits", "99999999999999999999"], {}, "at most"),
        (["accounts", "create", "other", "--credits", "-1"], {}, "--credits"),
        (["accounts", "adjust", acc, "--credits", "-101", "--reason", "x"], {}, "available"),
        (["accounts", "adjust", acc, "--credits", "5", "--reason", "  "], {}, "reason"),
        (
            ["accounts", "topup", acc, "--credits", "5"],
            {"DATABASE_URL": "mysql://x"},
            "DATABASE_URL",
        ),
    ]
    results = vb_many([(args, env) for args, env, _ in cases], sqlite_url)
    for (args, _, hint), result in zip(cases, results, strict=True):
        line = assert_usage_error(result)
        assert hint in line, (args, line)
        assert result.stdout == "", (args, result.stdout)
    shown, listed, keys = vb_many(
        [
            (["accounts", "show", acc, "--json"], {}),
            (["accounts", "list", "--json"], {}),
            (["keys", "list", "--json"], {}),
        ],
        sqlite_url,
    )
    assert one_json(shown) == before
    assert before["balance_credits"] == 100 and before["frozen_credits"] == 0
    assert [a["account_id"] for a in one_json(listed)] == [acc]  # no account was created
    assert [k["id"] for k in one_json(keys)] == [created["key_id"]]


def test_limits_beyond_their_bounds_are_refused_before_the_database(db_url: str) -> None:
    """On both databases: a rate limit PostgreSQL's INTEGER cannot hold, credits beyond the
    cap, and settings out of range are one error line naming what is wrong (exit 2)."""
    created = one_json(vb(["accounts", "create", "acme", "--credits", "100", "--json"], db_url))
    acc = created["account_id"]
    catalogs = (
        '{"sora-2": {"price_credits": 100000000000000000000}}',
        '{"sora-2": {"duration_prices": {"15": -5}}}',
        '{"sora-2": {"duration_prices": {"15": 7.5}}}',
        '{"sora-2": {"max_wait_seconds": -1}}',
    )
    cases: list[tuple[list[str], dict[str, str], str]] = [
        (["accounts", "create", "big", "--rate-limit", "2147483648"], {}, "--rate-limit"),
        (["keys", "create", acc, "--rate-limit", "999999999999"], {}, "--rate-limit"),
        (["keys", "create", acc, "--rate-limit", "1000001"], {}, "--rate-limit"),
        (["accounts", "adjust", acc, "--credits", str(10**16), "--reason", "x"], {}, "--credits"),
        (["accounts", "create", "rich", "--credits", str(10**16)], {}, "--credits"),
        (["batches", "list", "--limit", str(2**63)], {}, "--limit"),
        (["keys", "create", acc], {"VIDBATCH_DEFAULT_RATE_LIMIT": "2147483648"}, "VIDBATCH_"),
        (["keys", "create", acc], {"VIDBATCH_MAX_WAIT_SECONDS": "-5"}, "VIDBATCH_MAX_WAIT"),
        *(
            (["keys", "create", acc], {"VIDBATCH_MODEL_CATALOG": raw}, "VIDBATCH_MODEL_CATALOG")
            for raw in catalogs
        ),
    ]
    results = vb_many([(args, env) for args, env, _ in cases], db_url)
    for (args, env, hint), result in zip(cases, results, strict=True):
        line = assert_usage_error(result)
        assert hint in line, (args, env, line)
    keys = one_json(vb(["keys", "list", "--json"], db_url))
    assert [k["id"] for k in keys] == [created["key_id"]]
    assert [a["account_id"] for a in one_json(vb(["accounts", "list", "--json"], db_url))] == [acc]
    assert one_json(vb(["accounts", "show", acc, "--json"], db_url))["balance_credits"] == 100


def test_db_upgrade_and_current(sqlite_url: str) -> None:
    behind = vb(["db", "current"], sqlite_url)
    assert behind.returncode == 1  # the schema is behind the code
    fresh = behind.stdout
    assert fresh.startswith("database empty; code ")
    assert "vidbatch db upgrade" in behind.stderr and "Traceback" not in behind.stderr
    head = fresh.strip().rsplit(" ", 1)[-1]
    assert ok(vb(["db", "upgrade"], sqlite_url)).strip() == f"database at revision {head}"
    assert ok(vb(["db", "current"], sqlite_url)).strip() == f"database {head}; code {head}"


@pytest.mark.postgres
def test_accounts_and_keys_on_postgres(pg_url: str) -> None:
    assert pg_url.startswith("postgresql://")
    created = one_json(vb(["accounts", "create", "acme", "--credits", "100", "--json"], pg_url))
    acc = created["account_id"]
    assert created["api_key"].startswith("vb_")
    key2 = one_json(vb(["keys", "create", acc, "--json"], pg_url))
    shown, keys_text, current = vb_many(
        [
            (["accounts", "show", acc, "--json"], {}),
            (["keys", "list", acc], {}),
            (["db", "current"], {}),
        ],
        pg_url,
    )
    assert one_json(shown) == {
        "account_id": acc,
        "name": "acme",
        "balance_credits": 100,
        "frozen_credits": 0,
        "available_credits": 100,
    }
    text = ok(keys_text)
    assert created["api_key"] not in text and key2["api_key"] not in text
    assert created["api_key"][:11] in text
    head = ok(current).strip().rsplit(" ", 1)[-1]
    assert ok(current).strip() == f"database {head}; code {head}"


LISTINGS = [
    ["accounts", "list"],
    ["keys", "list"],
    ["batches", "list"],
    ["webhooks", "list"],
    ["audit"],
]


def test_every_listing_has_json_and_flags_take_no_value(sqlite_url: str) -> None:
    ok(vb(["db", "upgrade"], sqlite_url))
    for args in LISTINGS:
        help_text = ok(vb([*args, "--help"], sqlite_url))
        assert "--json" in help_text, args
        assert "<bool>" not in help_text and "BOOLEAN" not in help_text, help_text
        assert json.loads(ok(vb([*args, "--json"], sqlite_url))) == [], args
    assert "<bool>" not in ok(vb(["serve", "--help"], sqlite_url))
