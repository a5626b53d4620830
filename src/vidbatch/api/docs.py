"""The API documentation at ``/docs``: Swagger UI served from this process (the assets ship
in the ``fastapi-offline`` package: Swagger UI 5, which reads OpenAPI 3.1), so it works
without internet access, under the same strict Content-Security-Policy as the dashboard (no
inline script, nothing from elsewhere)."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

ASSETS = "/docs/assets"
#: Swagger UI's JavaScript, stylesheet and icon, as the package ships them.
ASSET_DIR = str(files("fastapi_offline") / "static")

#: Swagger UI draws icons from data: URLs and sets style attributes; scripts are ours only.
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": DOCS_CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} — API documentation</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css">
<link rel="icon" type="image/png" href="{assets}/favicon.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""

INIT = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout"
});
"""


def install(app: FastAPI) -> None:
    """Serve ``/docs`` (the page, its start-up script and Swagger UI's assets)."""
    router = APIRouter(include_in_schema=False)
    title = app.title

    @router.get("/docs")
    async def docs() -> HTMLResponse:
        return HTMLResponse(PAGE.format(title=title, assets=ASSETS), headers=SECURITY_HEADERS)

    @router.get("/docs/init.js")
    async def init() -> Response:
        return Response(
            INIT, media_type="application/javascript", headers={"X-Content-Type-Options": "nosniff"}
        )

    app.include_router(router)
    app.mount(ASSETS, StaticFiles(directory=ASSET_DIR), name="docs-assets")
