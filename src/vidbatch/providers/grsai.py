"""The GrsAI client: builds create requests, polls results, reads callbacks.

The pure parts (:func:`build_create_request`, :func:`normalise_task`,
:func:`parse_callback_body`) hold every mapping rule and are what the unit tests exercise;
:class:`GrsAIClient` adds the HTTP calls and translates every transport failure, in one
place, into :mod:`vidbatch.exceptions`:

==========================================  =========================  ====================
what happened                               create                     get_result
==========================================  =========================  ====================
refused / DNS / connect timeout (not sent)  ProviderTransient network  ProviderTransient
read timeout, reset, cut body (sent)        ProviderAmbiguous          ProviderTransient
HTTP 429 (``Retry-After`` seconds kept)     ProviderTransient          ProviderTransient
HTTP 502 / 504 (a gateway gave up)          ProviderAmbiguous          ProviderTransient
other HTTP 5xx                              ProviderTransient          ProviderTransient
HTTP 400 / 422                              ProviderRejected param     ProviderRejected
other HTTP 4xx                              ProviderRejected unknown   ProviderRejected
``code`` -22                                ProviderNotFound           ProviderNotFound
other non-zero ``code``                     ProviderRejected param     ProviderRejected
unparseable body, no ``data.id``            ProviderAmbiguous          ProviderTransient
==========================================  =========================  ====================

A create whose outcome is unknown is never retried here: only the caller can decide whether
submitting again is safe.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

import aiohttp

from vidbatch.domain.catalog import Catalog
from vidbatch.domain.provider import RemoteResult, TaskSpec
from vidbatch.domain.states import FailureType
from vidbatch.exceptions import (
    CallbackInvalid,
    ProviderAmbiguous,
    ProviderError,
    ProviderNotFound,
    ProviderRejected,
    ProviderTransient,
)

logger = logging.getLogger(__name__)

SORA_PATH = "/v1/video/sora-video"
VEO_PATH = "/v1/video/veo"
RESULT_PATH = "/v1/draw/result"

#: ``webHook`` value that asks GrsAI to answer with the id at once and be polled.
POLLING_WEBHOOK = "-1"
#: GrsAI's ``code`` for "no such task".
CODE_NOT_FOUND = -22

# The original app always sent ``sora-2`` for anything that is not Veo.
_DEFAULT_SORA_MODEL = "sora-2"
_SORA_ASPECT_RATIOS = frozenset({"9:16", "16:9"})
_MAX_VEO_URLS = 3
_FAILURE_REASON_TYPES = {
    "input_moderation": FailureType.MODERATION,
    "output_moderation": FailureType.MODERATION,
    "error": FailureType.MODEL_ERROR,
}
_NO_URL_ERROR = "provider reported success but gave no video URL"
# Provider messages are kept for operators, but a whole HTML error page is not a message.
_MAX_MESSAGE = 500


# --------------------------------------------------------------------------- payloads


def provider_model_for(model: str, catalog: Catalog) -> str:
    """The GrsAI model name for a public model name."""
    spec = catalog.get(model)
    if spec is not None:
        return spec.provider_model
    if catalog.family_of(model) == "sora":
        return _DEFAULT_SORA_MODEL
    # An unknown Veo name is passed through: GrsAI refuses it if it is not one of its own.
    return model


def _meta_str(meta: Mapping[str, Any], key: str) -> str | None:
    value = meta.get(key)
    return value if isinstance(value, str) and value else None


def _meta_urls(meta: Mapping[str, Any]) -> list[str]:
    value = meta.get("urls")
    if not isinstance(value, list | tuple):
        return []
    return [u for u in value if isinstance(u, str) and u][:_MAX_VEO_URLS]


def build_create_request(spec: TaskSpec, catalog: Catalog) -> tuple[str, dict[str, Any]]:
    """The path and JSON body that start ``spec`` at GrsAI (the original app's mapping)."""
    webhook = spec.callback_url or POLLING_WEBHOOK
    model = provider_model_for(spec.model, catalog)
    payload: dict[str, Any]
    if catalog.family_of(spec.model) == "sora":
        payload = {"model": model, "prompt": spec.prompt}
        if spec.aspect_ratio in _SORA_ASPECT_RATIOS:
            payload["aspectRatio"] = spec.aspect_ratio
        payload["duration"] = 15 if spec.duration == 15 else 10
        payload["size"] = "small"
        if spec.reference_url is not None:
            payload["url"] = spec.reference_url
        payload["webHook"] = webhook
        payload["shutProgress"] = False
        return SORA_PATH, payload

    meta = spec.meta or {}
    payload = {"model": model, "prompt": spec.prompt}
    if spec.aspect_ratio is not None:
        payload["aspectRatio"] = spec.aspect_ratio
    first_frame = _meta_str(meta, "firstFrameUrl")
    if first_frame is not None:
        payload["firstFrameUrl"] = first_frame
        last_frame = _meta_str(meta, "lastFrameUrl")
        if last_frame is not None:
            payload["lastFrameUrl"] = last_frame
    urls = _meta_urls(meta)
    if urls:
        payload["urls"] = urls
    elif spec.reference_url:
        payload["urls"] = [spec.reference_url]
    payload["webHook"] = webhook
    payload["shutProgress"] = False
    return VEO_PATH, payload


# --------------------------------------------------------------------------- results


def _progress(value: Any) -> int:
    """An integer 0..100 from whatever the provider sent (int, float, "45", "45%")."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, str):
        value = value.strip().rstrip("%").strip()
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0
    if math.isnan(number):
        return 0
    return int(max(0.0, min(100.0, number)))  # clamp first: int(inf) would raise


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _first_result(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    results = obj.get("results")
    if isinstance(results, list) and results and isinstance(results[0], Mapping):
        return results[0]
    return None


def normalise_task(obj: Mapping[str, Any], *, remote_id: str | None = None) -> RemoteResult:
    """A GrsAI task object as a :class:`RemoteResult`.

    ``remote_id`` is used when the object carries no id of its own. Unknown statuses count
    as running: polling stays the source of truth until the provider says it is over.
    """
    raw_id = obj.get("id")
    task_id = str(raw_id) if isinstance(raw_id, str | int) and str(raw_id) else remote_id
    if not task_id:
        raise CallbackInvalid("task object has no id")

    first = _first_result(obj)
    video_url = _text(first.get("url")) if first is not None else None
    if video_url is None:
        video_url = _text(obj.get("url"))
    pid = _text(first.get("pid")) if first is not None else None
    remove_watermark: bool | None = None
    if first is not None and isinstance(first.get("removeWatermark"), bool):
        remove_watermark = first["removeWatermark"]

    raw_reason = obj.get("failure_reason")
    failure_reason = raw_reason if isinstance(raw_reason, str) else None
    error = _text(obj.get("error"))
    progress = _progress(obj.get("progress"))
    raw_status = obj.get("status")
    status = raw_status.strip().lower() if isinstance(raw_status, str) else ""

    common: dict[str, Any] = {
        "remote_id": task_id,
        "video_url": video_url,
        "pid": pid,
        "remove_watermark": remove_watermark,
        "failure_reason": failure_reason,
        "error": error,
    }
    if status == "succeeded":
        if video_url is None:
            return RemoteResult(
                status="failed",
                progress=progress,
                failure_type=FailureType.MODEL_ERROR,
                **{**common, "error": error or _NO_URL_ERROR},
            )
        return RemoteResult(status="succeeded", progress=100, **common)
    if status == "violation":
        return RemoteResult(
            status="failed", progress=progress, failure_type=FailureType.MODERATION, **common
        )
    if status == "failed":
        failure_type = _FAILURE_REASON_TYPES.get(failure_reason or "", FailureType.UNKNOWN)
        return RemoteResult(status="failed", progress=progress, failure_type=failure_type, **common)
    return RemoteResult(status="running", progress=progress, **common)


def parse_callback_body(body: bytes) -> RemoteResult:
    """Read the body GrsAI posts to a ``webHook``: the bare task object.

    An envelope (``{"code", "msg", "data": {task}}``) is tolerated too, in case the provider
    ever wraps it. Raises :class:`CallbackInvalid` for anything that is not a task.
    """
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, RecursionError) as exc:
        raise CallbackInvalid(f"callback body is not JSON ({exc.__class__.__name__})") from None
    if not isinstance(obj, dict):
        raise CallbackInvalid("callback body is not a JSON object")
    if "status" not in obj and "id" not in obj and isinstance(obj.get("data"), dict):
        obj = obj["data"]
    if "status" not in obj:
        raise CallbackInvalid("callback body has no status")
    return normalise_task(obj)


# --------------------------------------------------------------------------- HTTP


def _parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds; HTTP dates are not honoured (GrsAI is not known to send them)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 and math.isfinite(seconds) else None


def _message_from(text: str) -> str:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        for key in ("msg", "message", "error", "detail"):
            if isinstance(obj.get(key), str) and obj[key]:
                return str(obj[key])[:_MAX_MESSAGE]
    return text.strip()[:_MAX_MESSAGE]


def _code_of(envelope: Mapping[str, Any]) -> int | None:
    code = envelope.get("code")
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code
    if isinstance(code, str):
        try:
            return int(code.strip())
        except ValueError:
            return None
    return None


class GrsAIClient:
    """:class:`~vidbatch.domain.provider.Provider` for GrsAI, over a caller-owned session."""

    name = "grsai"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: str,
        catalog: Catalog,
        connect_timeout: float = 5,
        read_timeout: float = 30,
    ) -> None:
        self._session = session
        self.base_url = _clean_base_url(base_url)
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        self._catalog = catalog
        # ``total`` bounds the whole call (``sock_read`` only bounds each read), so a worker
        # knows a call ends within connect + read seconds: its lease must outlast that.
        self._timeout = aiohttp.ClientTimeout(
            total=connect_timeout + read_timeout,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )

    def __repr__(self) -> str:
        # Never show the key.
        return f"GrsAIClient(base_url={self.base_url!r})"

    async def create_task(self, spec: TaskSpec) -> str:
        path, payload = build_create_request(spec, self._catalog)
        try:
            envelope = await self._post(path, payload, creating=True)
            data = envelope.get("data")
            remote_id = data.get("id") if isinstance(data, dict) else None
            if not isinstance(remote_id, str | int) or not str(remote_id):
                raise ProviderAmbiguous("provider accepted the create but returned no task id")
        except ProviderAmbiguous as exc:
            logger.warning(
                "create outcome unknown: %s",
                exc.message,
                extra={"task_id": spec.task_id, "action": "create"},
            )
            raise
        logger.info(
            "remote task created",
            extra={"task_id": spec.task_id, "remote_id": str(remote_id), "action": "create"},
        )
        return str(remote_id)

    async def get_result(self, remote_id: str) -> RemoteResult:
        envelope = await self._post(RESULT_PATH, {"id": remote_id}, creating=False)
        data = envelope.get("data")
        if not isinstance(data, dict) or "status" not in data:
            raise ProviderTransient("provider answered without a task object")
        try:
            return normalise_task(data, remote_id=remote_id)
        except CallbackInvalid:
            raise ProviderTransient("provider answered without a task id") from None

    def parse_callback(self, body: bytes) -> RemoteResult:
        return parse_callback_body(body)

    async def _post(
        self, path: str, payload: Mapping[str, Any], *, creating: bool
    ) -> dict[str, Any]:
        """POST and return the envelope with ``code`` 0, or raise a ProviderError."""
        url = self.base_url + path
        # Once the request may have reached GrsAI, a lost answer on create is ambiguous.
        after_send: type[ProviderError] = ProviderAmbiguous if creating else ProviderTransient
        try:
            async with self._session.post(
                url, json=payload, headers=self._headers, timeout=self._timeout
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                text = await response.text(errors="replace")
        except aiohttp.ClientConnectorError as exc:
            raise ProviderTransient(
                f"cannot connect to provider ({exc.__class__.__name__})",
                failure_type=FailureType.NETWORK,
            ) from None
        except aiohttp.ConnectionTimeoutError:
            raise ProviderTransient(
                "timed out connecting to provider", failure_type=FailureType.NETWORK
            ) from None
        except aiohttp.InvalidURL:
            raise ProviderTransient(
                "provider URL is invalid", failure_type=FailureType.NETWORK
            ) from None
        except TimeoutError:
            raise after_send(
                "provider did not answer in time", failure_type=FailureType.NETWORK
            ) from None
        except aiohttp.ClientError as exc:
            raise after_send(
                f"connection to provider broke ({exc.__class__.__name__})",
                failure_type=FailureType.NETWORK,
            ) from None

        _raise_for_status(status, text, retry_after, after_send)
        return _accepted(text, status, after_send)


def _raise_for_status(
    status: int, text: str, retry_after: str | None, after_send: type[ProviderError]
) -> None:
    """Raise the ProviderError an HTTP error status stands for; nothing below 400."""
    if status == 429:
        raise ProviderTransient(
            "provider is rate limiting",
            retry_after=_parse_retry_after(retry_after),
            failure_type=FailureType.NETWORK,
            http_status=status,
        )
    if status in (502, 504):
        # A gateway answered for GrsAI: the create may have reached it and been stored.
        raise after_send(
            f"provider gateway error HTTP {status}: {_message_from(text)}",
            failure_type=FailureType.NETWORK,
        )
    if status >= 500:
        raise ProviderTransient(
            f"provider error HTTP {status}: {_message_from(text)}",
            retry_after=_parse_retry_after(retry_after),
            failure_type=FailureType.NETWORK,
            http_status=status,
        )
    if status >= 400:
        raise ProviderRejected(
            _message_from(text) or f"HTTP {status}",
            failure_type=FailureType.PARAM_ERROR if status in (400, 422) else FailureType.UNKNOWN,
            http_status=status,
        )


def _accepted(text: str, status: int, after_send: type[ProviderError]) -> dict[str, Any]:
    """The answer's envelope when its ``code`` is 0, else raise the ProviderError it means."""
    try:
        envelope = json.loads(text)
    except json.JSONDecodeError:
        envelope = None
    code = _code_of(envelope) if isinstance(envelope, dict) else None
    if not isinstance(envelope, dict) or code is None:
        raise after_send("provider answered with an unreadable body", http_status=status)
    if code == 0:
        return envelope
    message = envelope.get("msg") if isinstance(envelope.get("msg"), str) else ""
    if code == CODE_NOT_FOUND:
        raise ProviderNotFound(
            message or "provider does not know this task",
            http_status=status,
            provider_code=code,
        )
    raise ProviderRejected(
        message or f"provider refused the request (code {code})",
        failure_type=FailureType.PARAM_ERROR,
        http_status=status,
        provider_code=code,
    )


def _clean_base_url(base_url: str) -> str:
    """``https://host/v1/`` -> ``https://host``: users often paste the ``/v1``."""
    url = base_url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")].rstrip("/")
    return url
