"""The dashboard's stylesheet, script and icon, cached for a day (their URLs carry a hash
of their content)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request
from fastapi.responses import Response

from vidbatch.web.render import static_files
from vidbatch.web.routing import page_router
from vidbatch.web.session import admin_token

router = page_router()


@router.get("/static/{name}")
async def static(request: Request, name: Annotated[str, Path(max_length=100)]) -> Response:
    admin_token(request)
    files = static_files()
    if name not in files:
        return Response("not found", status_code=404, media_type="text/plain")
    data, media, _ = files[name]
    return Response(
        data, media_type=media, headers={"Cache-Control": "public, max-age=86400, immutable"}
    )
