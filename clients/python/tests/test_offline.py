"""What needs no server: the package stands alone, reading input files, splitting them into
batches with stable request ids, retry delays, and webhook signatures made by hand."""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import os
from pathlib import Path

import pytest

from vidbatch_client import RetryPolicy
from vidbatch_client.cli import UsageError, plan, read_items
from vidbatch_client.webhooks import WebhookVerificationError, verify


@pytest.mark.skipif(
    os.environ.get("VIDBATCH_CLIENT_CLEAN_VENV") != "1", reason="only in the client's own venv"
)
def test_installed_without_the_server_package() -> None:
    assert importlib.util.find_spec("vidbatch") is None
    assert importlib.util.find_spec("sqlalchemy") is None


def test_jsonl_and_csv_files(tmp_path: Path) -> None:
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"prompt": "one", "duration": 10}\n\n"two"\n')
    assert read_items(jsonl) == [{"prompt": "one", "duration": 10}, {"prompt": "two"}]
    table = tmp_path / "a.csv"
    table.write_text('prompt,model,duration,metadata,sku\nthree,veo-pro,,"{""a"": 1}",S1\n')
    assert read_items(table) == [
        {"prompt": "three", "model": "veo-pro", "metadata": {"a": 1, "sku": "S1"}}
    ]
    table.write_text("text\nnope\n")
    with pytest.raises(UsageError, match="prompt"):
        read_items(table)


def test_the_split_and_its_request_ids_are_stable() -> None:
    items = [{"prompt": f"p{i}"} for i in range(2500)]
    chunks = plan(items, 1000, None)
    assert [(c.start, c.end) for c in chunks] == [(0, 1000), (1000, 2000), (2000, 2500)]
    assert plan(list(items), 1000, None) == chunks  # the same file: the same ids
    assert len({c.request_id for c in chunks}) == 3
    assert all(len(c.request_id) <= 128 and c.request_id.isascii() for c in chunks)
    other = plan([*items[:-1], {"prompt": "changed"}], 1000, None)
    assert other[0].request_id != chunks[0].request_id  # other items: other ids
    assert plan(items, 500, "mine")[1].request_id == "mine-500-1000"


def test_retry_delays_grow_and_honour_retry_after() -> None:
    policy = RetryPolicy(backoff=1, max_backoff=8)
    assert 1 <= policy.delay(0) <= 1.25 and 8 <= policy.delay(10) <= 10
    assert policy.delay(0, retry_after=30) == 30


def test_hand_made_signatures() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    body, stamp = b'{"event":"batch.created"}', 1_800_000_000
    mac = hmac.new(b"k" * 32, f"msg_1.{stamp}.".encode() + body, hashlib.sha256).digest()
    standard = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(stamp),
        "webhook-signature": "v1,bm9wZQ== v1," + base64.b64encode(mac).decode(),
    }
    assert verify(body, standard, secret, now=stamp)["event"] == "batch.created"
    hexmac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    published = {
        "X-Sora2-Signature": f"sha256={hexmac}",
        "X-Sora2-Timestamp": "2027-01-15T08:00:00Z",
    }
    assert verify(body.decode(), published, secret, now=stamp)
    with pytest.raises(WebhookVerificationError, match="no signature header"):
        verify(body, {}, secret)
