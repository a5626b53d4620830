"""The result store: the one module that talks to where archived videos and thumbnails
live (a local directory, or S3 and anything S3-compatible), through obstore. The worker,
the API and the CLI all go through it.

Every call is obstore's blocking one, run in a thread: its ``*_async`` calls finish on
obstore's own (Rust) threads, which may still be letting go of Python objects when the
process exits, and a thread that touches Python while the interpreter shuts down aborts
the process (``vidbatch doctor`` exited with SIGABRT now and then after a passing check).

- :func:`open_store` builds it from the settings (None when ``VIDBATCH_RESULT_STORE=none``);
- :func:`put_file`, :func:`delete`, :func:`delete_prefix` write and remove objects (a put is
  atomic: the object appears whole or not at all — a staging file renamed into place on a
  local store, a single or multipart upload completed at once on S3);
- :func:`check_writable` proves the store takes a write (``/readyz`` and ``vidbatch
  doctor`` call it);
- :class:`Links` turns an object key into the URL a customer gets: a signed, expiring link
  served by vidbatch itself for a local store (:func:`verify_link` checks one), a presigned
  GET for S3, or a plain URL under ``VIDBATCH_RESULT_PUBLIC_BASE_URL``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import obstore
from obstore.store import AzureStore, GCSStore, LocalStore, S3Store

from vidbatch.domain.archive import StoreSpec, parse_store_spec
from vidbatch.exceptions import ConfigError
from vidbatch.settings import Settings

log = logging.getLogger(__name__)

#: Where vidbatch serves a local store's files (``/results/<key>?expires=…&signature=…``).
LINK_PATH = "/results/"

CONTENT_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".jpg": "image/jpeg"}


def content_type(key: str) -> str:
    return CONTENT_TYPES.get(Path(key).suffix, "application/octet-stream")


class StoreError(Exception):
    """The store refused or could not be reached (a transient failure for the archive)."""


@dataclass
class ResultStore:
    """An opened store: its spec and the obstore store behind it, built on first use (a
    local directory is created then: opening a store touches nothing)."""

    spec: StoreSpec
    factory: Callable[[], Any]
    #: Timeout of one request to the store, in seconds.
    timeout: float = 60.0
    _store: Any = None

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def store(self) -> Any:
        if self._store is None:
            try:
                self._store = self.factory()
            except Exception as exc:
                raise StoreError(f"store unavailable: {_why(exc)}") from None
        return self._store

    def local_path(self, key: str) -> Path:
        """The file of ``key`` in a local store (never outside its root)."""
        assert self.spec.root is not None
        root = self.spec.root.resolve()
        path = (root / key).resolve()
        if root not in path.parents:
            raise ValueError("key outside the store")
        return path

    def describe(self) -> str:
        if self.spec.kind == "local":
            return f"local directory {self.spec.root}"
        return f"{self.spec.kind} {self.spec.bucket}/{self.spec.prefix}".rstrip("/")


def _s3(spec: StoreSpec, settings: Settings, timeout: float) -> S3Store:
    config: dict[str, Any] = {}
    if settings.aws_endpoint_url:
        config["endpoint"] = settings.aws_endpoint_url
        # Path-style requests: what MinIO and most S3-compatible servers expect.
        config["virtual_hosted_style_request"] = False
    if settings.aws_access_key_id:
        config["access_key_id"] = settings.aws_access_key_id
    if settings.aws_secret_access_key:
        config["secret_access_key"] = settings.aws_secret_access_key
    if settings.aws_region:
        config["region"] = settings.aws_region
    client: dict[str, Any] = {
        "timeout": timedelta(seconds=timeout),
        "connect_timeout": timedelta(seconds=min(10.0, timeout)),
    }
    if (settings.aws_endpoint_url or "").startswith("http://"):
        client["allow_http"] = True
    retry = {
        "max_retries": 2,
        "retry_timeout": timedelta(seconds=timeout),
        "backoff": {
            "init_backoff": timedelta(milliseconds=100),
            "max_backoff": timedelta(seconds=2),
            "base": 2,
        },
    }
    return S3Store(
        spec.bucket,
        prefix=spec.prefix or None,
        config=config,  # type: ignore[arg-type]
        client_options=client,  # type: ignore[arg-type]
        retry_config=retry,  # type: ignore[arg-type]
    )


def _other_cloud(spec: StoreSpec, timeout: float) -> Any:
    """Google Cloud Storage or Azure, configured by the library's own environment variables
    (``GOOGLE_SERVICE_ACCOUNT``…, ``AZURE_STORAGE_ACCOUNT_NAME``…)."""
    scheme = "gs" if spec.kind == "gcs" else "az"
    url = f"{scheme}://{spec.bucket}/{spec.prefix}".rstrip("/")
    client = {"timeout": timedelta(seconds=timeout)}
    if spec.kind == "gcs":
        return GCSStore.from_url(url, client_options=client)  # type: ignore[arg-type]
    return AzureStore.from_url(url, client_options=client)  # type: ignore[arg-type]


def open_store(settings: Settings) -> ResultStore | None:
    """The store the settings name, or None (``none``). A local directory is created."""
    try:
        spec = parse_store_spec(settings.result_store, database_url=settings.database_url)
    except ValueError as exc:
        raise ConfigError(f"VIDBATCH_RESULT_STORE: {exc}") from None
    timeout = float(settings.archive_timeout_seconds)
    if spec.kind == "none":
        return None
    if spec.kind == "local":
        root = spec.root
        assert root is not None

        def local() -> LocalStore:
            root.mkdir(parents=True, exist_ok=True)
            return LocalStore(root, automatic_cleanup=True)

        return ResultStore(spec, local, timeout)
    if spec.kind == "s3":
        return ResultStore(spec, lambda: _s3(spec, settings, timeout), timeout)
    return ResultStore(spec, lambda: _other_cloud(spec, timeout), timeout)


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return f"{type(exc).__name__}: {first}"[:300]


async def put_file(rs: ResultStore, key: str, source: Path | bytes) -> None:
    """Store ``source`` (a file or bytes) under ``key``, replacing what is there: atomic."""
    attributes: Any = None
    if rs.kind != "local":  # a local file has no attributes; vidbatch serves its type
        attributes = {"Content-Type": content_type(key)}
    try:
        await asyncio.to_thread(obstore.put, rs.store, key, source, attributes=attributes)
    except Exception as exc:
        raise StoreError(f"store write failed: {_why(exc)}") from None


async def get_bytes(rs: ResultStore, key: str) -> bytes:
    """The whole object (small objects and tests)."""
    try:
        return await asyncio.to_thread(lambda: bytes(obstore.get(rs.store, key).bytes()))
    except Exception as exc:
        raise StoreError(f"store read failed: {_why(exc)}") from None


async def delete(rs: ResultStore, keys: list[str]) -> None:
    """Delete ``keys``; a missing one is not an error."""
    if not keys:
        return
    try:
        for key in keys:
            try:
                await asyncio.to_thread(obstore.delete, rs.store, key)
            except FileNotFoundError:
                continue
    except Exception as exc:
        raise StoreError(f"store delete failed: {_why(exc)}") from None


async def list_keys(rs: ResultStore, prefix: str) -> list[str]:
    try:
        return await asyncio.to_thread(
            lambda: [
                str(m["path"]) for chunk in obstore.list(rs.store, prefix=prefix) for m in chunk
            ]
        )
    except FileNotFoundError:
        return []
    except Exception as exc:
        raise StoreError(f"store list failed: {_why(exc)}") from None


async def delete_prefix(rs: ResultStore, prefix: str) -> int:
    """Delete every object under ``prefix``; returns how many there were."""
    keys = await list_keys(rs, prefix)
    await delete(rs, keys)
    return len(keys)


async def check_writable(rs: ResultStore) -> None:
    """Write, read back and delete a small probe object; StoreError when any step fails."""
    key = f"_probe/{uuid.uuid4().hex}.txt"
    body = b"vidbatch store probe\n"
    await put_file(rs, key, body)
    try:
        if await get_bytes(rs, key) != body:
            raise StoreError("store probe read back different bytes")
    finally:
        await delete(rs, [key])


# --- links -----------------------------------------------------------------------------


def link_signature(secret: bytes, key: str, expires: int) -> str:
    """HMAC-SHA256 of a local link's key and expiry, hex."""
    return hmac.new(secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()


def verify_link(secret: bytes, key: str, expires: str, signature: str, *, now: float) -> bool:
    """True when a local link is genuine and has not expired."""
    if not expires.isdigit() or len(expires) > 12 or int(expires) < now:
        return False
    expected = link_signature(secret, key, int(expires))
    return hmac.compare_digest(expected, signature)


@dataclass
class Links:
    """Customer URLs of stored objects, signed afresh at each call (each read of a batch,
    its items or its results)."""

    store: ResultStore | None
    secret: bytes
    ttl_seconds: int
    public_base_url: str | None = None
    #: The base URL of vidbatch itself (``APP_URL`` and friends) for local links.
    app_base_url: str | None = None
    #: Unix time now; the runtime points it at its clock.
    now: Callable[[], float] = field(default=time.time)

    def url(self, key: str | None, *, base_url: str | None = None) -> str | None:
        """The URL of ``key``; ``base_url`` is the request's own base when there is one."""
        if not key or self.store is None:
            return None
        if self.public_base_url:
            prefix = self.store.spec.prefix
            full = f"{prefix}/{key}" if prefix else key
            return f"{self.public_base_url}/{quote(full)}"
        if self.store.kind != "local":  # S3, GCS, Azure: the store presigns
            try:
                return str(
                    obstore.sign(self.store.store, "GET", key, timedelta(seconds=self.ttl_seconds))
                )
            except Exception as exc:  # credentials that can write but not presign
                # A link that cannot be made must not fail the settlement or the read that
                # asked for it: the caller shows the provider's URL instead.
                log.warning("cannot presign a result URL: %s", _why(exc))
                return None
        expires = int(self.now()) + self.ttl_seconds
        signature = link_signature(self.secret, key, expires)
        base = (self.app_base_url or base_url or "").rstrip("/")
        return f"{base}{LINK_PATH}{quote(key)}?expires={expires}&signature={signature}"
