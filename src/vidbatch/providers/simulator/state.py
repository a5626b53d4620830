"""The simulator's state: tasks, the random decisions about them, the request record and stats.

A task's status and progress are never stored: they are computed from the clock when asked
(``created_at`` + its drawn generation time), so the simulator needs no background loop and a
zero generation time means the task is done at once.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from vidbatch.providers.simulator.config import SimulatorConfig

Family = Literal["sora", "veo"]
Outcome = Literal[
    "succeeded", "no_url", "output_moderation", "input_moderation", "error", "violation"
]

SORA_MODELS = frozenset({"sora-2"})
VEO_MODELS = frozenset(
    f"{base}{variant}"
    for base in ("veo3.1-fast", "veo3.1-pro")
    for variant in ("", "-1080p", "-4k")
)
ASPECT_RATIOS = frozenset({"9:16", "16:9"})
SORA_DURATIONS = frozenset({10, 15})
SORA_SIZES = frozenset({"small", "large"})
MAX_VEO_URLS = 3

#: Prompt markers that force an outcome (see the package docstring).
OUTCOME_MARKERS: Mapping[str, Outcome] = {
    "[sim:moderation]": "output_moderation",
    "[sim:output_moderation]": "output_moderation",
    "[sim:input_moderation]": "input_moderation",
    "[sim:error]": "error",
    "[sim:violation]": "violation",
    "[sim:no-url]": "no_url",
}
REJECT_MARKER = "[sim:reject]"
SLOW_MARKER = "[sim:slow]"
HANG_MARKER = "[sim:hang]"
HOLD_MARKER = "[sim:hold]"
AMBIGUOUS_MARKER = "[sim:ambiguous]"
SLOW_FACTOR = 10

_ERRORS: Mapping[Outcome, str] = {
    "output_moderation": "The generated video may violate our content policies.",
    "input_moderation": "The prompt or input image may violate our content policies.",
    "error": "Failed to generate, system error please try again",
    "violation": "Content violation.",
}
# A failed task shows the progress it had reached; the provider never reports 100 on failure.
_FAILED_PROGRESS = 99


def validate_create(family: Family, body: Mapping[str, Any]) -> str | None:
    """Why GrsAI would refuse this create body, or ``None`` if it is acceptable."""
    refusal = _common_refusal(body)
    if refusal is not None:
        return refusal
    return _sora_refusal(body) if family == "sora" else _veo_refusal(body)


def _common_refusal(body: Mapping[str, Any]) -> str | None:
    """What any create body needs: a prompt, a webhook (or "-1"), a known aspect ratio."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "prompt is required"
    webhook = body.get("webHook")
    if webhook is None:
        return "streaming mode not supported by simulator"
    if not isinstance(webhook, str) or not (
        webhook == "-1" or webhook.startswith(("http://", "https://"))
    ):
        return 'webHook must be a URL or "-1"'
    if "shutProgress" in body and not isinstance(body["shutProgress"], bool):
        return "shutProgress must be a boolean"
    aspect = body.get("aspectRatio")
    if aspect is not None and aspect not in ASPECT_RATIOS:
        return f"unsupported aspectRatio {aspect!r}"
    return None


def _sora_refusal(body: Mapping[str, Any]) -> str | None:
    model = body.get("model")
    if model not in SORA_MODELS:
        return f"unsupported model {model!r}"
    duration = body.get("duration")
    if duration is not None and (isinstance(duration, bool) or duration not in SORA_DURATIONS):
        return f"unsupported duration {duration!r}"
    size = body.get("size")
    if size is not None and size not in SORA_SIZES:
        return f"unsupported size {size!r}"
    url = body.get("url")
    if url is not None and not isinstance(url, str):
        return "url must be a string"
    return None


def _veo_refusal(body: Mapping[str, Any]) -> str | None:
    model = body.get("model")
    if model not in VEO_MODELS:
        return f"unsupported model {model!r}"
    urls = body.get("urls")
    if urls is not None:
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            return "urls must be a list of strings"
        if len(urls) > MAX_VEO_URLS:
            return f"at most {MAX_VEO_URLS} urls"
    first, last = body.get("firstFrameUrl"), body.get("lastFrameUrl")
    if last and not first:
        return "lastFrameUrl requires firstFrameUrl"
    for name, value in (("firstFrameUrl", first), ("lastFrameUrl", last)):
        if value is not None and not isinstance(value, str):
            return f"{name} must be a string"
    return None


@dataclass
class SimTask:
    """One simulated task; everything about its future was drawn at creation."""

    id: str
    family: Family
    model: str
    prompt: str
    created_at: float
    gen_time: float
    outcome: Outcome
    hangs: bool
    webhook: str | None
    shut_progress: bool
    base_url: str
    pid: str
    callback_seed: int
    #: A held task runs until released (``POST /_sim/release``) and ends then, whatever its
    #: generation time (which still sets its progress meanwhile).
    held: bool = False
    released_at: float | None = None

    @property
    def awaiting_release(self) -> bool:
        return self.held and self.released_at is None

    @property
    def done_at(self) -> float | None:
        if self.hangs or self.awaiting_release:
            return None
        if self.released_at is not None:
            return self.released_at
        return self.created_at + self.gen_time

    def is_running(self, now: float) -> bool:
        done_at = self.done_at
        return done_at is None or now < done_at

    def progress(self, now: float) -> int:
        if not self.is_running(now):
            return 100 if self.outcome in ("succeeded", "no_url") else _FAILED_PROGRESS
        if self.gen_time <= 0:
            return _FAILED_PROGRESS
        return min(_FAILED_PROGRESS, int(100 * (now - self.created_at) / self.gen_time))

    @property
    def video_url(self) -> str:
        return f"{self.base_url}/files/{self.id}.mp4"

    def view(self, now: float) -> dict[str, Any]:
        """The task object GrsAI returns in ``data`` and posts to callbacks."""
        running = self.is_running(now)
        if running:
            status = "running"
        elif self.outcome in ("succeeded", "no_url"):
            status = "succeeded"
        elif self.outcome == "violation":
            status = "violation"
        else:
            status = "failed"
        failure_reason = ""
        if not running and self.outcome in ("output_moderation", "input_moderation", "error"):
            failure_reason = self.outcome
        error = "" if running else _ERRORS.get(self.outcome, "")
        url = self.video_url if not running and self.outcome == "succeeded" else ""
        obj: dict[str, Any] = {"id": self.id}
        if self.family == "sora":
            obj["results"] = [{"url": url, "removeWatermark": True, "pid": self.pid}] if url else []
        else:
            obj["url"] = url
        obj.update(
            progress=self.progress(now),
            status=status,
            failure_reason=failure_reason,
            error=error,
        )
        return obj

    def serves_file(self, now: float, ttl: float) -> bool:
        done_at = self.done_at
        return (
            self.outcome == "succeeded" and done_at is not None and done_at <= now < done_at + ttl
        )


@dataclass
class Stats:
    tasks_created: int = 0
    created_per_prompt: Counter[str] = field(default_factory=Counter)
    calls_per_endpoint: Counter[str] = field(default_factory=Counter)
    http_429_sent: int = 0
    http_500_sent: int = 0
    rejected: int = 0
    not_found: int = 0
    ambiguous_creates: int = 0
    hung_results: int = 0
    cap_overshoots: int = 0
    max_running_seen: int = 0
    files_served: int = 0
    callbacks_sent: int = 0
    callbacks_failed: int = 0
    callbacks_lost: int = 0
    callbacks_duplicated: int = 0
    callbacks_delayed: int = 0
    callbacks_reordered: int = 0


class SimState:
    """Tasks, random decisions, request record and stats of one simulator instance."""

    def __init__(
        self, config: SimulatorConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.clock = clock
        self.rng = random.Random(config.seed)
        self.tasks: dict[str, SimTask] = {}
        # Tasks that may still be running; pruned lazily so counting stays cheap.
        self._maybe_running: list[SimTask] = []
        self.stats = Stats()
        self.requests: deque[dict[str, Any]] = deque(maxlen=config.max_recorded_requests)
        self.callbacks: deque[dict[str, Any]] = deque(maxlen=config.max_recorded_requests)
        self.started_at = clock()
        #: Bumped by :meth:`reset` so that work started before it can tell it is stale.
        self.generation = 0

    # -- configuration

    def update_config(self, patch: Mapping[str, Any]) -> SimulatorConfig:
        """Apply a partial config; raises pydantic's ValidationError on bad values."""
        merged = {**self.config.model_dump(), **patch}
        self.config = SimulatorConfig.model_validate(merged)
        if "seed" in patch:
            self.rng = random.Random(self.config.seed)
        if "max_recorded_requests" in patch:
            self.requests = deque(self.requests, maxlen=self.config.max_recorded_requests)
            self.callbacks = deque(self.callbacks, maxlen=self.config.max_recorded_requests)
        return self.config

    def reset(self) -> None:
        """Forget tasks, stats and records, and reseed the random generator."""
        self.tasks.clear()
        self._maybe_running.clear()
        self.stats = Stats()
        self.requests.clear()
        self.callbacks.clear()
        self.rng = random.Random(self.config.seed)
        self.started_at = self.clock()
        self.generation += 1

    # -- random decisions

    def http_fault(self, kind: Literal["create", "result"]) -> int | None:
        """429, 500 or None for one call. No draw is made while both rates are zero, so that
        polling (whose count depends on timing) does not shift the decisions about tasks."""
        cfg = self.config
        rate_429, rate_500 = (
            (cfg.create_429_rate, cfg.create_500_rate)
            if kind == "create"
            else (cfg.result_429_rate, cfg.result_500_rate)
        )
        if rate_429 <= 0 and rate_500 <= 0:
            return None
        u = self.rng.random()
        if u < rate_429:
            return 429
        if u < rate_429 + rate_500:
            return 500
        return None

    def draw_file_fault(self) -> bool:
        if self.config.file_500_next > 0:
            self.config.file_500_next -= 1
            return True
        rate = self.config.file_500_rate
        return rate > 0 and self.rng.random() < rate

    def _draw_gen_time(self) -> float:
        cfg = self.config
        if cfg.gen_time_mode == "uniform":
            return self.rng.uniform(cfg.gen_time_min, cfg.gen_time_max)
        if cfg.gen_time_mode == "lognormal":
            if cfg.gen_time <= 0:
                return 0.0
            drawn = self.rng.lognormvariate(math.log(cfg.gen_time), cfg.gen_time_sigma)
            return max(cfg.gen_time_min, min(cfg.gen_time_max, drawn))
        return cfg.gen_time

    def _draw_outcome(self, u: float) -> Outcome:
        cfg = self.config
        edge = 0.0
        for outcome, rate in (
            ("output_moderation", cfg.output_moderation_rate),
            ("input_moderation", cfg.input_moderation_rate),
            ("error", cfg.error_rate),
            ("violation", cfg.violation_rate),
            ("no_url", cfg.no_url_rate),
        ):
            edge += rate
            if u < edge:
                return outcome  # type: ignore[return-value]
        return "succeeded"

    def decide_create_hang(self, prompt: str) -> bool:
        """Whether this create makes its task but never answers."""
        rate = self.config.create_hang_rate
        drawn = rate > 0 and self.rng.random() < rate
        return drawn or AMBIGUOUS_MARKER in prompt

    def decide_result_hang(self) -> bool:
        """Whether this result call never answers."""
        rate = self.config.result_hang_rate
        return rate > 0 and self.rng.random() < rate

    # -- tasks

    def running_now(self) -> int:
        now = self.clock()
        self._maybe_running = [t for t in self._maybe_running if t.is_running(now)]
        return len(self._maybe_running)

    def cap_full(self) -> bool:
        cap = self.config.max_running
        return cap is not None and self.running_now() >= cap

    def new_task(
        self,
        *,
        family: Family,
        model: str,
        prompt: str,
        webhook: str | None,
        shut_progress: bool,
        base_url: str,
    ) -> SimTask:
        """Create a task, drawing everything about its future now.

        The same number of draws is made whatever the prompt says, so a marker in one prompt
        does not change what happens to the others.
        """
        u_outcome = self.rng.random()
        gen_time = self._draw_gen_time()
        id_bits = self.rng.getrandbits(128)
        pid_bits = self.rng.getrandbits(64)
        callback_seed = self.rng.getrandbits(64)

        outcome = self._draw_outcome(u_outcome)
        for marker, forced in OUTCOME_MARKERS.items():
            if marker in prompt:
                outcome = forced
                break
        if SLOW_MARKER in prompt:
            gen_time *= SLOW_FACTOR
        task = SimTask(
            id=f"4-{uuid.UUID(int=id_bits, version=4)}",
            family=family,
            model=model,
            prompt=prompt,
            created_at=self.clock(),
            gen_time=gen_time,
            outcome=outcome,
            hangs=HANG_MARKER in prompt,
            webhook=webhook,
            shut_progress=shut_progress,
            base_url=base_url,
            pid=f"s_{pid_bits:016x}",
            callback_seed=callback_seed,
            held=self.config.hold or HOLD_MARKER in prompt,
        )
        self.tasks[task.id] = task
        self._maybe_running.append(task)
        self.stats.tasks_created += 1
        self.stats.created_per_prompt[prompt] += 1
        self.stats.max_running_seen = max(self.stats.max_running_seen, self.running_now())
        return task

    def release(self) -> int:
        """Let every held task finish; returns how many were released."""
        now = self.clock()
        held = [t for t in self.tasks.values() if t.awaiting_release]
        for task in held:
            task.released_at = now
        return len(held)

    # -- record

    def record(self, method: str, path: str, body: Any, http_status: int, code: int | None) -> None:
        """Keep one received request (never its headers: they carry the key)."""
        self.requests.append(
            {
                "at": round(self.clock() - self.started_at, 6),
                "method": method,
                "path": path,
                "body": body,
                "http_status": http_status,
                "code": code,
            }
        )

    def snapshot(self) -> dict[str, Any]:
        """The stats as plain JSON."""
        s = self.stats
        return {
            "tasks_created": s.tasks_created,
            "created_per_prompt": dict(s.created_per_prompt),
            "calls_per_endpoint": dict(s.calls_per_endpoint),
            "running_now": self.running_now(),
            "max_running_seen": s.max_running_seen,
            "cap_overshoots": s.cap_overshoots,
            "http_429_sent": s.http_429_sent,
            "http_500_sent": s.http_500_sent,
            "rejected": s.rejected,
            "not_found": s.not_found,
            "ambiguous_creates": s.ambiguous_creates,
            "hung_results": s.hung_results,
            "files_served": s.files_served,
            "callbacks_sent": s.callbacks_sent,
            "callbacks_failed": s.callbacks_failed,
            "callbacks_lost": s.callbacks_lost,
            "callbacks_duplicated": s.callbacks_duplicated,
            "callbacks_delayed": s.callbacks_delayed,
            "callbacks_reordered": s.callbacks_reordered,
        }
