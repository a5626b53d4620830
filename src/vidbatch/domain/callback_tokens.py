"""Per-task callback tokens: an HMAC of the task id under the server's callback key, so
nothing extra is stored and a forged or guessed callback URL is refused."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlencode


def callback_token(key: bytes, task_id: str) -> str:
    return hmac.new(key, task_id.encode(), hashlib.sha256).hexdigest()[:40]


def token_ok(key: bytes, task_id: str, token: str | None) -> bool:
    """Constant-time check of a callback token."""
    if not token or not task_id:
        return False
    return hmac.compare_digest(callback_token(key, task_id).encode(), token.encode())


def callback_url(base_url: str, task_id: str, key: bytes) -> str:
    query = urlencode({"task_id": task_id, "token": callback_token(key, task_id)})
    return f"{base_url.rstrip('/')}/api/video/callback?{query}"
