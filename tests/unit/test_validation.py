"""Every rule of batch validation, as a customer meets it: what is refused, with which
item index and field, and what an accepted item becomes."""

from __future__ import annotations

from typing import Any

import pytest

from vidbatch.domain.catalog import default_catalog, parse_catalog_overrides
from vidbatch.domain.validation import (
    MAX_METADATA_BYTES,
    MAX_PROMPT,
    MAX_URL,
    BatchSpec,
    check_webhook_url,
    is_private_host,
    request_fingerprint,
    validate_batch,
)
from vidbatch.exceptions import InvalidInput, TooManyItems

CATALOG = default_catalog()


def validate(body: Any, *, max_items: int = 100, allow_private: bool = False) -> BatchSpec:
    return validate_batch(
        body, catalog=CATALOG, max_items=max_items, allow_private_webhooks=allow_private
    )


def one(item: dict[str, Any], **body: Any) -> BatchSpec:
    return validate({"items": [item], **body})


def problems(body: Any, **kwargs: Any) -> list[tuple[int | None, str]]:
    with pytest.raises(InvalidInput) as err:
        validate(body, **kwargs)
    return [(d.index, d.field) for d in err.value.details]


def item_problems(item: Any) -> list[tuple[int | None, str]]:
    return problems({"items": [item]})


# --- the body ----------------------------------------------------------------------------


@pytest.mark.parametrize("body", [None, [], "items", 3, [{"prompt": "x"}]])
def test_body_must_be_an_object(body: Any) -> None:
    assert problems(body) == [(None, "body")]


@pytest.mark.parametrize(
    "body", [{}, {"items": []}, {"items": None}, {"items": {"prompt": "x"}}, {"items": "x"}]
)
def test_items_must_be_a_non_empty_list(body: Any) -> None:
    assert problems(body) == [(None, "items")]


def test_too_many_items() -> None:
    with pytest.raises(TooManyItems) as err:
        validate({"items": [{"prompt": "x"}] * 4}, max_items=3)
    assert err.value.code == "TOO_MANY_ITEMS"
    assert [(d.index, d.field) for d in err.value.details] == [(None, "items")]
    assert err.value.extra == {"max_items": 3}
    assert len(validate({"items": [{"prompt": "x"}] * 3}, max_items=3).items) == 3


def test_unknown_fields_are_ignored() -> None:
    spec = one({"prompt": "x", "colour": "red"}, priority="high")
    assert spec.items[0].prompt == "x"


# --- prompt and model --------------------------------------------------------------------


@pytest.mark.parametrize("prompt", [None, "", "   ", 5, ["x"]])
def test_prompt_is_required_text(prompt: Any) -> None:
    item = {"prompt": prompt} if prompt is not None else {}
    assert item_problems(item) == [(0, "prompt")]


def test_prompt_length_limit() -> None:
    assert one({"prompt": "x" * MAX_PROMPT}).items[0].prompt == "x" * MAX_PROMPT
    assert item_problems({"prompt": "x" * (MAX_PROMPT + 1)}) == [(0, "prompt")]


def test_model_defaults_to_sora_and_must_be_known() -> None:
    assert one({"prompt": "x"}).items[0].model == "sora-2"
    assert item_problems({"prompt": "x", "model": "sora-3"}) == [(0, "model")]
    assert item_problems({"prompt": "x", "model": 2}) == [(0, "model")]


def test_prices_follow_the_catalog() -> None:
    spec = validate(
        {
            "items": [
                {"prompt": "a", "model": "sora-2"},
                {"prompt": "b", "model": "veo-flash"},
                {"prompt": "c", "model": "veo-pro"},
            ]
        }
    )
    assert [i.cost_credits for i in spec.items] == [10, 50, 250]
    assert (spec.total_credits, spec.cost_per_video) == (310, 250)
    assert one({"prompt": "a"}).cost_per_video == 10


def test_items_carry_their_models_provider() -> None:
    catalog = parse_catalog_overrides(
        {"clip-1": {"family": "veo", "provider_model": "c", "price_credits": 7, "provider": "cw"}}
    )
    spec = validate_batch(
        {"items": [{"prompt": "a", "model": "sora-2"}, {"prompt": "b", "model": "clip-1"}]},
        catalog=catalog,
        max_items=10,
        allow_private_webhooks=False,
    )
    assert [(i.model, i.provider, i.cost_credits) for i in spec.items] == [
        ("sora-2", "grsai", 10),
        ("clip-1", "cw", 7),
    ]


# --- aspect ratio and duration -----------------------------------------------------------


@pytest.mark.parametrize("ratio", ["9:16", "16:9", None])
def test_aspect_ratios_accepted(ratio: str | None) -> None:
    assert one({"prompt": "x", "aspect_ratio": ratio}).items[0].aspect_ratio == ratio


@pytest.mark.parametrize("ratio", ["1:1", "4:3", "", 916, "16/9"])
def test_other_aspect_ratios_refused(ratio: Any) -> None:
    assert item_problems({"prompt": "x", "aspect_ratio": ratio}) == [(0, "aspect_ratio")]


@pytest.mark.parametrize(
    ("given", "stored"), [(None, 10), (10, 10), (15, 15), (10.0, 10), (5, 10), (5.0, 10)]
)
def test_sora_durations(given: Any, stored: int) -> None:
    item: dict[str, Any] = {"prompt": "x", "model": "sora-2"}
    if given is not None:
        item["duration"] = given
    assert one(item).items[0].duration == stored


def test_the_published_five_seconds_is_made_and_priced_as_ten() -> None:
    five, ten = one({"prompt": "x", "duration": 5}), one({"prompt": "x", "duration": 10})
    assert (five.items[0].duration, five.items[0].cost_credits) == (10, ten.items[0].cost_credits)


def test_a_default_aspect_ratio_fills_only_the_items_without_one() -> None:
    spec = validate_batch(
        {"items": [{"prompt": "a"}, {"prompt": "b", "aspect_ratio": "9:16"}]},
        catalog=CATALOG,
        max_items=10,
        allow_private_webhooks=False,
        default_aspect_ratio="16:9",
    )
    assert [i.aspect_ratio for i in spec.items] == ["16:9", "9:16"]


@pytest.mark.parametrize("duration", [4, 12, 20, 10.5, "10", "5", True, 0, -10, {}, [5]])
def test_other_sora_durations_refused(duration: Any) -> None:
    assert item_problems({"prompt": "x", "duration": duration}) == [(0, "duration")]


@pytest.mark.parametrize("model", ["veo-flash", "veo-pro"])
@pytest.mark.parametrize("duration", [None, 8, 15, "long"])
def test_veo_duration_is_ignored(model: str, duration: Any) -> None:
    spec = one({"prompt": "x", "model": model, "duration": duration})
    assert spec.items[0].duration is None


# --- URLs --------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["https://example.com/a.jpg", "http://example.com/a.jpg"])
def test_reference_url_accepted(url: str) -> None:
    assert one({"prompt": "x", "reference_url": url}).items[0].reference_url == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.jpg",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "example.com/a.jpg",
        "https://",
        "",
        42,
        ["https://example.com"],
        "https://example.com/" + "a" * (MAX_URL - len("https://example.com/") + 1),
    ],
)
def test_reference_url_refused(url: Any) -> None:
    assert item_problems({"prompt": "x", "reference_url": url}) == [(0, "reference_url")]


def test_url_length_limit_is_inclusive() -> None:
    url = "https://example.com/" + "a" * (MAX_URL - len("https://example.com/"))
    assert len(url) == MAX_URL
    assert one({"prompt": "x", "reference_url": url}).items[0].reference_url == url


# --- meta --------------------------------------------------------------------------------


def test_meta_accepted() -> None:
    meta = {
        "firstFrameUrl": "https://e.com/1.jpg",
        "lastFrameUrl": "https://e.com/2.jpg",
        "urls": ["https://e.com/a.jpg", "https://e.com/b.jpg", "https://e.com/c.jpg"],
    }
    assert one({"prompt": "x", "model": "veo-flash", "meta": meta}).items[0].meta == meta
    assert one({"prompt": "x", "meta": {}}).items[0].meta is None


@pytest.mark.parametrize(
    ("meta", "fields"),
    [
        ("https://e.com/1.jpg", ["meta"]),
        ({"firstFrame": "https://e.com/1.jpg"}, ["meta.firstFrame"]),
        ({"firstFrameUrl": "ftp://e.com/1.jpg"}, ["meta.firstFrameUrl"]),
        ({"lastFrameUrl": "https://e.com/2.jpg"}, ["meta.lastFrameUrl"]),
        ({"urls": "https://e.com/a.jpg"}, ["meta.urls"]),
        ({"urls": ["https://e.com/a.jpg"] * 4}, ["meta.urls"]),
        ({"urls": ["https://e.com/a.jpg", "nope"]}, ["meta.urls[1]"]),
    ],
)
def test_meta_refused(meta: Any, fields: list[str]) -> None:
    assert item_problems({"prompt": "x", "model": "veo-pro", "meta": meta}) == [
        (0, f) for f in fields
    ]


# --- metadata ----------------------------------------------------------------------------


def test_item_metadata_up_to_4kb() -> None:
    # {"k":"..."} is 8 bytes of JSON around the value.
    fits = {"k": "x" * (MAX_METADATA_BYTES - 8)}
    assert one({"prompt": "x", "metadata": fits}).items[0].metadata == fits
    too_big = {"k": "x" * (MAX_METADATA_BYTES - 7)}
    assert item_problems({"prompt": "x", "metadata": too_big}) == [(0, "metadata")]
    assert item_problems({"prompt": "x", "metadata": ["a"]}) == [(0, "metadata")]


def test_batch_metadata_up_to_4kb() -> None:
    assert one({"prompt": "x"}, metadata={"campaign": "spring"}).metadata == {"campaign": "spring"}
    assert problems({"items": [{"prompt": "x"}], "metadata": "spring"}) == [(None, "metadata")]
    big = {"k": "x" * MAX_METADATA_BYTES}
    assert problems({"items": [{"prompt": "x"}], "metadata": big}) == [(None, "metadata")]


# --- webhook URL -------------------------------------------------------------------------


def test_public_https_webhook_accepted() -> None:
    spec = one({"prompt": "x"}, webhook_url="https://hooks.example.com/vidbatch")
    assert spec.webhook_url == "https://hooks.example.com/vidbatch"


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/h",  # not https
        "https://127.0.0.1/h",  # loopback
        "https://localhost:8443/h",
        "https://api.localhost/h",
        "https://10.1.2.3/h",  # private
        "https://192.168.0.10/h",
        "https://172.16.5.4/h",
        "https://169.254.169.254/latest",  # link-local (cloud metadata)
        "https://[::1]/h",
        "https://[fe80::1]/h",
        "https://0.0.0.0/h",
        "ftp://hooks.example.com/h",
        "not a url",
    ],
)
def test_webhook_url_refused(url: str) -> None:
    assert problems({"items": [{"prompt": "x"}], "webhook_url": url}) == [(None, "webhook_url")]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9000/h", "https://10.0.0.5/h", "http://localhost/h"]
)
def test_private_webhooks_allowed_when_configured(url: str) -> None:
    spec = validate({"items": [{"prompt": "x"}], "webhook_url": url}, allow_private=True)
    assert spec.webhook_url == url
    assert check_webhook_url("ftp://127.0.0.1/h", allow_private=True) is not None


@pytest.mark.parametrize(
    ("host", "private"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("x.localhost", True),
        ("127.0.0.2", True),
        ("10.0.0.1", True),
        ("[::1]", True),
        ("169.254.1.1", True),
        ("100.64.0.1", True),
        ("8.8.8.8", False),
        ("2001:4860:4860::8888", False),
        ("example.com", False),
    ],
)
def test_is_private_host(host: str, private: bool) -> None:
    assert is_private_host(host) is private


# --- every problem at once ---------------------------------------------------------------


def test_several_problems_are_reported_together_with_index_and_field() -> None:
    body = {
        "webhook_url": "http://127.0.0.1/h",
        "items": [
            {"prompt": "fine"},
            {"prompt": "", "model": "sora-3"},
            "not an item",
            {
                "prompt": "x",
                "duration": 12,
                "aspect_ratio": "4:3",
                "reference_url": "ftp://e.com/x",
            },
        ],
    }
    with pytest.raises(InvalidInput) as err:
        validate(body)
    assert [(d.index, d.field) for d in err.value.details] == [
        (None, "webhook_url"),
        (1, "prompt"),
        (1, "model"),
        (2, "item"),
        (3, "aspect_ratio"),
        (3, "duration"),
        (3, "reference_url"),
    ]
    assert err.value.code == "INVALID_PAYLOAD"
    assert "and 6 more" in err.value.message
    assert all(d.message for d in err.value.details)


def test_details_are_capped_at_100() -> None:
    with pytest.raises(InvalidInput) as err:
        validate({"items": [{"prompt": ""}] * 150}, max_items=1000)
    assert len(err.value.details) == 100
    assert err.value.details[-1].index == 99


# --- fingerprints ------------------------------------------------------------------------


def test_fingerprint_ignores_request_id_and_key_order() -> None:
    a = {"items": [{"prompt": "x", "model": "sora-2"}], "request_id": "r1"}
    b = {"request_id": "r2", "items": [{"model": "sora-2", "prompt": "x"}]}
    assert request_fingerprint(a) == request_fingerprint(b)
    assert request_fingerprint(a) != request_fingerprint({"items": [{"prompt": "y"}]})


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a9fe:a9fe",
        "2002:a9fe:a9fe::1",
        "::127.0.0.1",
        "::ffff:10.0.0.1",
        "::1",
        "fe80::1",
        "169.254.169.254",
    ],
)
def test_ipv4_hidden_in_ipv6_is_not_public(address: str) -> None:
    from vidbatch.domain.validation import is_private_host, non_public_address

    assert non_public_address(address)
    assert is_private_host(f"[{address}]")


@pytest.mark.parametrize("address", ["2606:4700::1111", "8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses_pass(address: str) -> None:
    from vidbatch.domain.validation import non_public_address

    assert not non_public_address(address)
