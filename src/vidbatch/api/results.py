"""Archived result files of a local store, served under signed, expiring links.

``GET /results/<key>?expires=<unix time>&signature=<HMAC>``: the link is the credential
(no API key), signed by vidbatch when it showed the item and valid for
``VIDBATCH_RESULT_URL_TTL_SECONDS``. A tampered or expired link answers 403
``RESULT_LINK_INVALID``; a file deleted since (retention, purge) 404. ``Range`` requests are
answered 206 and ``HEAD`` is answered (video players use both).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from vidbatch.api.app import runtime_of
from vidbatch.exceptions import NotFound, ResultLinkInvalid
from vidbatch.storage import LINK_PATH, content_type, verify_link

router = APIRouter(tags=["results"])


@router.api_route(LINK_PATH + "{key:path}", methods=["GET", "HEAD"], include_in_schema=False)
async def result_file(
    request: Request,
    key: str,
    expires: Annotated[str, Query(max_length=20)] = "",
    signature: Annotated[str, Query(max_length=128)] = "",
) -> FileResponse:
    rt = runtime_of(request)
    store = rt.result_store
    links = rt.links
    if store is None or links is None or store.kind != "local":
        raise NotFound("no result files are served here")
    if not verify_link(links.secret, key, expires, signature, now=links.now()):
        raise ResultLinkInvalid()
    try:
        path = store.local_path(key)
    except ValueError:
        raise ResultLinkInvalid() from None
    if not path.is_file():
        raise NotFound("this result file is no longer stored")
    return FileResponse(
        path,
        media_type=content_type(key),
        headers={"Cache-Control": f"private, max-age={min(3600, links.ttl_seconds)}"},
    )
