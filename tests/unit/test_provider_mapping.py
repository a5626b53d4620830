"""GrsAI mapping rules as pure functions: create payloads, task normalisation, callbacks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vidbatch.domain.catalog import default_catalog, parse_catalog_overrides
from vidbatch.domain.provider import RemoteResult, TaskSpec
from vidbatch.exceptions import CallbackInvalid
from vidbatch.providers.grsai import (
    GrsAIClient,
    _clean_base_url,
    build_create_request,
    normalise_task,
    parse_callback_body,
    provider_model_for,
)

CATALOG = default_catalog()


def build(**fields: Any) -> tuple[str, dict[str, Any]]:
    spec = TaskSpec(**{"task_id": "t-1", "prompt": "a red fox", **fields})
    return build_create_request(spec, CATALOG)


# --------------------------------------------------------------------------- Sora payload


def test_sora_payload_has_exactly_the_original_fields() -> None:
    path, payload = build(model="sora-2", aspect_ratio="16:9", duration=15)
    assert path == "/v1/video/sora-video"
    assert payload == {
        "model": "sora-2",
        "prompt": "a red fox",
        "aspectRatio": "16:9",
        "duration": 15,
        "size": "small",
        "webHook": "-1",
        "shutProgress": False,
    }


@pytest.mark.parametrize(
    ("duration", "sent"), [(15, 15), (10, 10), (None, 10), (5, 10), (20, 10), (0, 10)]
)
def test_sora_duration_is_15_only_when_asked_else_10(duration: int | None, sent: int) -> None:
    assert build(model="sora-2", duration=duration)[1]["duration"] == sent


@pytest.mark.parametrize("ratio", ["9:16", "16:9"])
def test_sora_keeps_supported_aspect_ratios(ratio: str) -> None:
    assert build(model="sora-2", aspect_ratio=ratio)[1]["aspectRatio"] == ratio


@pytest.mark.parametrize("ratio", [None, "1:1", "4:3", "", "16:10"])
def test_sora_drops_other_aspect_ratios(ratio: str | None) -> None:
    assert "aspectRatio" not in build(model="sora-2", aspect_ratio=ratio)[1]


def test_sora_reference_url_becomes_url_and_is_omitted_when_absent() -> None:
    assert build(model="sora-2", reference_url="https://img/x.png")[1]["url"] == "https://img/x.png"
    assert "url" not in build(model="sora-2")[1]


def test_sora_ignores_veo_only_meta() -> None:
    payload = build(model="sora-2", meta={"firstFrameUrl": "https://f", "urls": ["https://u"]})[1]
    assert "firstFrameUrl" not in payload
    assert "urls" not in payload


def test_callback_url_becomes_webhook_and_none_means_polling() -> None:
    cb = "https://app.example/api/video/callback?task_id=t-1"
    assert build(model="sora-2", callback_url=cb)[1]["webHook"] == cb
    assert build(model="veo-pro", callback_url=cb)[1]["webHook"] == cb
    assert build(model="sora-2")[1]["webHook"] == "-1"
    assert build(model="veo-flash", callback_url="")[1]["webHook"] == "-1"


# --------------------------------------------------------------------------- Veo payload


@pytest.mark.parametrize(
    ("model", "provider_model"), [("veo-flash", "veo3.1-fast"), ("veo-pro", "veo3.1-pro")]
)
def test_veo_aliases_map_to_provider_models(model: str, provider_model: str) -> None:
    path, payload = build(model=model, aspect_ratio="16:9")
    assert path == "/v1/video/veo"
    assert payload == {
        "model": provider_model,
        "prompt": "a red fox",
        "aspectRatio": "16:9",
        "webHook": "-1",
        "shutProgress": False,
    }


def test_veo_has_no_duration_size_or_url_and_aspect_only_if_given() -> None:
    payload = build(model="veo-flash", duration=15, reference_url=None)[1]
    assert not {"duration", "size", "url", "aspectRatio"} & payload.keys()


def test_veo_frames_from_meta() -> None:
    payload = build(
        model="veo-pro", meta={"firstFrameUrl": "https://first", "lastFrameUrl": "https://last"}
    )[1]
    assert payload["firstFrameUrl"] == "https://first"
    assert payload["lastFrameUrl"] == "https://last"


def test_veo_last_frame_only_with_first_frame() -> None:
    payload = build(model="veo-pro", meta={"lastFrameUrl": "https://last"})[1]
    assert "lastFrameUrl" not in payload
    assert "firstFrameUrl" not in payload


def test_veo_urls_from_meta_capped_at_three_and_preferred_to_reference() -> None:
    meta = {"urls": ["https://1", "https://2", "https://3", "https://4"]}
    payload = build(model="veo-flash", meta=meta, reference_url="https://ref")[1]
    assert payload["urls"] == ["https://1", "https://2", "https://3"]


def test_veo_reference_url_is_the_fallback_for_urls() -> None:
    assert build(model="veo-flash", reference_url="https://ref")[1]["urls"] == ["https://ref"]
    assert build(model="veo-flash", meta={"urls": []}, reference_url="https://r")[1]["urls"] == [
        "https://r"
    ]
    assert "urls" not in build(model="veo-flash")[1]


def test_veo_meta_of_the_wrong_shape_is_ignored() -> None:
    payload = build(model="veo-flash", meta={"urls": "https://not-a-list", "firstFrameUrl": 3})[1]
    assert "urls" not in payload
    assert "firstFrameUrl" not in payload


def test_unknown_models_follow_the_contains_veo_rule() -> None:
    path, payload = build(model="my-veo-thing")
    assert path == "/v1/video/veo"
    assert payload["model"] == "my-veo-thing"
    path, payload = build(model="sora-2-pro")
    assert path == "/v1/video/sora-video"
    assert payload["model"] == "sora-2"


def test_catalog_extensions_use_their_provider_model() -> None:
    catalog = parse_catalog_overrides(
        {"veo-flash-4k": {"family": "veo", "provider_model": "veo3.1-fast-4k", "price_credits": 9}}
    )
    spec = TaskSpec(task_id="t", model="veo-flash-4k", prompt="p")
    assert build_create_request(spec, catalog) == (
        "/v1/video/veo",
        {"model": "veo3.1-fast-4k", "prompt": "p", "webHook": "-1", "shutProgress": False},
    )
    assert provider_model_for("veo-pro", catalog) == "veo3.1-pro"


@pytest.mark.parametrize(
    ("given", "clean"),
    [
        ("https://grsai.dakka.com.cn", "https://grsai.dakka.com.cn"),
        ("https://grsai.dakka.com.cn/", "https://grsai.dakka.com.cn"),
        ("https://grsaiapi.com/v1", "https://grsaiapi.com"),
        ("https://grsaiapi.com/v1/", "https://grsaiapi.com"),
        (" http://127.0.0.1:8100/v1 ", "http://127.0.0.1:8100"),
    ],
)
def test_base_url_loses_trailing_slash_and_v1(given: str, clean: str) -> None:
    assert _clean_base_url(given) == clean


def test_client_repr_does_not_show_the_key() -> None:
    client = GrsAIClient(
        None,  # type: ignore[arg-type]  # the session is not used by repr
        base_url="https://grsaiapi.com/v1",
        api_key="sk-secret-123",
        catalog=CATALOG,
    )
    assert "sk-secret" not in repr(client)
    assert client.base_url == "https://grsaiapi.com"


# --------------------------------------------------------------------------- normalisation

SORA_DONE = {
    "id": "4-abc",
    "results": [{"url": "https://v/sora.mp4", "removeWatermark": True, "pid": "s_123"}],
    "progress": 100,
    "status": "succeeded",
    "failure_reason": "",
    "error": "",
}
VEO_DONE = {
    "id": "4-def",
    "url": "https://v/veo.mp4",
    "progress": 100,
    "status": "succeeded",
    "failure_reason": "",
    "error": "",
}


def test_sora_success_takes_results_zero() -> None:
    assert normalise_task(SORA_DONE) == RemoteResult(
        remote_id="4-abc",
        status="succeeded",
        progress=100,
        video_url="https://v/sora.mp4",
        pid="s_123",
        remove_watermark=True,
        failure_reason="",
        error=None,
        failure_type=None,
    )


def test_veo_success_takes_top_level_url() -> None:
    result = normalise_task(VEO_DONE)
    assert result.status == "succeeded"
    assert result.video_url == "https://v/veo.mp4"
    assert result.pid is None
    assert result.failure_type is None


def test_results_url_wins_over_top_level_url() -> None:
    obj = {**SORA_DONE, "url": "https://v/legacy.mp4"}
    assert normalise_task(obj).video_url == "https://v/sora.mp4"


def test_empty_results_fall_back_to_top_level_url() -> None:
    obj = {**SORA_DONE, "results": [{"url": ""}], "url": "https://v/legacy.mp4"}
    assert normalise_task(obj).video_url == "https://v/legacy.mp4"


@pytest.mark.parametrize("missing", [{"results": []}, {"results": None}, {"url": ""}, {}])
def test_success_without_url_is_a_model_error(missing: dict[str, Any]) -> None:
    obj = {"id": "4-x", "status": "succeeded", "progress": 100, **missing}
    result = normalise_task(obj)
    assert result.status == "failed"
    assert result.failure_type == "model_error"
    assert result.error is not None
    assert "no video URL" in result.error


@pytest.mark.parametrize(
    ("reason", "failure_type"),
    [
        ("output_moderation", "moderation"),
        ("input_moderation", "moderation"),
        ("error", "model_error"),
        ("", "unknown"),
        ("something_new", "unknown"),
        (None, "unknown"),
    ],
)
def test_failure_reason_classification(reason: str | None, failure_type: str) -> None:
    obj = {"id": "4-x", "status": "failed", "progress": 40, "failure_reason": reason}
    result = normalise_task(obj)
    assert result.status == "failed"
    assert result.failure_type == failure_type
    assert result.failure_reason == reason
    assert result.progress == 40


def test_classification_ignores_the_words_of_the_error_text() -> None:
    obj = {
        "id": "4-x",
        "status": "failed",
        "failure_reason": "error",
        "error": "content moderation rejected this",
    }
    result = normalise_task(obj)
    assert result.failure_type == "model_error"
    assert result.error == "content moderation rejected this"


def test_violation_status_is_a_moderation_failure() -> None:
    result = normalise_task({"id": "4-x", "status": "violation", "failure_reason": ""})
    assert result.status == "failed"
    assert result.failure_type == "moderation"


@pytest.mark.parametrize("status", ["running", "RUNNING", "queued", "pending", "", None])
def test_other_statuses_are_running(status: str | None) -> None:
    result = normalise_task({"id": "4-x", "status": status, "progress": 30})
    assert result.status == "running"
    assert result.failure_type is None
    assert result.progress == 30


@pytest.mark.parametrize(
    ("progress", "expected"),
    [
        (50, 50),
        ("50", 50),
        ("50%", 50),
        (49.9, 49),
        ("12.5", 12),
        (-5, 0),
        (150, 100),
        ("lots", 0),
        (None, 0),
        (True, 0),
        (float("nan"), 0),
        (float("inf"), 100),
        ("-inf", 0),
        ([], 0),
    ],
)
def test_progress_is_tolerated_and_clamped(progress: Any, expected: int) -> None:
    assert normalise_task({"id": "4-x", "status": "running", "progress": progress}).progress == (
        expected
    )


def test_missing_progress_is_zero_and_success_is_100() -> None:
    assert normalise_task({"id": "4-x", "status": "running"}).progress == 0
    assert normalise_task({**VEO_DONE, "progress": "90"}).progress == 100


@given(st.one_of(st.integers(), st.floats(), st.text(), st.none()))
def test_progress_never_leaves_0_to_100(progress: Any) -> None:
    result = normalise_task({"id": "4-x", "status": "running", "progress": progress})
    assert 0 <= result.progress <= 100


def test_remote_id_fallback_when_object_has_no_id() -> None:
    assert normalise_task({"status": "running"}, remote_id="4-poll").remote_id == "4-poll"
    assert normalise_task({"id": 17, "status": "running"}).remote_id == "17"


def test_failure_type_is_none_unless_failed() -> None:
    for obj in (SORA_DONE, VEO_DONE, {"id": "1", "status": "running"}):
        assert normalise_task(obj).failure_type is None


# --------------------------------------------------------------------------- callbacks


def body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def test_sora_final_callback() -> None:
    result = parse_callback_body(body(SORA_DONE))
    assert (result.remote_id, result.status, result.video_url) == (
        "4-abc",
        "succeeded",
        "https://v/sora.mp4",
    )
    assert result.is_final


def test_veo_final_callback() -> None:
    result = parse_callback_body(body(VEO_DONE))
    assert (result.remote_id, result.status, result.video_url) == (
        "4-def",
        "succeeded",
        "https://v/veo.mp4",
    )


def test_progress_callback() -> None:
    result = parse_callback_body(
        body({"id": "4-abc", "results": [], "progress": 37, "status": "running"})
    )
    assert result.status == "running"
    assert result.progress == 37
    assert not result.is_final
    assert result.video_url is None


def test_failed_callback_keeps_provider_fields() -> None:
    result = parse_callback_body(
        body(
            {
                "id": "4-abc",
                "status": "failed",
                "failure_reason": "output_moderation",
                "error": "may violate policies",
            }
        )
    )
    assert result.failure_type == "moderation"
    assert result.failure_reason == "output_moderation"
    assert result.error == "may violate policies"


def test_enveloped_callback_is_tolerated() -> None:
    result = parse_callback_body(body({"code": 0, "msg": "success", "data": VEO_DONE}))
    assert result.remote_id == "4-def"
    assert result.status == "succeeded"


def test_client_parse_callback_is_the_same_rule() -> None:
    client = GrsAIClient(
        None,  # type: ignore[arg-type]  # parsing a callback does no I/O
        base_url="https://grsaiapi.com",
        api_key="sk-x",
        catalog=CATALOG,
    )
    assert client.parse_callback(body(SORA_DONE)) == parse_callback_body(body(SORA_DONE))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00garbage",
        b"[1, 2]",
        b'"a string"',
        b"null",
        b"{}",
        b'{"id": "4-x"}',
        b'{"status": "succeeded", "url": "https://v"}',
        b'{"id": "", "status": "running"}',
        b'{"id": null, "status": "running"}',
        b'{"code": 0, "data": null}',
    ],
)
def test_malformed_callbacks_are_invalid(raw: bytes) -> None:
    with pytest.raises(CallbackInvalid):
        parse_callback_body(raw)


@given(st.binary(max_size=200))
def test_any_bytes_either_parse_or_raise_callback_invalid(raw: bytes) -> None:
    try:
        result = parse_callback_body(raw)
    except CallbackInvalid:
        return
    assert result.status in ("running", "succeeded", "failed")
