"""/docs works offline: the page and every asset it loads come from this server, under a
strict Content-Security-Policy with no inline script."""

from __future__ import annotations

import re
from typing import Any


async def test_docs_load_only_local_assets_under_a_strict_csp(client: Any) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    csp = dict(
        part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";")
    )
    assert csp["script-src"] == "'self'" and csp["default-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    html = page.text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.DOTALL)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all(ref.startswith("/") and not ref.startswith("//") for ref in refs)
    for ref in refs:
        asset = await client.get(ref)
        assert asset.status_code == 200 and asset.content, ref
    init = (await client.get("/docs/init.js")).text
    assert '"/openapi.json"' in init and "SwaggerUIBundle" in init
    assert (await client.get("/openapi.json")).status_code == 200
    # ReDoc would come from a CDN: not offered
    assert (await client.get("/redoc")).status_code == 404
