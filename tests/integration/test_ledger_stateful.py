"""The money invariants under random sequences of operations, on SQLite and PostgreSQL.

A Hypothesis state machine tops up, creates batches (freezing credits), runs and finishes
their items, settles, cancels, adjusts, and repeats earlier operations exactly (the same
top-up key, settling or cancelling again) or tries ones that must be refused. A plain Python
model says what every account must hold; after every step the database is compared with
it, and the money invariants of the design are checked, including by ``audit()``.

One database serves a whole test; each Hypothesis example works on fresh accounts (every
invariant is per account or per batch, so earlier examples do not disturb it).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import balance, finish_tasks, items, new_account, new_batch
from tests.helpers import keyed_engine as make_engine
from vidbatch.clock import utcnow
from vidbatch.db.schema import batch_jobs, credit_ledger, video_tasks
from vidbatch.exceptions import (
    BatchAlreadyEnded,
    IdempotencyKeyReused,
    InsufficientCredits,
    InvalidInput,
)
from vidbatch.services import accounts as account_svc
from vidbatch.services.audit import audit
from vidbatch.services.batches import Caller, cancel_batch
from vidbatch.services.settlement import settle_batch

PRICES = {"sora-2": 10, "veo-flash": 50}
LIVE = {"pending", "processing"}


@dataclass
class ModelAccount:
    balance: int
    frozen: int = 0


@dataclass
class ModelBatch:
    account: str
    prices: list[int]
    statuses: list[str]
    refunded: int = 0
    charged: int = 0
    settled: bool = False
    cancel_requested: bool = False

    @property
    def reserved(self) -> int:
        return sum(self.prices)

    def succeeded_cost(self) -> int:
        return sum(p for p, s in zip(self.prices, self.statuses, strict=True) if s == "succeeded")

    def has_live(self) -> bool:
        return any(s in LIVE for s in self.statuses)

    def expected_status(self) -> str:
        n = {s: self.statuses.count(s) for s in ("succeeded", "failed", "cancelled")}
        if self.cancel_requested and n["cancelled"]:
            return "cancelled"
        if n["succeeded"] == len(self.statuses):
            return "completed"
        return "partial" if n["succeeded"] else "failed"


indexes = st.integers(min_value=0, max_value=10_000)


class LedgerMachine(RuleBasedStateMachine):
    """Set ``engine`` and ``loop`` on a subclass before running."""

    engine: AsyncEngine
    loop: asyncio.AbstractEventLoop

    def __init__(self) -> None:
        super().__init__()
        self.accounts: dict[str, ModelAccount] = {}
        self.callers: dict[str, Caller] = {}
        self.batches: dict[str, ModelBatch] = {}
        self.credit_ops: list[tuple[str, str, str, int]] = []  # kind, account, key, amount

    # --- plumbing -----------------------------------------------------------------------

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def pick(self, seq: list[Any], i: int) -> Any:
        return seq[i % len(seq)]

    def account_ids(self) -> list[str]:
        return list(self.accounts)

    def open_batches(self) -> list[str]:
        return [b for b, m in self.batches.items() if not m.settled]

    def footprint(self, account_id: str) -> tuple[int, ...]:
        """What an operation that must write nothing must leave as it was."""

        async def go() -> tuple[int, ...]:
            async with self.engine.connect() as conn:
                entries = (
                    await conn.execute(
                        select(func.count())
                        .select_from(credit_ledger)
                        .where(credit_ledger.c.account_id == account_id)
                    )
                ).scalar_one()
                batches = (
                    await conn.execute(
                        select(func.count())
                        .select_from(batch_jobs)
                        .where(batch_jobs.c.user_id == account_id)
                    )
                ).scalar_one()
                tasks = (
                    await conn.execute(
                        select(func.count())
                        .select_from(video_tasks)
                        .where(
                            video_tasks.c.account_id == account_id, video_tasks.c.status.in_(LIVE)
                        )
                    )
                ).scalar_one()
            return int(entries), int(batches), int(tasks), *await balance(self.engine, account_id)

        result: tuple[int, ...] = self.run(go())
        return result

    # --- setup --------------------------------------------------------------------------

    @initialize(opening=st.lists(st.integers(0, 600), min_size=1, max_size=3))
    def open_accounts(self, opening: list[int]) -> None:
        for credits in opening:
            caller = self.run(new_account(self.engine, credits=credits, name="stateful"))
            self.accounts[caller.account_id] = ModelAccount(balance=credits)
            self.callers[caller.account_id] = caller

    # --- credits ------------------------------------------------------------------------

    @rule(i=indexes, amount=st.integers(-20, 400))
    def topup(self, i: int, amount: int) -> None:
        acc = self.pick(self.account_ids(), i)
        key = str(uuid.uuid4())
        if amount <= 0:
            before = self.footprint(acc)
            with pytest.raises(InvalidInput):
                self.run(account_svc.topup(self.engine, acc, amount, key=key))
            assert self.footprint(acc) == before
            return
        entry = self.run(account_svc.topup(self.engine, acc, amount, key=key))
        assert entry["delta"] == amount
        self.accounts[acc].balance += amount
        assert entry["balance_after"] == self.accounts[acc].balance
        self.credit_ops.append(("topup", acc, key, amount))

    @precondition(lambda self: self.credit_ops)
    @rule(i=indexes, other_amount=st.booleans())
    def repeat_credit_operation(self, i: int, other_amount: bool) -> None:
        """A retried top-up or adjustment posts nothing; the same key with a mistyped
        amount is refused, and posts nothing either."""
        kind, acc, key, amount = self.pick(self.credit_ops, i)
        sent = amount * 2 if other_amount else amount
        before = self.footprint(acc)

        def repeat() -> dict[str, Any]:
            if kind == "topup":
                return self.run(account_svc.topup(self.engine, acc, sent, key=key))
            return self.run(account_svc.adjust(self.engine, acc, sent, reason="again", key=key))

        if other_amount:
            with pytest.raises(IdempotencyKeyReused):
                repeat()
        else:
            assert repeat()["delta"] == amount  # the first posting, returned again
        assert self.footprint(acc) == before

    @rule(i=indexes, amount=st.integers(-400, 300).filter(bool))
    def adjust(self, i: int, amount: int) -> None:
        acc = self.pick(self.account_ids(), i)
        model = self.accounts[acc]
        key = str(uuid.uuid4())
        if model.balance + amount >= model.frozen:
            entry = self.run(
                account_svc.adjust(self.engine, acc, amount, reason="correction", key=key)
            )
            model.balance += amount
            assert entry["balance_after"] == model.balance
            self.credit_ops.append(("adjust", acc, key, amount))
        else:
            before = self.footprint(acc)
            with pytest.raises(InsufficientCredits):
                self.run(account_svc.adjust(self.engine, acc, amount, reason="correction", key=key))
            assert self.footprint(acc) == before

    # --- batches ------------------------------------------------------------------------

    @rule(i=indexes, models=st.lists(st.sampled_from(sorted(PRICES)), min_size=1, max_size=5))
    def create_batch(self, i: int, models: list[str]) -> None:
        acc = self.pick(self.account_ids(), i)
        model = self.accounts[acc]
        body = [it for m in models for it in items(1, model=m)]
        total = sum(PRICES[m] for m in models)
        caller = self.callers[acc]
        if model.balance - model.frozen >= total:
            created = self.run(new_batch(self.engine, caller, body))
            assert created.required_credits == total
            model.frozen += total
            assert created.available_credits == model.balance - model.frozen
            self.batches[created.batch_id] = ModelBatch(
                account=acc, prices=[PRICES[m] for m in models], statuses=["pending"] * len(models)
            )
        else:
            before = self.footprint(acc)
            with pytest.raises(InsufficientCredits) as err:
                self.run(new_batch(self.engine, caller, body))
            assert (err.value.required, err.value.available) == (
                total,
                model.balance - model.frozen,
            )
            assert self.footprint(acc) == before

    @precondition(
        lambda self: any("pending" in self.batches[b].statuses for b in self.open_batches())
    )
    @rule(i=indexes, j=indexes)
    def start_task(self, i: int, j: int) -> None:
        """The worker submitted an item: it is running and can no longer be cancelled."""
        bid = self.pick(
            [b for b in self.open_batches() if "pending" in self.batches[b].statuses], i
        )
        batch = self.batches[bid]
        index = self.pick([k for k, s in enumerate(batch.statuses) if s == "pending"], j)

        async def go() -> None:
            async with self.engine.begin() as conn:
                await conn.execute(
                    update(video_tasks)
                    .where(video_tasks.c.batch_job_id == bid, video_tasks.c.batch_index == index)
                    .values(status="processing", next_attempt_at=None)
                )

        self.run(go())
        batch.statuses[index] = "processing"

    @precondition(lambda self: any(self.batches[b].has_live() for b in self.open_batches()))
    @rule(
        i=indexes,
        outcomes=st.lists(st.sampled_from(["succeeded", "failed"]), min_size=1, max_size=5),
    )
    def finish_tasks(self, i: int, outcomes: list[str]) -> None:
        """The provider answered for some of a batch's live items (in index order)."""
        bid = self.pick([b for b in self.open_batches() if self.batches[b].has_live()], i)
        batch = self.batches[bid]
        live = [k for k, s in enumerate(batch.statuses) if s in LIVE]
        done = dict(zip(live, outcomes, strict=False))
        self.run(finish_tasks(self.engine, bid, done))
        for k, outcome in done.items():
            batch.statuses[k] = outcome

    @precondition(lambda self: self.open_batches())
    @rule(
        i=indexes,
        outcomes=st.lists(st.sampled_from(["succeeded", "failed"]), min_size=1, max_size=5),
    )
    def run_batch_to_the_end(self, i: int, outcomes: list[str]) -> None:
        """Every live item of a batch ends, then the batch is settled, as a worker does."""
        bid = self.pick(self.open_batches(), i)
        batch = self.batches[bid]
        live = [k for k, s in enumerate(batch.statuses) if s in LIVE]
        done = {k: outcomes[n % len(outcomes)] for n, k in enumerate(live)}
        self.run(finish_tasks(self.engine, bid, done))
        for k, outcome in done.items():
            batch.statuses[k] = outcome
        self.settle_one(bid)

    @precondition(lambda self: self.batches)
    @rule(i=indexes)
    def settle(self, i: int) -> None:
        """Settle any batch: an unfinished or already settled one must post nothing."""
        self.settle_one(self.pick(list(self.batches), i))

    def settle_one(self, bid: str) -> None:
        batch = self.batches[bid]
        before = self.footprint(batch.account)

        async def go() -> Any:
            async with self.engine.begin() as conn:
                return await settle_batch(conn, bid, utcnow())

        result = self.run(go())
        if batch.settled or batch.has_live():
            assert result is None
            assert self.footprint(batch.account) == before
            return
        assert result is not None
        self._settled(bid, result.charged, result.refunded, result.status)

    @precondition(lambda self: self.batches)
    @rule(i=indexes)
    def cancel(self, i: int) -> None:
        """Cancel any batch: refunds what has not started; a settled batch refuses."""
        bid = self.pick(list(self.batches), i)
        batch = self.batches[bid]
        acc = self.accounts[batch.account]
        before = self.footprint(batch.account)
        if batch.settled:
            with pytest.raises(BatchAlreadyEnded):
                self.run(cancel_batch(self.engine, bid, account_id=batch.account))
            assert self.footprint(batch.account) == before
            return
        result = self.run(cancel_batch(self.engine, bid, account_id=batch.account))
        waiting = [k for k, s in enumerate(batch.statuses) if s == "pending"]
        amount = sum(batch.prices[k] for k in waiting)
        for k in waiting:
            batch.statuses[k] = "cancelled"
        batch.cancel_requested = True
        batch.refunded += amount
        acc.frozen -= amount
        assert result.cancelled_items == len(waiting)
        if batch.has_live():
            if not waiting:  # e.g. cancelled again while items run: nothing new is posted
                assert self.footprint(batch.account) == before
            assert result.credits_refunded == batch.refunded
            # the truth: not ended while items run (charged only if they succeed)
            assert result.status not in ("cancelled", "completed", "partial", "failed")
            assert result.running_items == batch.statuses.count("processing")
        else:
            self._settled(
                bid, batch.succeeded_cost(), batch.reserved - batch.succeeded_cost(), result.status
            )
            assert result.credits_refunded == batch.refunded

    def _settled(self, bid: str, charged: int, refunded: int, status: str) -> None:
        batch = self.batches[bid]
        acc = self.accounts[batch.account]
        assert charged == batch.succeeded_cost()
        assert charged + refunded == batch.reserved
        assert status == batch.expected_status()
        outstanding = batch.reserved - batch.refunded
        acc.balance -= charged
        acc.frozen -= outstanding
        batch.charged, batch.refunded, batch.settled = charged, refunded, True

    # --- invariants ---------------------------------------------------------------------

    @invariant()
    def books_are_right(self) -> None:
        self.run(self._check())

    async def _check(self) -> None:
        ids = list(self.accounts)
        if not ids:
            return
        async with self.engine.connect() as conn:
            sums = {
                r[0]: (int(r[1]), int(r[2]))
                for r in (
                    await conn.execute(
                        select(
                            credit_ledger.c.account_id,
                            func.sum(credit_ledger.c.delta),
                            func.sum(credit_ledger.c.frozen_delta),
                        )
                        .where(credit_ledger.c.account_id.in_(ids))
                        .group_by(credit_ledger.c.account_id)
                    )
                ).all()
            }
            held = {
                r[0]: int(r[1])
                for r in (
                    await conn.execute(
                        select(
                            batch_jobs.c.user_id,
                            func.sum(batch_jobs.c.frozen_credits - batch_jobs.c.credits_refunded),
                        )
                        .where(batch_jobs.c.user_id.in_(ids), batch_jobs.c.settled_at.is_(None))
                        .group_by(batch_jobs.c.user_id)
                    )
                ).all()
            }
            rows = {
                r.id: r
                for r in (
                    await conn.execute(
                        select(batch_jobs).where(batch_jobs.c.id.in_(list(self.batches)))
                    )
                ).all()
            }
            succeeded = {
                r[0]: int(r[1])
                for r in (
                    await conn.execute(
                        select(video_tasks.c.batch_job_id, func.sum(video_tasks.c.cost_credits))
                        .where(
                            video_tasks.c.batch_job_id.in_(list(self.batches)),
                            video_tasks.c.status == "succeeded",
                        )
                        .group_by(video_tasks.c.batch_job_id)
                    )
                ).all()
            }
            violations = await audit(conn)
        for acc, model in self.accounts.items():
            bal, frozen = await balance(self.engine, acc)
            assert (bal, frozen) == (model.balance, model.frozen), acc
            assert sums.get(acc, (0, 0)) == (bal, frozen), acc
            assert frozen == held.get(acc, 0), acc
            assert bal - frozen >= 0 and frozen >= 0, acc
        for bid, batch in self.batches.items():
            row = rows[bid]
            assert row.frozen_credits == batch.reserved
            assert (row.settled_at is not None) == batch.settled
            assert row.credits_refunded == batch.refunded
            if batch.settled:
                assert row.credits_spent + row.credits_refunded == row.frozen_credits
                assert row.credits_spent == succeeded.get(bid, 0) == batch.succeeded_cost()
                assert row.status == batch.expected_status()
            else:
                assert row.credits_spent == 0
        # audit() looks at the whole database: keep what concerns this example's accounts
        # and batches, so that one example's failure cannot leak into the next
        ours = {f"account {a}" for a in self.accounts} | {f"batch {b}" for b in self.batches}
        mine = [v for v in violations if v.subject in ours]
        assert mine == [], "\n".join(map(str, mine))


def test_ledger_invariants_hold_under_random_operations(db_url: str) -> None:
    loop = asyncio.new_event_loop()
    engine = make_engine(db_url)
    machine = type("Ledger", (LedgerMachine,), {"engine": engine, "loop": loop})
    try:
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=25,
                stateful_step_count=20,
                deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
            ),
        )
    finally:
        loop.run_until_complete(engine.dispose())
        loop.close()
