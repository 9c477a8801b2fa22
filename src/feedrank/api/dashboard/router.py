"""The dashboard's routes: thin, like the API's. Each page builder returns the body's parts;
errors become a page with the error formula and the right status (404 for an unknown user or
model), never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.resources import files

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from feedrank.api.dashboard import experiments, insights, models, overview, users
from feedrank.api.dashboard.access import admin_only, login, login_page, logout, safe_next
from feedrank.api.dashboard.data import Dashboard
from feedrank.api.dashboard.layout import BASE, error_page, page
from feedrank.api.runtime import Runtime, runtime
from feedrank.exceptions import FeedrankError, NotFoundError, ParameterError, ValidationError
from feedrank.models.base import Unsupported

log = logging.getLogger("feedrank.api")
router = APIRouter(prefix=BASE, include_in_schema=False)
guarded = APIRouter(prefix=BASE, include_in_schema=False, dependencies=[Depends(admin_only)])
STATIC = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}


def _dash(request: Request) -> Dashboard:
    dash: Dashboard = request.app.state.dashboard
    return dash


def _render(
    title: str, here: str, build: Callable[[], list[str] | tuple[list[str], int]]
) -> HTMLResponse:
    """The page, or one that says what went wrong: 404 for what does not exist, 422 for a bad
    parameter, 500 (logged, never shown) for a fault of ours."""
    try:
        out = build()
    except (NotFoundError, Unsupported) as exc:
        return error_page(404, "Not found", str(exc))
    except (ParameterError, ValidationError) as exc:
        return error_page(422, "Bad request", str(exc))
    except FeedrankError as exc:
        return error_page(400, "Bad request", str(exc))
    except Exception:
        log.exception("dashboard page %s failed", here)
        return error_page(500, "Internal error", "this page failed; the server log says why")
    parts, reload_ms = out if isinstance(out, tuple) else (out, 0)
    return page(title, here, parts, reload_ms=reload_ms or None)


@router.get("/static/{name}")
def static(name: str) -> Response:
    """The stylesheet and the one script, shipped inside the package (no CDN)."""
    if name not in STATIC:
        return Response("not found", status_code=404, media_type="text/plain")
    body = files("feedrank.api.dashboard").joinpath("static", name).read_bytes()
    return Response(body, media_type=STATIC[name], headers={"Cache-Control": "public, max-age=300"})


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return login_page(200, "Sign in with an admin API key.", safe_next(next))


router.add_api_route("/login", login, methods=["POST"])
router.add_api_route("/logout", logout, methods=["POST"])


@guarded.get("")
def overview_page(request: Request, rt: Runtime = Depends(runtime)) -> HTMLResponse:
    return _render("Overview", "overview", lambda: overview.build(rt, _dash(request)))


@guarded.get("/models")
def models_page(request: Request, rt: Runtime = Depends(runtime)) -> HTMLResponse:
    return _render("Models", "models", lambda: models.build_list(rt, _dash(request)))


@guarded.get("/models/{name:path}")
def model_page(name: str, request: Request, rt: Runtime = Depends(runtime)) -> HTMLResponse:
    return _render(f"Model {name}", "models", lambda: models.build_one(rt, _dash(request), name))


@guarded.get("/experiments")
def experiments_page(request: Request, rt: Runtime = Depends(runtime)) -> HTMLResponse:
    return _render("Experiments", "experiments", lambda: experiments.build(rt, _dash(request)))


@guarded.get("/insights")
def insights_page(request: Request, rt: Runtime = Depends(runtime)) -> HTMLResponse:
    return _render("Insights", "insights", lambda: insights.build(rt, _dash(request)))


@guarded.get("/users")
def users_page(request: Request, q: str = "", rt: Runtime = Depends(runtime)) -> HTMLResponse:
    return _render("Users", "users", lambda: users.search(rt, _dash(request), q))


@guarded.get("/users/{user_id}")
def user_page(user_id: str, request: Request, rt: Runtime = Depends(runtime)) -> HTMLResponse:
    params = dict(request.query_params)
    return _render(
        f"User {user_id}", "users", lambda: users.inspect(rt, _dash(request), user_id, params)
    )


@guarded.get("/{rest:path}")
def unknown_page(rest: str) -> HTMLResponse:
    return error_page(
        404,
        "Not found",
        f"the dashboard's pages are {BASE}, /models, /experiments, "
        f"/insights and /users; got {BASE}/{rest}",
    )
