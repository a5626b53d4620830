"""``vidbatch simulator``: run the GrsAI simulator as a local HTTP server.

Every option can also be set through ``VIDBATCH_SIM_<NAME>`` (e.g. ``VIDBATCH_SIM_GEN_TIME``);
defaults and help texts come from :class:`~vidbatch.providers.simulator.SimulatorConfig`.
"""

from __future__ import annotations

import logging
from typing import Any

import typer
from pydantic import ValidationError

from vidbatch.providers.simulator import SimulatorConfig, serve

_DEFAULTS = SimulatorConfig()


def _option(name: str, *, default: Any = ..., help: str | None = None) -> Any:
    """A Typer option for the config field ``name``, readable from ``VIDBATCH_SIM_<NAME>``."""
    field = SimulatorConfig.model_fields.get(name)
    if default is ...:
        default = getattr(_DEFAULTS, name)
    return typer.Option(
        default,
        envvar=f"VIDBATCH_SIM_{name.upper()}",
        help=help or (field.description if field is not None else None),
        show_default=True,
    )


def simulator(
    host: str = _option("host", default="127.0.0.1", help="Address to listen on."),
    port: int = _option("port", default=8100, help="Port to listen on."),
    seed: int | None = _option("seed"),
    api_key: str | None = _option("api_key"),
    public_url: str | None = _option("public_url"),
    gen_time_mode: str = _option("gen_time_mode"),
    gen_time: float = _option("gen_time"),
    gen_time_min: float = _option("gen_time_min"),
    gen_time_max: float = _option("gen_time_max"),
    gen_time_sigma: float = _option("gen_time_sigma"),
    output_moderation_rate: float = _option("output_moderation_rate"),
    input_moderation_rate: float = _option("input_moderation_rate"),
    error_rate: float = _option("error_rate"),
    violation_rate: float = _option("violation_rate"),
    no_url_rate: float = _option("no_url_rate"),
    create_429_rate: float = _option("create_429_rate"),
    create_500_rate: float = _option("create_500_rate"),
    result_429_rate: float = _option("result_429_rate"),
    result_500_rate: float = _option("result_500_rate"),
    retry_after: int = _option("retry_after"),
    outage: bool = _option("outage"),
    max_running: int | None = _option("max_running"),
    hold: bool = _option("hold"),
    create_hang_rate: float = _option("create_hang_rate"),
    result_hang_rate: float = _option("result_hang_rate"),
    hang_max: float = _option("hang_max"),
    callback_interval: float = _option("callback_interval"),
    callback_timeout: float = _option("callback_timeout"),
    callback_loss_rate: float = _option("callback_loss_rate"),
    callback_duplicate_rate: float = _option("callback_duplicate_rate"),
    callback_delay_rate: float = _option("callback_delay_rate"),
    callback_delay: float = _option("callback_delay"),
    callback_reorder_rate: float = _option("callback_reorder_rate"),
    result_ttl: float = _option("result_ttl"),
    file_500_rate: float = _option("file_500_rate"),
    log_level: str = _option("log_level", default="info", help="uvicorn log level."),
) -> None:
    """Run a local GrsAI simulator (knobs can be changed later with POST /_sim/config)."""
    knobs = {k: v for k, v in locals().items() if k not in ("host", "port", "log_level")}
    try:
        config = SimulatorConfig(**knobs)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'options'}: {err['msg']}"
            for err in exc.errors()
        )
        raise typer.BadParameter(problems) from None
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s %(message)s")
    typer.echo(f"GrsAI simulator on http://{host}:{port} (control API under /_sim)", err=True)
    serve(config, host, port, log_level=log_level)
