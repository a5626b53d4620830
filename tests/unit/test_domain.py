"""Pure domain rules: settlement arithmetic, task/batch states, poll and retry schedules."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vidbatch.domain import public
from vidbatch.domain.catalog import parse_catalog_overrides
from vidbatch.domain.schedule import PollSchedule, RetryPolicy, timed_out
from vidbatch.domain.settlement import settle_figures
from vidbatch.domain.states import (
    BATCH_OPEN,
    BATCH_TERMINAL,
    TASK_LIVE,
    TASK_TERMINAL,
    TASK_WAITING,
    batch_final_status,
    can_move,
)
from vidbatch.exceptions import ConfigError

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)

# --- settlement ---------------------------------------------------------------------------


def test_settle_charges_succeeded_and_refunds_the_rest() -> None:
    f = settle_figures(reserved=270, already_refunded=0, succeeded_cost=260)
    assert (f.charged, f.refund_now, f.refunded) == (260, 10, 10)
    assert f.settlement_status == "refunded"


def test_settle_everything_succeeded_is_finalized() -> None:
    f = settle_figures(reserved=30, already_refunded=0, succeeded_cost=30)
    assert (f.charged, f.refund_now, f.refunded, f.settlement_status) == (30, 0, 0, "finalized")


def test_settle_counts_refunds_made_before_settlement() -> None:
    # 40 reserved, 30 refunded at cancel time, the one running item succeeded
    f = settle_figures(reserved=40, already_refunded=30, succeeded_cost=10)
    assert (f.charged, f.refund_now, f.refunded, f.settlement_status) == (10, 0, 30, "refunded")


def test_settle_nothing_succeeded_refunds_all() -> None:
    f = settle_figures(reserved=50, already_refunded=0, succeeded_cost=0)
    assert (f.charged, f.refund_now, f.settlement_status) == (0, 50, "refunded")


def test_settle_empty_reservation() -> None:
    f = settle_figures(reserved=0, already_refunded=0, succeeded_cost=0)
    assert (f.charged, f.refunded, f.settlement_status) == (0, 0, "finalized")


@pytest.mark.parametrize(
    ("reserved", "refunded", "succeeded"),
    [(10, 0, 11), (40, 30, 20), (10, 11, 0), (10, 0, -1)],
)
def test_settle_refuses_to_charge_more_than_is_reserved(
    reserved: int, refunded: int, succeeded: int
) -> None:
    with pytest.raises(ValueError):
        settle_figures(reserved, refunded, succeeded)


@given(
    reserved=st.integers(0, 10**9),
    refunded_share=st.floats(0, 1),
    charged_share=st.floats(0, 1),
)
def test_settle_charged_plus_refunded_is_reserved(
    reserved: int, refunded_share: float, charged_share: float
) -> None:
    already = int(reserved * refunded_share)
    succeeded = int((reserved - already) * charged_share)
    f = settle_figures(reserved, already, succeeded)
    assert f.charged == succeeded
    assert f.charged + f.refunded == reserved
    assert f.refund_now >= 0
    assert f.settlement_status == ("refunded" if f.refunded else "finalized")


# --- states -------------------------------------------------------------------------------

ALL_TASK_STATES = TASK_LIVE | TASK_TERMINAL


def test_state_sets_partition() -> None:
    assert TASK_WAITING < TASK_LIVE
    assert not TASK_LIVE & TASK_TERMINAL
    assert not BATCH_OPEN & BATCH_TERMINAL
    assert {public.item_status(s) for s in ALL_TASK_STATES} == set(public.PublicItemStatus)


# --- the published vocabulary --------------------------------------------------------------


def test_public_item_status_is_the_published_four() -> None:
    assert {str(s) for s in public.PublicItemStatus} == {
        "pending",
        "running",
        "succeeded",
        "failed",
    }
    assert public.item_status("queued") == "pending"
    assert public.item_status("submitting") == public.item_status("processing") == "running"
    assert public.item_status("cancelled") == "failed"
    assert public.task_statuses(public.PublicItemStatus.FAILED) == ("failed", "cancelled")


def test_public_batch_status_is_reached_only_when_the_batch_ended() -> None:
    assert {str(public.batch_status(s)) for s in BATCH_OPEN} == {"pending", "running"}
    assert {public.batch_status(s) for s in BATCH_TERMINAL} == public.PUBLIC_BATCH_ENDED
    assert public.batch_status("completed") == "succeeded"


@pytest.mark.parametrize(
    ("status", "failure_type", "reason", "expected"),
    [
        ("succeeded", None, None, (None, None)),
        ("processing", None, None, (None, None)),
        ("failed", "moderation", "output_moderation", ("model_error", "moderation")),
        ("failed", "timeout", "timeout", ("timeout", "timeout")),
        ("failed", "network", "ambiguous_submit", ("network", "ambiguous_submit")),
        ("failed", None, None, ("unknown", "unknown")),
        ("cancelled", None, None, ("unknown", "cancelled")),
    ],
)
def test_failure_type_is_one_of_the_published_five_with_the_finer_reason_beside(
    status: str, failure_type: str | None, reason: str | None, expected: tuple[Any, Any]
) -> None:
    got = public.failure(status, failure_type, reason)
    assert got == expected
    assert got[0] is None or got[0] in set(public.PublicFailureType)


def test_ledger_entries_read_as_the_published_example() -> None:
    # a 3-item batch at 10 credits, all succeeded: reserve -30, settle -30, nothing refunded
    assert public.ledger_delta("reserve", 0, 30) == -30
    assert public.ledger_delta("settle", -30, -30) == -30
    assert public.ledger_delta("refund", 0, -10) == 10
    assert public.ledger_delta("purchase", 5000, 0) == 5000
    assert public.ledger_type("adjustment") == public.ledger_type("bonus") == "bonus"
    assert set(public.ledger_types(public.PublicLedgerType.BONUS)) == {"bonus", "adjustment"}


ALLOWED_MOVES = {
    ("pending", "submitting"),
    ("pending", "cancelled"),
    ("queued", "submitting"),
    ("queued", "cancelled"),
    ("submitting", "processing"),
    ("submitting", "pending"),
    ("submitting", "failed"),
    ("processing", "succeeded"),
    ("processing", "failed"),
}


@pytest.mark.parametrize("src", sorted(ALL_TASK_STATES | {"nonsense"}))
@pytest.mark.parametrize("dst", sorted(ALL_TASK_STATES | {"nonsense"}))
def test_task_moves(src: str, dst: str) -> None:
    assert can_move(src, dst) == ((src, dst) in ALLOWED_MOVES)


def test_terminal_tasks_never_move_and_running_ones_cannot_be_cancelled() -> None:
    for src in TASK_TERMINAL:
        assert not any(can_move(src, dst) for dst in ALL_TASK_STATES)
    assert not can_move("processing", "cancelled")
    assert not can_move("submitting", "cancelled")
    assert not can_move("pending", "succeeded")


@pytest.mark.parametrize(
    ("succeeded", "failed", "cancelled", "cancel_requested", "expected"),
    [
        (3, 0, 0, False, "completed"),
        (3, 0, 0, True, "completed"),  # cancel came too late to cancel anything
        (2, 1, 0, False, "partial"),
        (2, 1, 0, True, "partial"),
        (0, 3, 0, False, "failed"),
        (0, 3, 0, True, "failed"),
        (0, 0, 3, True, "cancelled"),
        (1, 0, 2, True, "cancelled"),
        (1, 1, 1, True, "cancelled"),
        (0, 1, 2, True, "cancelled"),
        (1, 0, 1, False, "partial"),  # cancelled items without a cancel request
        (0, 0, 1, False, "failed"),
        (0, 0, 0, False, "failed"),
    ],
)
def test_batch_final_status(
    succeeded: int, failed: int, cancelled: int, cancel_requested: bool, expected: str
) -> None:
    status = batch_final_status(succeeded, failed, cancelled, cancel_requested)
    assert status == expected
    assert status in BATCH_TERMINAL


@given(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50), st.booleans())
def test_batch_final_status_is_always_terminal(s: int, f: int, c: int, req: bool) -> None:
    status = batch_final_status(s, f, c, req)
    assert status in BATCH_TERMINAL
    if status == "completed":
        assert s > 0 and f == 0 and c == 0


# --- schedules ----------------------------------------------------------------------------


def test_poll_backoff_is_5_then_15_then_30() -> None:
    p = PollSchedule()
    assert [p.delay_after(n) for n in range(7)] == [5, 15, 15, 15, 30, 30, 30]
    assert p.delay_after(-1) == 5
    assert p.delay_after(1000) == 30
    assert p.next_poll_at(NOW, 0) == NOW + timedelta(seconds=5)
    assert p.next_poll_at(NOW, 2) == NOW + timedelta(seconds=15)
    assert p.next_poll_at(NOW, 4) == NOW + timedelta(seconds=30)


def test_poll_schedule_is_configurable() -> None:
    p = PollSchedule(0.5, 1.0, 2.0)
    assert [p.delay_after(n) for n in (0, 1, 3, 4)] == [0.5, 1.0, 1.0, 2.0]


def test_retry_backoff_grows_until_the_cap() -> None:
    policy = RetryPolicy(base=2.0, cap=300.0)

    class Fixed(random.Random):
        def random(self) -> float:
            return 1.0 - 1e-12  # no jitter: the top of the range

    delays = [policy.delay(n, Fixed()) for n in range(1, 12)]
    assert delays[:4] == pytest.approx([2.0, 4.0, 8.0, 16.0])
    assert all(a < b for a, b in itertools.pairwise(delays[:9]))
    assert delays[-1] == pytest.approx(300.0)
    # with jitter, a later attempt never waits less than half as long as an earlier one
    rng = random.Random(7)
    for n in range(1, 9):
        assert policy.delay(n + 1, rng) >= 0.5 * 2.0 * 2 ** (n - 1)


@given(attempt=st.integers(-2, 60), seed=st.integers(0, 2**32))
def test_retry_jitter_is_bounded(attempt: int, seed: int) -> None:
    policy = RetryPolicy(base=2.0, cap=300.0)
    raw = min(300.0, 2.0 * 2 ** max(0, attempt - 1))
    delay = policy.delay(attempt, random.Random(seed))
    assert 0.5 * raw <= delay <= raw
    assert delay <= policy.cap


@given(
    attempt=st.integers(1, 20),
    retry_after=st.floats(0, 10_000, allow_nan=False),
    seed=st.integers(0, 2**32),
)
def test_retry_honours_retry_after_up_to_the_cap(
    attempt: int, retry_after: float, seed: int
) -> None:
    policy = RetryPolicy(base=2.0, cap=300.0)
    delay = policy.delay(attempt, random.Random(seed), retry_after=retry_after)
    assert delay >= min(retry_after, policy.cap)
    assert delay <= max(policy.cap, retry_after)
    assert delay <= policy.cap


def test_retry_after_longer_than_backoff_is_used() -> None:
    policy = RetryPolicy()
    assert policy.delay(1, random.Random(1), retry_after=42.0) == 42.0
    assert policy.delay(1, random.Random(1), retry_after=10_000.0) == policy.cap


def test_retry_attempts_run_out() -> None:
    policy = RetryPolicy(max_attempts=5)
    assert [policy.exhausted(n) for n in (0, 4, 5, 6)] == [False, False, True, True]


def test_timed_out_by_polls_or_deadline() -> None:
    later = NOW + timedelta(minutes=30)
    assert not timed_out(now=NOW, deadline=later, poll_count=3, max_poll_count=20)
    assert timed_out(now=NOW, deadline=later, poll_count=20, max_poll_count=20)
    assert timed_out(now=later, deadline=later, poll_count=0, max_poll_count=20)
    assert not timed_out(now=NOW, deadline=None, poll_count=19, max_poll_count=20)


def test_catalog_typical_seconds_override_is_checked() -> None:
    spec = parse_catalog_overrides('{"sora-2": {"typical_seconds": 30}}').get("sora-2")
    assert spec is not None and spec.typical_seconds == 30
    for bad in ("0", "1.5", '"60"', "true"):
        with pytest.raises(ConfigError, match="typical_seconds"):
            parse_catalog_overrides(f'{{"sora-2": {{"typical_seconds": {bad}}}}}')
