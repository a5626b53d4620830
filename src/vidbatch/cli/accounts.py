"""`vidbatch accounts …` and `vidbatch keys …`: the operator's account and key management."""

from __future__ import annotations

import typer
from rich.console import Console

from vidbatch.cli.common import (
    call,
    fail,
    non_negative,
    positive,
    print_fields,
    print_json,
    print_rows,
    read,
    settings_from,
)
from vidbatch.domain.limits import MAX_CREDITS, MAX_RATE_LIMIT_PER_MIN
from vidbatch.services import account_admin
from vidbatch.services import accounts as svc
from vidbatch.settings import Settings

accounts_app = typer.Typer(
    help="Create accounts, top up and adjust their credits, look at them.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
keys_app = typer.Typer(
    help="Create, list and revoke API keys.", no_args_is_help=True, rich_markup_mode=None
)
console = Console()


@accounts_app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The customer's name."),
    credits: int = typer.Option(0, "--credits", help="Opening credits."),
    rate_limit: int | None = typer.Option(
        None, "--rate-limit", help="Requests per minute of the first key (default 60)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Create an account and its first API key; the key is printed once, never again."""
    settings = settings_from(ctx)
    non_negative(credits)
    limit = _rate_limit(settings, rate_limit)
    account_id, key = call(
        settings, lambda e: svc.create_account(e, name, credits=credits, rate_limit_per_min=limit)
    )
    account_admin.log_key_action("cli", "created", key.key_id, account_id=account_id)
    if not as_json:
        console.print(f"account  {account_id}  ({name}, {credits} credits)")
    _show_new_key(key, as_json)


def _rate_limit(settings: Settings, rate_limit: int | None) -> int:
    """The --rate-limit given, or the default for new keys."""
    if rate_limit is None:
        return settings.default_rate_limit_per_min
    return positive(rate_limit, "--rate-limit", most=MAX_RATE_LIMIT_PER_MIN)


def _show_new_key(key: svc.NewKey, as_json: bool) -> None:
    """The only time a key and its webhook secret are shown."""
    if as_json:
        print_json(
            {
                "account_id": key.account_id,
                "key_id": key.key_id,
                "api_key": key.api_key,
                "webhook_secret": key.webhook_secret,
            }
        )
        return
    console.print(f"key id   {key.key_id}")
    console.print(f"API key  [bold]{key.api_key}[/bold]")
    console.print(f"webhook secret  {key.webhook_secret}")
    console.print("Store the API key and webhook secret now: they are not shown again.")


@accounts_app.command("topup")
def topup(
    ctx: typer.Context,
    account_id: str = typer.Argument(..., help="Account id."),
    credits: int = typer.Option(..., "--credits", help="Credits to add (positive)."),
    key: str | None = typer.Option(
        None, "--idempotency-key", help="Makes a retried top-up post once."
    ),
) -> None:
    """Add purchased credits to an account."""
    settings = settings_from(ctx)
    positive(credits)
    posting, account = call(settings, lambda e: svc.topup_posting(e, account_id, credits, key=key))
    now = f"balance {account['balance_credits']}, available {account['available_credits']}"
    if posting.created:
        typer.echo(f"added {credits} credits; {now}")
    else:
        added = posting.entry["delta"]
        typer.echo(
            f"already applied: idempotency key {key!r} was used by a top-up of {added} "
            f"credits; nothing added now; {now}"
        )


@accounts_app.command("adjust")
def adjust(
    ctx: typer.Context,
    account_id: str = typer.Argument(..., help="Account id."),
    credits: int = typer.Option(..., "--credits", help="Credits to add (+N) or remove (-N)."),
    reason: str = typer.Option(..., "--reason", help="Why: kept in the ledger."),
) -> None:
    """Correct an account's credits by hand, with a reason (never below zero available)."""
    settings = settings_from(ctx)
    if credits == 0:
        fail("--credits must not be zero")
    if abs(credits) > MAX_CREDITS:
        fail(f"--credits must be at most {MAX_CREDITS} either way (got {credits})")
    entry = call(settings, lambda e: svc.adjust(e, account_id, credits, reason=reason))
    typer.echo(f"adjusted by {credits:+d} credits; balance {entry['balance_after']}")


@accounts_app.command("show")
def show(
    ctx: typer.Context,
    account_id: str = typer.Argument(..., help="Account id."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show an account's credits."""
    settings = settings_from(ctx)

    acc = read(settings, lambda conn: svc.get_account(conn, account_id))
    view = {
        "account_id": acc["id"],
        "name": acc["name"],
        "balance_credits": acc["balance_credits"],
        "frozen_credits": acc["frozen_credits"],
        "available_credits": acc["available_credits"],
    }
    if as_json:
        print_json(view)
        return
    print_fields(view)


@accounts_app.command("list")
def list_(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print a JSON list.")
) -> None:
    """List accounts with their credits."""
    settings = settings_from(ctx)

    rows = read(settings, lambda conn: svc.list_accounts(conn))
    if as_json:
        print_json(
            [
                {
                    "account_id": r["id"],
                    "name": r["name"],
                    "balance_credits": r["balance_credits"],
                    "frozen_credits": r["frozen_credits"],
                    "available_credits": r["available_credits"],
                }
                for r in rows
            ]
        )
        return
    print_rows(
        ["account_id", "name", "balance", "frozen", "available"],
        [
            [r["id"], r["name"], r["balance_credits"], r["frozen_credits"], r["available_credits"]]
            for r in rows
        ],
    )


@keys_app.command("create")
def key_create(
    ctx: typer.Context,
    account_id: str = typer.Argument(..., help="Account id."),
    name: str = typer.Option("default", "--name", help="A name to tell keys apart."),
    rate_limit: int | None = typer.Option(None, "--rate-limit", help="Requests per minute."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Create an API key; it is printed once, never again."""
    settings = settings_from(ctx)
    limit = _rate_limit(settings, rate_limit)
    key = call(
        settings, lambda e: svc.create_key(e, account_id, name=name, rate_limit_per_min=limit)
    )
    account_admin.log_key_action("cli", "created", key.key_id, account_id=account_id)
    _show_new_key(key, as_json)


@keys_app.command("list")
def key_list(
    ctx: typer.Context,
    account_id: str | None = typer.Argument(None, help="Only this account's keys."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """List API keys (prefix only: a key is never shown after creation)."""
    settings = settings_from(ctx)

    rows = read(settings, lambda conn: svc.list_keys(conn, account_id))
    if as_json:
        print_json(rows)
        return
    print_rows(
        ["key_id", "account_id", "name", "prefix", "active", "rate/min", "last seen"],
        [
            [
                r["id"],
                r["account_id"],
                r["name"],
                r["key_prefix"] + "…",
                "revoked" if r["revoked_at"] else "yes" if r["is_active"] else "no",
                r["rate_limit_per_min"],
                r["last_seen_at"],
            ]
            for r in rows
        ],
    )


@keys_app.command("revoke")
def key_revoke(ctx: typer.Context, key_id: str = typer.Argument(..., help="Key id.")) -> None:
    """Revoke an API key for good; requests with it answer 403 INVALID_API_KEY and it can
    never be activated again."""
    settings = settings_from(ctx)
    call(settings, lambda e: account_admin.revoke_key(e, key_id, actor="cli"))
    typer.echo(f"revoked key {key_id}")
