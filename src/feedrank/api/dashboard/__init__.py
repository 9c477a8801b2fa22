"""The web dashboard under /dashboard: server-rendered pages with inline SVG charts, read-only,
behind an admin key (docs/dashboard.md). It sits at the api layer: it reads the service's state,
store and registry, and no lower layer imports it."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

from feedrank.api.dashboard.access import NotSignedIn, redact_access_log
from feedrank.api.dashboard.data import Dashboard


def mount(app: FastAPI) -> None:
    from feedrank.api.dashboard.router import guarded, router

    app.state.dashboard = Dashboard()
    app.include_router(router)  # the stylesheet, the script, sign in and out: no key needed
    app.include_router(guarded)  # every page: an admin key

    async def not_signed_in(request: Request, exc: Exception) -> Response:
        return exc.response if isinstance(exc, NotSignedIn) else Response(status_code=401)

    app.add_exception_handler(NotSignedIn, not_signed_in)
    redact_access_log()
