"""The model catalog: the public model names customers send, which provider serves them and
what they map to there, what they cost, and which parameters they accept.

The operator can extend or re-price it with ``VIDBATCH_MODEL_CATALOG`` (a JSON object keyed
by public name; see :func:`parse_catalog_overrides`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from vidbatch.domain.limits import (
    MAX_DURATION_SECONDS,
    MAX_PRICE,
    MAX_WAIT_SECONDS,
    is_whole,
    parse_whole,
)
from vidbatch.domain.provider import DEFAULT_PROVIDER
from vidbatch.exceptions import ConfigError

Family = Literal["sora", "veo"]
#: A provider name is stored with each task (``video_tasks.provider``, 32 characters).
MAX_PROVIDER_NAME = 32
#: So is the public model name (``video_tasks.model``, 64 characters).
MAX_MODEL_NAME = 64


@dataclass(frozen=True)
class ModelSpec:
    """One public model: its provider and provider model, family, price and accepted
    parameters."""

    name: str
    family: Family
    provider_model: str
    price_credits: int
    #: Allowed durations in seconds; empty means the model takes no duration.
    durations: tuple[int, ...] = ()
    default_duration: int | None = None
    #: Price per duration when it differs from ``price_credits`` (e.g. {15: 15}).
    duration_prices: Mapping[int, int] = field(default_factory=dict)
    #: Wall-clock limit for one generation before the task times out.
    max_wait_seconds: int = 1800
    #: How long one generation usually takes: in webhook mode a task with no callback is
    #: polled the first time after this (at most VIDBATCH_CALLBACK_GRACE_SECONDS).
    typical_seconds: int = 60
    #: The registered provider (``vidbatch.providers.registry``) that serves this model.
    provider: str = DEFAULT_PROVIDER

    def price_for(self, duration: int | None) -> int:
        """The credits one video of this model costs at ``duration``."""
        if duration is not None and duration in self.duration_prices:
            return self.duration_prices[duration]
        return self.price_credits


DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="sora-2",
        family="sora",
        provider_model="sora-2",
        price_credits=10,
        durations=(10, 15),
        default_duration=10,
        typical_seconds=60,
    ),
    ModelSpec(
        name="veo-flash",
        family="veo",
        provider_model="veo3.1-fast",
        price_credits=50,
        typical_seconds=45,
    ),
    ModelSpec(
        name="veo-pro",
        family="veo",
        provider_model="veo3.1-pro",
        price_credits=250,
        typical_seconds=90,
    ),
)


@dataclass(frozen=True)
class Catalog:
    """Lookup of :class:`ModelSpec` by public name."""

    models: Mapping[str, ModelSpec]

    def get(self, name: str) -> ModelSpec | None:
        return self.models.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.models

    @property
    def names(self) -> list[str]:
        return sorted(self.models)

    def family_of(self, name: str) -> Family:
        """The family of a model; unknown names follow the original's rule (contains 'veo')."""
        spec = self.models.get(name)
        if spec is not None:
            return spec.family
        return "veo" if "veo" in name.lower() else "sora"


def default_catalog() -> Catalog:
    return Catalog({m.name: m for m in DEFAULT_MODELS})


def parse_catalog_overrides(raw: str | Mapping[str, Any] | None) -> Catalog:
    """Build the catalog from defaults plus operator overrides.

    ``raw`` is a JSON object such as
    ``{"sora-2": {"price_credits": 12}, "veo-flash-4k": {"family": "veo",
    "provider_model": "veo3.1-fast-4k", "price_credits": 90}}``. Known names are updated
    field by field; new names need ``family``, ``provider_model`` and ``price_credits``.
    ``provider`` (default ``grsai``) has the model served by another registered provider.
    """
    models = {m.name: m for m in DEFAULT_MODELS}
    if raw is None or raw in ("", {}):
        return Catalog(models)
    for name, fields in _overrides_object(raw).items():
        kwargs = _override_fields(name, fields)
        if name in models:
            models[name] = replace(models[name], **kwargs)
        else:
            missing = _NEW_MODEL_FIELDS - set(kwargs)
            if missing:
                raise ConfigError(f"model {name!r}: missing {', '.join(sorted(missing))}")
            models[name] = ModelSpec(name=name, **kwargs)
    for spec in models.values():
        if spec.default_duration is not None and spec.default_duration not in spec.durations:
            raise ConfigError(
                f"model {spec.name!r}: default_duration {spec.default_duration} is not one "
                "of its durations"
            )
    return Catalog(models)


#: The fields an override may set.
_OVERRIDE_FIELDS = frozenset(
    {
        "family",
        "provider_model",
        "price_credits",
        "durations",
        "default_duration",
        "duration_prices",
        "max_wait_seconds",
        "typical_seconds",
        "provider",
    }
)
#: The fields a model new to the catalog must set.
_NEW_MODEL_FIELDS = frozenset({"family", "provider_model", "price_credits"})


def _overrides_object(raw: str | Mapping[str, Any]) -> dict[str, Any]:
    """The overrides as a dict keyed by model name (from JSON text or a mapping)."""
    try:
        data = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ConfigError("must be a JSON object keyed by model name")
    return data


def _override_fields(name: str, fields: Any) -> dict[str, Any]:
    """One model's override, checked, its numbers typed as :class:`ModelSpec` keeps them."""
    if not isinstance(fields, dict):
        raise ConfigError(f"model {name!r}: must be an object")
    unknown = set(fields) - _OVERRIDE_FIELDS
    if unknown:
        raise ConfigError(f"model {name!r}: unknown field(s) {', '.join(sorted(unknown))}")
    if not 0 < len(name) <= MAX_MODEL_NAME:
        raise ConfigError(f"model {name!r}: a name of 1 to {MAX_MODEL_NAME} characters")
    kwargs = _checked_durations(name, dict(fields))
    if kwargs.get("family") not in (None, "sora", "veo"):
        raise ConfigError(f"model {name!r}: family must be 'sora' or 'veo'")
    provider_model = kwargs.get("provider_model")
    if provider_model is not None and (
        not isinstance(provider_model, str) or not provider_model.strip()
    ):
        raise ConfigError(f"model {name!r}: provider_model must be a non-empty name")
    provider = kwargs.get("provider")
    if provider is not None and (
        not isinstance(provider, str) or not 0 < len(provider) <= MAX_PROVIDER_NAME
    ):
        raise ConfigError(
            f"model {name!r}: provider must be a name of 1 to {MAX_PROVIDER_NAME} characters"
        )
    price = kwargs.get("price_credits")
    if price is not None and not _whole_in(price, 0, MAX_PRICE):
        raise ConfigError(
            f"model {name!r}: price_credits must be a whole number from 0 to {MAX_PRICE}"
        )
    default = kwargs.get("default_duration")
    if default is not None and not _whole_in(default, 1, MAX_DURATION_SECONDS):
        raise ConfigError(
            f"model {name!r}: default_duration must be whole seconds from 1 to "
            f"{MAX_DURATION_SECONDS}"
        )
    if "max_wait_seconds" in kwargs and not _whole_in(
        kwargs["max_wait_seconds"], 1, MAX_WAIT_SECONDS
    ):
        raise ConfigError(
            f"model {name!r}: max_wait_seconds must be whole seconds from 1 to {MAX_WAIT_SECONDS}"
        )
    if "typical_seconds" in kwargs and not _whole_in(
        kwargs["typical_seconds"], 1, MAX_WAIT_SECONDS
    ):
        raise ConfigError(
            f"model {name!r}: typical_seconds must be whole seconds from 1 to {MAX_WAIT_SECONDS}"
        )
    return kwargs


def _checked_durations(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``durations`` and ``duration_prices`` as whole seconds and whole prices in bounds."""
    if "durations" in kwargs:
        durations = kwargs["durations"]
        if not isinstance(durations, list) or not all(
            _whole_in(d, 1, MAX_DURATION_SECONDS) for d in durations
        ):
            raise ConfigError(
                f"model {name!r}: durations must be a list of whole seconds from 1 to "
                f"{MAX_DURATION_SECONDS}"
            )
        kwargs["durations"] = tuple(durations)
    if "duration_prices" in kwargs:
        prices = kwargs["duration_prices"]
        if not isinstance(prices, dict) or not all(
            parse_whole(k) is not None and _whole_in(v, 0, MAX_PRICE) for k, v in prices.items()
        ):
            raise ConfigError(
                f"model {name!r}: duration_prices must map whole seconds to whole "
                f"prices from 0 to {MAX_PRICE}"
            )
        kwargs["duration_prices"] = {int(k): v for k, v in prices.items()}
    return kwargs


def _whole_in(value: object, lo: int, hi: int) -> bool:
    return is_whole(value) and lo <= value <= hi  # type: ignore[operator]
