"""The dashboard's router: every page group under ``/admin``, built when the app is."""

from __future__ import annotations

from fastapi import APIRouter


def router() -> APIRouter:
    """The dashboard's routes under ``/admin`` (left out of the OpenAPI document)."""
    from vidbatch.web.pages import accounts, assets, auth, batches, overview

    dashboard = APIRouter(include_in_schema=False)
    for pages in (auth, assets, overview, batches, accounts):
        dashboard.include_router(pages.router)
    return dashboard
