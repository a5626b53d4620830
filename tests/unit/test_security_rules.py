"""Pure rules behind the security fixes: sealing secrets, the URL check, the receiver
breaker and the log limiter."""

from __future__ import annotations

import pytest

from vidbatch.domain.breaker import CircuitBreaker
from vidbatch.domain.sealing import SEALED_PREFIX, CannotOpen, Keyring, is_sealed
from vidbatch.domain.urls import check_url, parse_target
from vidbatch.logs import LogLimiter

A = "a" * 32
B = "b" * 32


def test_sealing_round_trips_and_hides_the_secret() -> None:
    ring = Keyring.from_secrets(A)
    sealed = ring.seal("whsec_secret")
    assert sealed.startswith(SEALED_PREFIX) and "whsec_secret" not in sealed
    assert ring.seal("whsec_secret") != sealed  # a fresh nonce each time
    assert ring.open(sealed) == "whsec_secret"
    assert ring.open("plain") == "plain" and not is_sealed("plain")


def test_another_key_cannot_open_until_given_as_previous() -> None:
    sealed = Keyring.from_secrets(A).seal("s")
    with pytest.raises(CannotOpen, match="VIDBATCH_SECRET_KEY_PREVIOUS"):
        Keyring.from_secrets(B).open(sealed)
    rotating = Keyring.from_secrets(B, A)
    assert rotating.open(sealed) == "s"
    assert not rotating.opens_with_current(sealed)
    assert rotating.opens_with_current(rotating.seal("s"))


def test_a_tampered_value_does_not_open() -> None:
    ring = Keyring.from_secrets(A)
    sealed = ring.seal("secret")
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(CannotOpen):
        ring.open(tampered)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://2130706433/", "127.0.0.1"),
        ("https://0x7f.1/", "127.0.0.1"),
        ("https://127.1/", "127.0.0.1"),
        ("https://0177.0.0.1/", "127.0.0.1"),
        ("https://127\uff0e0\uff0e0\uff0e1/", "127.0.0.1"),
        ("https://[::1]:8443/", "::1"),
        ("https://Hooks.Example.COM./x", "hooks.example.com"),
    ],
)
def test_hosts_are_read_in_their_canonical_form(url: str, host: str) -> None:
    target = parse_target(url)
    assert not isinstance(target, str) and target.host == host


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:1\\@evil.example/",
        "https://user@hooks.example.com/",
        "https://1.2.3.256/",
        "https://hooks.example.com:99999/",
        "https://hooks .example.com/",
        "javascript:alert(1)",
        "https:///nohost",
    ],
)
def test_malformed_urls_are_refused(url: str) -> None:
    assert isinstance(parse_target(url), str)
    assert check_url(url, allow_private=True) is not None


def test_public_urls_pass_and_private_ones_only_with_the_override() -> None:
    assert check_url("http://images.example.com/a.png", allow_private=False) is None
    assert check_url("http://images.example.com/a.png", allow_private=False, https_only=True)
    assert check_url("http://10.1/x", allow_private=False) is not None
    assert check_url("http://10.1/x", allow_private=True) is None


def test_the_breaker_pauses_after_three_timeouts_and_doubles() -> None:
    breaker = CircuitBreaker()
    for _ in range(2):
        breaker.timed_out("r:443", now=0.0)
    assert breaker.paused_for("r:443", 0.0) is None
    for _ in range(3):  # sent together, timed out together: one pause
        breaker.timed_out("r:443", now=0.0)
    assert breaker.paused_for("r:443", 0.0) == 60.0
    assert breaker.paused_for("other:443", 0.0) is None
    assert breaker.paused_for("r:443", 60.0) is None
    breaker.timed_out("r:443", now=60.0)
    assert breaker.paused_for("r:443", 60.0) == 120.0
    breaker.answered("r:443")
    assert breaker.paused_for("r:443", 61.0) is None and breaker.timeouts("r:443") == 0


def test_the_log_limiter_holds_repeats_within_its_window() -> None:
    now = [0.0]
    limiter = LogLimiter(window=60.0, clock=lambda: now[0])
    assert limiter.allow("x") == 0
    assert [limiter.allow("x") for _ in range(5)] == [None] * 5
    assert limiter.allow("y") == 0
    now[0] = 60.0
    assert limiter.allow("x") == 5
