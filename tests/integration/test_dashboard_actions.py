"""The dashboard says what a cancel did and offers it only while it can do something; it
revokes a key for good, after confirmation."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers import assert_audit_clean, balance, items, new_account, new_batch
from tests.integration.test_dashboard import follow, sign_in, text_of
from tests.integration.worker_helpers import task_rows
from tests.simulator_fixture import SimulatorHandle
from vidbatch.runtime import Runtime
from vidbatch.services import accounts as account_svc
from vidbatch.worker.round import run_once

CANCEL_LINK = "Cancel batch…"


@pytest.fixture
def settings(settings_factory: Any) -> Any:
    # One item of a batch submitted per round: the test decides how many are running.
    return settings_factory(worker_max_start_tasks_per_batch=1)


async def statuses(runtime: Runtime, batch_id: str) -> list[str]:
    return sorted(r.status for r in await task_rows(runtime.engine, batch_id))


async def test_cancel_says_what_was_refunded_and_what_still_runs(
    client: httpx.AsyncClient, runtime: Runtime, sim: SimulatorHandle
) -> None:
    sim.configure(hold=True, gen_time=3600.0)
    caller = await new_account(runtime.engine, credits=1000)
    created = await new_batch(runtime.engine, caller, items(3))
    await run_once(runtime, deliver_webhooks=False)
    assert await statuses(runtime, created.batch_id) == ["pending", "pending", "processing"]
    csrf = await sign_in(client)
    page = f"/admin/batches/{created.batch_id}"
    assert CANCEL_LINK in text_of(await client.get(page))

    done = await follow(client, await client.post(f"{page}/cancel", data={"csrf": csrf}))
    assert (
        "2 item(s) cancelled and 20 credits refunded now; 1 item(s) still running at the "
        "provider finish and are charged only if they succeed." in text_of(done)
    )
    assert await balance(runtime.engine, caller.account_id) == (1000, 10)
    # Nothing is waiting any more: the page stops offering a cancel that would do nothing.
    after = text_of(await client.get(page))
    assert CANCEL_LINK not in after
    again = await follow(client, await client.post(f"{page}/cancel", data={"csrf": csrf}))
    assert (
        "No item was waiting: nothing cancelled or refunded now; 1 item(s) still running"
        in text_of(again)
    )
    await assert_audit_clean(runtime.engine)


async def test_no_cancel_offered_once_every_item_runs(
    client: httpx.AsyncClient, runtime: Runtime, sim: SimulatorHandle
) -> None:
    sim.configure(hold=True, gen_time=3600.0)
    caller = await new_account(runtime.engine, credits=1000)
    created = await new_batch(runtime.engine, caller, items(2))
    await sign_in(client)
    page = f"/admin/batches/{created.batch_id}"
    await run_once(runtime, deliver_webhooks=False)
    assert CANCEL_LINK in text_of(await client.get(page))  # one still waiting
    await run_once(runtime, deliver_webhooks=False)
    assert await statuses(runtime, created.batch_id) == ["processing", "processing"]
    assert CANCEL_LINK not in text_of(await client.get(page))
    await assert_audit_clean(runtime.engine)


async def test_a_key_is_revoked_for_good_after_confirmation(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _, key = await account_svc.create_account(runtime.engine, "acme", credits=100)
    csrf = await sign_in(client)
    listing = await client.get("/admin/accounts")
    assert f'href="/admin/keys/{key.key_id}/revoke"' in listing.text

    confirm = await client.get(f"/admin/keys/{key.key_id}/revoke")
    assert confirm.status_code == 200
    assert "Revoke this key for good?" in text_of(confirm)
    assert f'action="/admin/keys/{key.key_id}/revoke"' in confirm.text
    headers = {"x-api-key": key.api_key}
    assert (await client.get("/api/v1/credits/balance", headers=headers)).status_code == 200

    done = await follow(
        client, await client.post(f"/admin/keys/{key.key_id}/revoke", data={"csrf": csrf})
    )
    assert f"Key {key.key_prefix}… revoked for good" in text_of(done)
    assert "Revoked for good" in text_of(await client.get("/admin/accounts"))
    assert (await client.get("/api/v1/credits/balance", headers=headers)).status_code == 403
    # Final: activating it again is refused, and it stays refused.
    back = await follow(
        client, await client.post(f"/admin/keys/{key.key_id}/activate", data={"csrf": csrf})
    )
    assert 'role="alert"' in back.text
    assert (await client.get("/api/v1/credits/balance", headers=headers)).status_code == 403
    # A revoke needs the form's CSRF token like every action.
    _, other = await account_svc.create_account(runtime.engine, "other", credits=1)
    refused = await client.post(f"/admin/keys/{other.key_id}/revoke", data={})
    assert refused.status_code == 403
    await assert_audit_clean(runtime.engine)
