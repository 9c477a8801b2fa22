"""Overview: events per day by type, active users and items, the store's size, the active
generation and the champion, and ingestion since the server started (its own counters)."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl

from feedrank.api.dashboard import svg
from feedrank.api.dashboard.data import WINDOW_DAYS, Dashboard
from feedrank.api.dashboard.layout import cards, empty, note, panel, table
from feedrank.api.runtime import Runtime


def _store_bytes(rt: Runtime) -> int | None:
    """The SQLite file and its write-ahead log; None for a search-engine store."""
    path = getattr(rt.store, "path", None)
    if not path:
        return None
    base = Path(path)
    files = [base, base.with_name(base.name + "-wal")]
    return sum(f.stat().st_size for f in files if f.exists())


def _size(n: int | None) -> str:
    if n is None:
        return "n/a (search engine)"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return f"{n:.1f} TiB"


def _minute(iso: str | None) -> str:
    return iso[:16].replace("T", " ") if iso else "-"


def _metric(rt: Runtime, name: str, labels: dict[str, str]) -> float:
    value = rt.metrics.registry.get_sample_value(name, labels)
    return float(value or 0.0)


def ingestion(rt: Runtime, dash: Dashboard) -> dict[str, Any]:
    """The service's own counters (feedrank_events_total, feedrank_http_requests_total)."""
    events = {
        o: int(_metric(rt, "feedrank_events_total", {"outcome": o}))
        for o in ("stored", "duplicate", "rejected")
    }
    statuses: dict[str, int] = {}
    for fam in rt.metrics.registry.collect():
        if fam.name != "feedrank_http_requests":
            continue
        for s in fam.samples:
            if s.name.endswith("_total") and s.labels.get("route", "").startswith(
                ("/events", "/impressions")
            ):
                code = s.labels["status"][0] + "xx"
                statuses[code] = statuses.get(code, 0) + int(s.value)
    uptime = max(time.time() - dash.started, 1.0)
    return {
        "uptime_s": uptime,
        "refresh_failed": int(_metric(rt, "feedrank_serving_reloads_total", {"outcome": "failed"})),
        **events,
        "per_minute": events["stored"] / uptime * 60,
        "statuses": statuses,
    }


def build(rt: Runtime, dash: Dashboard) -> list[str]:
    state = rt.state
    daily = dash.daily.update(rt.store)
    counts = daily.counts
    stats = dash.cache.get("stats", rt.store.stats)
    champion = dash.cache.get("champion", rt.registry.champion)
    gen = state.generation
    body: list[str] = []
    last_day = counts["day"].max() if counts.height else None
    active_u = active_i = 0
    if last_day is not None:
        since = last_day - timedelta(days=6)  # type: ignore[operator]
        active_u = daily.users.filter(pl.col("day") >= since)["user_id"].n_unique()
        active_i = daily.items.filter(pl.col("day") >= since)["item_id"].n_unique()
    body.append(
        cards(
            [
                ("events stored", stats.get("events", 0)),
                (
                    "users (with events)",
                    f"{stats.get('users', 0):,} ({stats.get('users_with_events', 0):,})",
                ),
                ("items", stats.get("items", 0)),
                ("active users, last 7 days", active_u),
                ("active items, last 7 days", active_i),
                ("store size", _size(_store_bytes(rt))),
            ]
        )
    )
    serving = [
        {"what": "serving", "value": state.label},
        {
            "what": "champion",
            "value": f"{champion.name}/{champion.version}" if champion else "none",
        },
        {
            "what": "active generation",
            "value": (
                f"#{gen.id} of {gen.model}: {gen.n_users:,} users, {gen.n_rows:,} rows, "
                f"scored {gen.created_at:%Y-%m-%d %H:%M} UTC"
                if gen
                else "none"
            ),
        },
        {
            "what": "events span",
            "value": f"{_minute(stats.get('first_event'))} .. {_minute(stats.get('last_event'))} UTC",
        },
    ]
    missing = []
    if gen is None:
        missing.append(empty("No active generation", "feedrank score --k 100"))
    if champion is None:
        missing.append(empty("No champion yet", "feedrank models promote NAME/VERSION"))
    body.append("<div class='grid2'>")
    body.append(panel("<h2>Serving</h2>", table(serving), *missing))
    ing = ingestion(rt, dash)
    rows = [
        {"counter": "events stored", "since start": ing["stored"]},
        {"counter": "duplicates skipped", "since start": ing["duplicate"]},
        {"counter": "events rejected", "since start": ing["rejected"]},
        {"counter": "store refreshes failed", "since start": ing["refresh_failed"]},
        *[
            {"counter": f"ingest answers {code}", "since start": n}
            for code, n in sorted(ing["statuses"].items())
        ],
    ]
    body.append(
        panel(
            "<h2>Ingestion</h2>",
            note(
                f"This server's counters over {ing['uptime_s'] / 60:.0f} min since it started: "
                f"{ing['per_minute']:.1f} events stored per minute (GET /metrics has them all)."
            ),
            table(rows),
        )
    )
    body.append("</div>")
    if counts.is_empty():
        body.append(
            panel(
                "<h2>Events per day</h2>",
                empty("No events stored yet", "feedrank import interactions FILE"),
            )
        )
        return body
    days = counts.filter(
        pl.col("day") > last_day - timedelta(days=WINDOW_DAYS)  # type: ignore[operator]
    )
    wide = days.pivot(on="type", index="day", values="n").fill_null(0).sort("day")
    types = (
        days.group_by("type").agg(pl.col("n").sum()).sort("n", descending=True)["type"].to_list()
    )
    labels = [d.strftime("%m-%d") for d in wide["day"]]
    series = {t: wide[t].to_list() for t in types}
    body.append(
        panel(
            svg.stacked_bars(
                "events-per-day",
                f"Events per day by type (last {WINDOW_DAYS} days, UTC)",
                labels,
                series,
                "events",
            ),
        )
    )
    per_day = (
        daily.users.group_by("day")
        .agg(users=pl.len())
        .join(daily.items.group_by("day").agg(items=pl.len()), on="day", how="full", coalesce=True)
        .fill_null(0)
        .sort("day")
    )
    body.append(
        panel(
            svg.lines(
                "active-per-day",
                "Active users and items per day",
                [d.strftime("%m-%d") for d in per_day["day"]],
                {"users": per_day["users"].to_list(), "items": per_day["items"].to_list()},
                ylabel="distinct",
            )
        )
    )
    return body
