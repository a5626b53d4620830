"""Every knob of the GrsAI simulator, in one validated model.

The same model is the startup configuration and the body of ``POST /_sim/config`` (where
any subset of fields may be sent). Rates are probabilities in 0..1, times are seconds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Rate = float


def _rate(description: str) -> float:
    return Field(default=0.0, ge=0.0, le=1.0, description=description)


class SimulatorConfig(BaseModel):
    """How the simulator behaves; all faults are off by default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # -- identity
    seed: int | None = Field(
        default=None, description="Seed of the one random generator; None draws a fresh one."
    )
    api_key: str | None = Field(
        default=None, description="Exact key demanded; None accepts any key starting with 'sk-'."
    )
    public_url: str | None = Field(
        default=None,
        description="Base URL put in result URLs; None uses the Host the request came in on.",
    )

    # -- generation time
    gen_time_mode: Literal["fixed", "uniform", "lognormal"] = Field(
        default="fixed",
        description="fixed: gen_time; uniform: between gen_time_min and gen_time_max; "
        "lognormal: median gen_time, shape gen_time_sigma, clamped to gen_time_min..max.",
    )
    gen_time: float = Field(default=10.0, ge=0.0, description="Generation time, or its median.")
    gen_time_min: float = Field(default=0.0, ge=0.0, description="Lower bound (uniform/lognormal).")
    gen_time_max: float = Field(
        default=60.0, ge=0.0, description="Upper bound (uniform/lognormal)."
    )
    gen_time_sigma: float = Field(default=0.5, ge=0.0, description="Lognormal shape parameter.")

    # -- task outcomes (drawn once per task, in this order; the rest succeed)
    output_moderation_rate: Rate = _rate("Share of tasks failing with output_moderation.")
    input_moderation_rate: Rate = _rate("Share of tasks failing with input_moderation.")
    error_rate: Rate = _rate("Share of tasks failing with failure_reason 'error'.")
    violation_rate: Rate = _rate("Share of tasks ending with status 'violation'.")
    no_url_rate: Rate = _rate("Share of tasks 'succeeding' without a video URL.")

    # -- HTTP faults, per endpoint kind (both create endpoints share the create rates)
    create_429_rate: Rate = _rate("Share of create calls answered HTTP 429.")
    create_500_rate: Rate = _rate("Share of create calls answered HTTP 500.")
    result_429_rate: Rate = _rate("Share of result calls answered HTTP 429.")
    result_500_rate: Rate = _rate("Share of result calls answered HTTP 500.")
    retry_after: int = Field(default=1, ge=0, description="Retry-After seconds sent with a 429.")
    outage: bool = Field(default=False, description="Every API and file endpoint answers 500.")

    # -- capacity and ambiguity
    max_running: int | None = Field(
        default=None,
        ge=0,
        description="Tasks allowed to run at once; a create beyond it gets HTTP 429 and counts "
        "as a cap overshoot. None: no cap.",
    )
    hold: bool = Field(
        default=False,
        description="Tasks created while set keep running until POST /_sim/release, and end "
        "then (their generation time only sets their progress meanwhile).",
    )
    create_hang_rate: Rate = _rate(
        "Share of creates that make the task but never answer (until the client goes away)."
    )
    result_hang_rate: Rate = _rate(
        "Share of result calls that never answer (until the client goes away)."
    )
    hang_max: float = Field(
        default=300.0, gt=0.0, description="Longest a hanging call holds its connection."
    )

    # -- callbacks
    callback_interval: float = Field(
        default=1.0, gt=0.0, description="Seconds between progress callbacks."
    )
    callback_timeout: float = Field(default=5.0, gt=0.0, description="Timeout of one delivery.")
    callback_loss_rate: Rate = _rate("Share of callbacks silently not sent.")
    callback_duplicate_rate: Rate = _rate("Share of callbacks sent twice.")
    callback_delay_rate: Rate = _rate("Share of callbacks sent late (by callback_delay).")
    callback_delay: float = Field(default=2.0, ge=0.0, description="Delay of a late callback.")
    callback_reorder_rate: Rate = _rate(
        "Share of progress callbacks held back and sent after the final one."
    )

    # -- result files
    result_ttl: float = Field(
        default=7200.0, ge=0.0, description="Seconds a result URL serves its file after success."
    )
    file_500_rate: Rate = _rate("Share of file downloads answered HTTP 500.")
    file_500_next: int = Field(
        default=0, ge=0, description="The next this many file downloads answer HTTP 500."
    )
    file_body: Literal["video", "html"] = Field(
        default="video",
        description="What a result URL serves: the sample MP4, or an HTML page (not a video).",
    )
    file_padding_bytes: int = Field(
        default=0,
        ge=0,
        le=2**31 - 16,
        description="Bytes added to the served MP4 (a trailing 'free' box: still a valid "
        "MP4), to make result files of a chosen size.",
    )
    file_hold: bool = Field(
        default=False,
        description="File downloads send nothing while set (until cleared, the client goes "
        "away, or hang_max).",
    )

    max_recorded_requests: int = Field(
        default=10_000, ge=0, description="Requests kept for GET /_sim/requests."
    )

    @model_validator(mode="after")
    def _check_bounds(self) -> SimulatorConfig:
        if self.gen_time_min > self.gen_time_max:
            raise ValueError("gen_time_min must not exceed gen_time_max")
        outcomes = (
            self.output_moderation_rate
            + self.input_moderation_rate
            + self.error_rate
            + self.violation_rate
            + self.no_url_rate
        )
        if outcomes > 1.0 + 1e-9:
            raise ValueError("the outcome rates add up to more than 1")
        if self.create_429_rate + self.create_500_rate > 1.0 + 1e-9:
            raise ValueError("create_429_rate + create_500_rate exceeds 1")
        if self.result_429_rate + self.result_500_rate > 1.0 + 1e-9:
            raise ValueError("result_429_rate + result_500_rate exceeds 1")
        return self
