"""Accounts and their keys: the list, a new key (its secrets shown once), activating,
deactivating, revoking (confirmed; final) and rate-limiting a key, correcting an account's
credits."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Annotated, Any

from fastapi import Form, Path, Request
from fastapi.responses import Response

from vidbatch.api.app import runtime_of
from vidbatch.domain.limits import MAX_CREDITS, MAX_RATE_LIMIT_PER_MIN, parse_whole
from vidbatch.exceptions import InvalidInput, NotFound, VidbatchError
from vidbatch.runtime import Runtime
from vidbatch.services import account_admin, reads
from vidbatch.services.views import CreatedKey
from vidbatch.web.render import message_page, redirect, render
from vidbatch.web.routing import ID, page_router
from vidbatch.web.session import Checked, Signed

log = logging.getLogger(__name__)

#: How long the page showing a new key's secrets can be opened (once) after creating it.
SHOW_ONCE_SECONDS = 600

router = page_router()


@router.get("/accounts")
async def account_list(request: Request, operator: Signed) -> Response:
    rt = runtime_of(request)
    async with rt.engine.connect() as conn:
        listed = await reads.accounts_with_keys(conn)
    return render(
        request,
        "accounts.html",
        {
            "accounts": [
                {
                    **a.account.model_dump(),
                    "keys": a.keys,
                    "adjust_key": secrets.token_urlsafe(12),
                }
                for a in listed
            ],
            "default_rate_limit": rt.settings.default_rate_limit_per_min,
        },
        operator=operator,
    )


def _shown_once(request: Request) -> dict[str, tuple[float, CreatedKey]]:
    """New keys waiting to be shown, by one-time ticket (in this process's memory only)."""
    store: dict[str, tuple[float, CreatedKey]] | None = getattr(
        request.app.state, "dashboard_new_keys", None
    )
    if store is None:
        store = {}
        request.app.state.dashboard_new_keys = store
    now = time.monotonic()
    for ticket in [t for t, (at, _) in store.items() if now - at > SHOW_ONCE_SECONDS]:
        del store[ticket]
    return store


def _rate_limit(value: str, field: str, *, allow_empty: bool = False) -> int | None:
    value = value.strip()
    if not value and allow_empty:
        return None
    number = parse_whole(value)
    if number is None:
        raise InvalidInput(f"{field}: a whole number")
    if number <= 0:
        raise InvalidInput(f"{field}: more than 0")
    if number > MAX_RATE_LIMIT_PER_MIN:
        raise InvalidInput(f"{field}: at most {MAX_RATE_LIMIT_PER_MIN}")
    return number


@router.post("/accounts/{account_id}/keys")
async def create_key(
    request: Request,
    operator: Checked,
    account_id: ID,
    name: Annotated[str, Form(max_length=200)] = "default",
    rate_limit_per_min: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    rt = runtime_of(request)
    back = f"/admin/accounts#account-{account_id}"
    try:
        limit = _rate_limit(rate_limit_per_min, "Rate limit", allow_empty=True)
        new = await account_admin.create_key(
            rt.engine,
            account_id,
            name=name.strip() or "default",
            rate_limit_per_min=limit or rt.settings.default_rate_limit_per_min,
            actor="dashboard",
        )
    except NotFound:
        raise
    except VidbatchError as exc:
        return redirect(request, back, flash=("error", exc.message))
    ticket = secrets.token_urlsafe(24)
    _shown_once(request)[ticket] = (time.monotonic(), new)
    return redirect(request, f"/admin/keys/new/{ticket}")


@router.get("/keys/new/{ticket}")
async def new_key(
    request: Request,
    operator: Signed,
    ticket: Annotated[str, Path(max_length=64)],
) -> Response:
    shown = _shown_once(request).pop(ticket, None)
    if shown is None:
        return message_page(
            request,
            410,
            "Already shown",
            "A new key and its webhook secret are shown once only. If they were not saved, "
            "deactivate that key and create another.",
            operator=operator,
        )
    return render(request, "key_created.html", dict(shown[1]), operator=operator)


def _key_change(change: str, rate_limit_per_min: str) -> dict[str, Any]:
    """What a change sets (NotFound for no such change, InvalidInput for a bad limit)."""
    if change == "activate":
        return {"active": True}
    if change == "deactivate":
        return {"active": False}
    if change == "rate-limit":
        return {"rate_limit_per_min": _rate_limit(rate_limit_per_min, "Rate limit")}
    raise NotFound(f"no change {change!r}")


async def _known_key(rt: Runtime, key_id: str) -> None:
    """NotFound for an unknown key: it answers before any problem with the form."""
    async with rt.engine.connect() as conn:
        await reads.get_key(conn, key_id)


@router.get("/keys/{key_id}/revoke")
async def confirm_revoke(request: Request, operator: Signed, key_id: ID) -> Response:
    async with runtime_of(request).engine.connect() as conn:
        key = await reads.get_key(conn, key_id)
    return render(
        request,
        "confirm.html",
        {
            "title": "Revoke this key for good?",
            "text": "Its requests are refused from now on, and it can never be activated "
            "again (deactivating is the reversible choice). The customer needs a new key.",
            "button": "Revoke the key",
            "danger": True,
            "action_url": f"/admin/keys/{key_id}/revoke",
            "back_url": f"/admin/accounts#key-{key_id}",
            "hidden": {},
            "with_moderation_choice": False,
            "facts": [("Key", f"{key.key_prefix}…"), ("Name", key.name)],
        },
        operator=operator,
    )


@router.post("/keys/{key_id}/{change}")
async def change_key(
    request: Request,
    operator: Checked,
    key_id: ID,
    change: Annotated[str, Path(max_length=20)],
    rate_limit_per_min: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    rt = runtime_of(request)
    back = f"/admin/accounts#key-{key_id}"
    try:
        if change == "revoke":
            key = await account_admin.revoke_key(rt.engine, key_id, actor="dashboard")
        else:
            values = _key_change(change, rate_limit_per_min)
            key = await account_admin.set_key_state(rt.engine, key_id, actor="dashboard", **values)
    except VidbatchError as exc:
        await _known_key(rt, key_id)
        if isinstance(exc, NotFound):
            raise
        return redirect(request, back, flash=("error", exc.message))
    if change == "revoke":
        text = f"Key {key.key_prefix}… revoked for good: its requests are refused."
    elif change == "activate":
        text = f"Key {key.key_prefix}… activated."
    elif change == "deactivate":
        text = f"Key {key.key_prefix}… deactivated: its requests are refused."
    else:
        text = f"Key {key.key_prefix}…: {key.rate_limit_per_min} requests per minute."
    return redirect(request, back, flash=("ok", text))


def _credits(value: str, reason: str) -> int:
    amount = parse_whole(value)
    if amount is None:
        raise InvalidInput("Credits: a whole number, e.g. 500 or -200.")
    if abs(amount) > MAX_CREDITS:
        raise InvalidInput(f"Credits: at most {MAX_CREDITS} either way.")
    if amount == 0 or not reason.strip():
        raise InvalidInput("Give a number of credits other than 0 and a reason.")
    return amount


@router.post("/accounts/{account_id}/adjust")
async def adjust_credits(
    request: Request,
    operator: Checked,
    account_id: ID,
    credits: Annotated[str, Form(max_length=12)] = "",
    reason: Annotated[str, Form(max_length=500)] = "",
    idempotency_key: Annotated[str, Form(max_length=128)] = "",
    confirmed: Annotated[str, Form(max_length=5)] = "",
) -> Response:
    rt = runtime_of(request)
    back = f"/admin/accounts#account-{account_id}"
    try:
        amount: int | None = _credits(credits, reason)
        problem = None
    except InvalidInput as exc:
        amount, problem = None, exc.message
    if amount is None or confirmed != "yes":
        # an unknown account is "not found" before any problem with the form
        async with rt.engine.connect() as conn:
            account = await reads.get_account(conn, account_id)
        if amount is None:
            return redirect(request, back, flash=("error", problem or ""))
        return render(
            request,
            "confirm.html",
            {
                "title": f"{'Add' if amount > 0 else 'Remove'} {abs(amount)} credits?",
                "text": "The correction is written to the ledger with its reason.",
                "button": "Adjust credits",
                "danger": amount < 0,
                "action_url": f"/admin/accounts/{account_id}/adjust",
                "back_url": back,
                "hidden": {
                    "credits": str(amount),
                    "reason": reason.strip(),
                    "idempotency_key": idempotency_key,
                    "confirmed": "yes",
                },
                "with_moderation_choice": False,
                "facts": [
                    ("Account", f"{account.name} ({account_id})"),
                    ("Balance now", str(account.balance_credits)),
                    ("Balance after", str(account.balance_credits + amount)),
                    ("Reason", reason.strip()),
                ],
            },
            operator=operator,
        )
    try:
        done = await account_admin.adjust(
            rt.engine,
            account_id,
            amount,
            reason=reason.strip(),
            idempotency_key=idempotency_key or None,
        )
    except NotFound:
        raise
    except VidbatchError as exc:
        return redirect(request, back, flash=("error", exc.message))
    return redirect(
        request,
        back,
        flash=(
            "ok",
            f"{done.account.name}: {amount:+d} credits ({reason.strip()}); balance now "
            f"{done.account.balance_credits}.",
        ),
    )
