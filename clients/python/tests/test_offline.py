"""What needs no server: the package stands alone, reading input files, splitting them into
batches with stable request ids, retry delays, and webhook signatures made by hand."""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import os
from pathlib import Path

import httpx
import pytest

from vidbatch_client import Client, DownloadError, RetryPolicy
from vidbatch_client.cli import UsageError, main, plan, read_items
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


# --- download against a stand-in server giving the archive's fields ----------------------
# vidbatch's result archive adds ``video_sha256``, ``video_size_bytes`` and ``thumbnail_url``
# to items; these tests give them from a stand-in (httpx.MockTransport) until the real
# server's tests can check them too.

VIDEO = b"\x00\x00\x00\x18ftypmp42" + b"v" * 1000
THUMB = b"\xff\xd8\xff" + b"t" * 100


def archive_server(sha256: str, served: list[str]) -> httpx.MockTransport:
    item = {
        "item_id": "it-1",
        "index": 0,
        "status": "succeeded",
        "prompt": "p",
        "model": "sora-2",
        "video_url": "https://files.example.com/v/it-1.mp4",
        "thumbnail_url": "https://files.example.com/v/it-1.jpg",
        "error": None,
        "failure_type": None,
        "metadata": None,
        "created_at": "2026-12-02T10:00:00Z",
        "completed_at": "2026-12-02T10:01:00Z",
        "archive_status": "stored",
        "video_sha256": sha256,
        "video_size_bytes": len(VIDEO),
    }

    def handle(request: httpx.Request) -> httpx.Response:
        served.append(f"{request.url.host}{request.url.path}")
        if request.url.host == "files.example.com":
            assert "x-api-key" not in request.headers  # the key stays with vidbatch
            body = VIDEO if request.url.path.endswith(".mp4") else THUMB
            return httpx.Response(200, content=body)
        assert request.headers["x-api-key"] == "vb_test"
        page = {"ok": True, "items": [item], "total": 1, "limit": 500, "offset": 0}
        return httpx.Response(200, json=page)

    return httpx.MockTransport(handle)


def test_download_checks_the_archive_sha256_and_fetches_thumbnails(tmp_path: Path) -> None:
    served: list[str] = []
    right = hashlib.sha256(VIDEO).hexdigest()
    fast = RetryPolicy(max_retries=1, backoff=0.001)
    with Client(
        "vb_test", "https://vb.example.com", transport=archive_server(right, served), retry=fast
    ) as vb:
        report = vb.download("b-1", tmp_path)
        (done,) = report.items
        assert (done.sha256, done.path.read_bytes()) == (right, VIDEO)
        assert done.thumbnail_path is not None and done.thumbnail_path.read_bytes() == THUMB
        served.clear()
        again = vb.download("b-1", tmp_path)
        assert (again.downloaded, again.skipped) == (0, 1)
        assert served == ["vb.example.com/api/v1/batches/b-1/items"]  # no file fetched
        # a file that no longer matches the server's SHA-256 is fetched again
        done.path.write_bytes(VIDEO[:-1] + b"x")
        assert vb.download("b-1", tmp_path).downloaded == 1
        assert done.path.read_bytes() == VIDEO


def test_download_refuses_bytes_that_do_not_match(tmp_path: Path) -> None:
    served: list[str] = []
    wrong = hashlib.sha256(b"something else").hexdigest()
    fast = RetryPolicy(max_retries=1, backoff=0.001)
    with (
        Client(
            "vb_test", "https://vb.example.com", transport=archive_server(wrong, served), retry=fast
        ) as vb,
        pytest.raises(DownloadError, match="SHA-256"),
    ):
        vb.download("b-1", tmp_path, thumbnails=False)
    assert served.count("files.example.com/v/it-1.mp4") == 2  # tried again, then refused
    assert not list(tmp_path.iterdir())  # nothing half-written left in place


def test_the_command_without_a_key_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("VIDBATCH_API_KEY", raising=False)
    assert main(["balance"]) == 1
    assert capsys.readouterr().err == (
        "error: no API key: set VIDBATCH_API_KEY (or pass api_key= / --api-key)\n"
    )
