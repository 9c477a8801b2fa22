"""The page shell (title, navigation, the packaged stylesheet and script) and the small HTML
pieces every page uses: tables, cards, "nothing here yet" lines. Every value is escaped here,
so page builders pass plain values, never markup, except where they say `raw`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any

import polars as pl
from fastapi.responses import HTMLResponse

BASE = "/dashboard"
NAV = (
    ("overview", "Overview", ""),
    ("models", "Models", "/models"),
    ("experiments", "Experiments", "/experiments"),
    ("insights", "Insights", "/insights"),
    ("users", "Users", "/users"),
)
NO_STORE = {"Cache-Control": "no-store", "X-Frame-Options": "DENY"}


def fmt(v: Any) -> str:
    """A cell's text: floats to 4 significant digits, times to the minute, None empty."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "" if math.isnan(v) else str(v)
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M")
    if isinstance(v, list | tuple):
        return ", ".join(fmt(x) for x in v)
    return str(v)


def table(
    rows: pl.DataFrame | Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    highlight: str | None = None,
    raw: Iterable[str] = (),
    css: str = "",
) -> str:
    """An HTML table; text columns align left. `highlight`: a boolean column marking rows to
    shade (not shown); `raw`: columns whose values are trusted markup (links built here)."""
    if isinstance(rows, pl.DataFrame):
        rows = rows.to_dicts()
    if not rows:
        return "<p class='empty'>no rows</p>"
    cols = list(columns or [c for c in rows[0] if c != highlight])
    raw = set(raw)
    left = {c for c in cols if any(isinstance(r.get(c), str) for r in rows) and c not in ("share",)}
    head = "".join(f"<th class='{'t' if c in left else ''}'>{escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = "".join(
            f"<td class='{'t' if c in left else ''}'>"
            f"{r.get(c, '') if c in raw else escape(fmt(r.get(c)))}</td>"
            for c in cols
        )
        cls = " class='hl'" if highlight and r.get(highlight) else ""
        body.append(f"<tr{cls}>{cells}</tr>")
    return (
        f"<table class='{css}'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def empty(what: str, command: str | None = None) -> str:
    """One line saying what is missing and the command that makes it."""
    cmd = f" Run <code>{escape(command)}</code>." if command else ""
    return f"<p class='empty'>{escape(what)}.{cmd}</p>"


def note(text: str) -> str:
    return f"<p class='note'>{escape(text)}</p>"


def cards(items: Sequence[tuple[str, Any]]) -> str:
    return (
        "<div class='cards'>"
        + "".join(
            f"<div class='card'><div class='v'>{escape(fmt(v))}</div>"
            f"<div class='k'>{escape(k)}</div></div>"
            for k, v in items
        )
        + "</div>"
    )


def link(path: str, text: str, **query: Any) -> str:
    """A link inside the dashboard (path relative to /dashboard)."""
    from urllib.parse import quote, urlencode

    q = {k: v for k, v in query.items() if v is not None}
    href = BASE + quote(path) + (("?" + urlencode(q)) if q else "")
    return f"<a href='{escape(href)}'>{escape(text)}</a>"


def panel(*parts: str) -> str:
    return "<div class='panel'>" + "".join(parts) + "</div>"


def page(
    title: str,
    here: str,
    body: Sequence[str],
    status: int = 200,
    *,
    signed_in: bool = True,
    reload_ms: int | None = None,
) -> HTMLResponse:
    nav = "".join(
        f"<a href='{BASE}{path}' class='{'here' if key == here else ''}'>{label}</a>"
        for key, label, path in NAV
    )
    out = (
        f"<form method='post' action='{BASE}/logout'><button type='submit'>Sign out</button></form>"
        if signed_in
        else ""
    )
    wait = f"<div data-reload-ms='{reload_ms}'></div>" if reload_ms else ""
    html = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)} · feedrank</title>"
        f"<link rel='icon' href='data:,'>"
        f"<link rel='stylesheet' href='{BASE}/static/dashboard.css'>"
        f"<script src='{BASE}/static/dashboard.js' defer></script></head><body>"
        f"<header><span class='brand'>feedrank</span><nav>{nav if signed_in else ''}</nav>{out}"
        f"</header><main>{wait}<h1>{escape(title)}</h1>{''.join(body)}</main></body></html>"
    )
    return HTMLResponse(html, status_code=status, headers=NO_STORE)


def error_page(status: int, title: str, message: str, signed_in: bool = True) -> HTMLResponse:
    """A page that says what went wrong (the error formula), never a traceback."""
    return page(title, "", [f"<p>{escape(message)}</p>"], status, signed_in=signed_in)
