"""Prometheus metrics of one process, in a registry of its own (tests build many apps).

Counters count what this process did; ``vidbatch_tasks`` (by status) is read from the
database at scrape time, so every process reports the same truth. Provider calls are also
kept for the database (``pending_calls``, written after each worker round), where the
dashboard reads the whole fleet's.
"""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.tasks = Gauge(
            "vidbatch_tasks", "Tasks by status (from the database)", ["status"], registry=r
        )
        self.submits = Counter(
            "vidbatch_submits_total", "Provider submits by outcome", ["outcome"], registry=r
        )
        self.polls = Counter(
            "vidbatch_polls_total", "Provider polls by outcome", ["outcome"], registry=r
        )
        self.callbacks = Counter(
            "vidbatch_callbacks_total", "Provider callbacks by outcome", ["outcome"], registry=r
        )
        self.provider_latency = Histogram(
            "vidbatch_provider_latency_seconds",
            "Provider call latency",
            ["call"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.round_duration = Histogram(
            "vidbatch_round_duration_seconds",
            "Duration of one worker round",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.stage_duration = Histogram(
            "vidbatch_worker_pass_duration_seconds",
            "Duration of one pass of a worker stage (submit, poll, archive, settle)",
            ["stage"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.credits = Counter(
            "vidbatch_credits_total", "Credits reserved, charged, refunded", ["kind"], registry=r
        )
        self.webhooks = Counter(
            "vidbatch_webhook_deliveries_total",
            "Customer webhook attempts by outcome",
            ["outcome"],
            registry=r,
        )
        self.ambiguous_submits = Counter(
            "vidbatch_ambiguous_submits_total",
            "Submits whose outcome was unknown, by the policy applied",
            ["policy"],
            registry=r,
        )
        self.lease_expiries = Counter(
            "vidbatch_lease_expiries_total",
            "Claims taken over after their lease expired",
            ["kind"],
            registry=r,
        )
        self.batches_settled = Counter(
            "vidbatch_batches_settled_total",
            "Batches settled by final status",
            ["status"],
            registry=r,
        )

        self.archives = Counter(
            "vidbatch_archives_total",
            "Result archive attempts by outcome (stored, retry, failed = gave up, lost = "
            "lease taken over, expired = deleted past retention)",
            ["outcome"],
            registry=r,
        )
        #: Provider calls by (call, outcome) not yet written to the database.
        self.pending_calls: Tally[tuple[str, str]] = Tally()

    def count_call(self, call: str, outcome: str) -> None:
        """One provider call (``submit`` or ``poll``) and how it went."""
        counter = self.submits if call == "submit" else self.polls
        counter.labels(outcome).inc()
        self.pending_calls[(call, str(outcome))] += 1

    def take_pending_calls(self) -> dict[tuple[str, str], int]:
        """The calls counted since the last take (and forget them)."""
        taken = dict(self.pending_calls)
        self.pending_calls.clear()
        return taken

    def render(self) -> bytes:
        return generate_latest(self.registry)
