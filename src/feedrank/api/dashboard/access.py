"""Who may see the dashboard: holders of an admin key (feedrank.api.auth), sent one of three ways.

- the X-API-Key header (scripts, a browser extension that sets headers);
- the login form (POST /dashboard/login), which checks the key once and sets a cookie holding a
  random session token, HttpOnly and SameSite=Strict, scoped to /dashboard: the key itself never
  sits in the browser after sign-in;
- `?key=` on any dashboard URL, for local use: checked, exchanged for the same cookie, and the
  browser redirected at once to the URL without it, so the key leaves the address bar and the
  history. Access logs would still see that first URL: `redact_access_log` rewrites it.

Sessions live in memory (a server restart signs everyone out) and expire after SESSION_SECONDS."""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from urllib.parse import parse_qs, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from feedrank.api.auth import HEADER, KeyRing
from feedrank.api.dashboard.layout import BASE, page

COOKIE = "feedrank_dashboard"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 1000
_KEY_IN_URL = re.compile(r"([?&]key=)[^&\s\"]*", re.IGNORECASE)


class Sessions:
    """Session token -> expiry (monotonic clock); bounded, oldest out first."""

    def __init__(self, ttl: float = SESSION_SECONDS) -> None:
        self.ttl = ttl
        self._d: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def new(self) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._d[token] = time.monotonic() + self.ttl
            while len(self._d) > MAX_SESSIONS:
                self._d.popitem(last=False)
        return token

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            expiry = self._d.get(token)
            if expiry is None:
                return False
            if expiry < time.monotonic():
                del self._d[token]
                return False
            return True

    def drop(self, token: str | None) -> None:
        with self._lock:
            self._d.pop(token or "", None)


class NotSignedIn(Exception):
    """Raised by `admin_only`; the dashboard's handler answers with `response`."""

    def __init__(self, response: Response) -> None:
        self.response = response


def _is_admin(ring: KeyRing, key: str | None) -> bool | None:
    """True for an admin key, False for a key without the admin scope, None for no known key."""
    scopes = ring.scopes_of(key)
    if scopes is None:
        return None
    return "admin" in scopes


def open_access(ring: KeyRing) -> bool:
    return ring.insecure and not ring.keys


def login_page(status: int, message: str, next_url: str) -> HTMLResponse:
    from html import escape

    form = (
        "<div class='login'>"
        f"<p>{escape(message)}</p>"
        f"<form method='post' action='{BASE}/login'>"
        "<label for='key'>Admin API key</label>"
        "<input id='key' name='key' type='password' autocomplete='current-password' autofocus>"
        f"<input type='hidden' name='next' value='{escape(next_url)}'>"
        "<button class='go' type='submit'>Sign in</button></form>"
        "<p class='note'>The key is checked once; the browser then keeps a session cookie, "
        "never the key.</p></div>"
    )
    return page("Sign in", "", [form], status, signed_in=False)


def _with_cookie(response: Response, request: Request, token: str) -> Response:
    response.set_cookie(
        COOKIE,
        token,
        max_age=SESSION_SECONDS,
        path=BASE,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def safe_next(target: str | None) -> str:
    """Only a dashboard path: never another site (an open redirect)."""
    if target and target.startswith(BASE) and not target.startswith("//") and "\\" not in target:
        return target
    return BASE


def _here(request: Request, drop_key: bool = False) -> str:
    query = [(k, v) for k, v in request.query_params.multi_items() if not (drop_key and k == "key")]
    return request.url.path + ("?" + urlencode(query) if query else "")


async def admin_only(request: Request) -> None:
    """A route dependency: returns when the request carries an admin key (header, session
    cookie or ?key=), else raises NotSignedIn with the page to answer."""
    ring: KeyRing = request.app.state.keyring
    sessions: Sessions = request.app.state.dashboard.sessions
    if open_access(ring):
        return
    key = request.query_params.get("key")
    if key is not None:
        verdict = _is_admin(ring, key)
        if verdict:
            redirect = RedirectResponse(_here(request, drop_key=True), status_code=303)
            raise NotSignedIn(_with_cookie(redirect, request, sessions.new()))
        message = (
            "That key lacks the admin scope the dashboard needs."
            if verdict is False
            else "That key is not a valid API key."
        )
        raise NotSignedIn(login_page(401 if verdict is None else 403, message, BASE))
    header = request.headers.get(HEADER)
    if header is not None:
        verdict = _is_admin(ring, header)
        if verdict:
            return
        if verdict is False:
            raise NotSignedIn(
                login_page(403, "This key lacks the admin scope the dashboard needs.", BASE)
            )
    if sessions.valid(request.cookies.get(COOKIE)):
        return
    raise NotSignedIn(
        login_page(401, "The dashboard needs an admin API key.", safe_next(_here(request)))
    )


async def login(request: Request) -> Response:
    """POST /dashboard/login: the form's key, checked once, becomes a session cookie."""
    ring: KeyRing = request.app.state.keyring
    sessions: Sessions = request.app.state.dashboard.sessions
    body = (await request.body())[:8192].decode("utf-8", "replace")
    form = {k: v[0] for k, v in parse_qs(body).items()}
    target = safe_next(form.get("next"))
    if open_access(ring):
        return RedirectResponse(target, status_code=303)
    verdict = _is_admin(ring, form.get("key"))
    if not verdict:
        message = (
            "That key lacks the admin scope the dashboard needs."
            if verdict is False
            else "That key is not a valid API key."
        )
        return login_page(401, message, target)
    return _with_cookie(RedirectResponse(target, status_code=303), request, sessions.new())


async def logout(request: Request) -> Response:
    sessions: Sessions = request.app.state.dashboard.sessions
    sessions.drop(request.cookies.get(COOKIE))
    response = RedirectResponse(f"{BASE}/login", status_code=303)
    response.delete_cookie(COOKIE, path=BASE)
    return response


class RedactKey(logging.Filter):
    """Rewrites `key=...` in a logged request line (uvicorn's access log passes the path with
    its query string as an argument) so that no log carries a key sent as ?key=."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _KEY_IN_URL.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                for a in record.args
            )
        if isinstance(record.msg, str) and "key=" in record.msg.lower():
            record.msg = _KEY_IN_URL.sub(r"\1[redacted]", record.msg)
        return True


def redact_access_log() -> None:
    """Install the filter on uvicorn's access and error loggers (once)."""
    for name in ("uvicorn.access", "uvicorn.error", "uvicorn"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactKey) for f in logger.filters):
            logger.addFilter(RedactKey())
