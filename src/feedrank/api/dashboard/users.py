"""The user inspector: search a user; their profile, favourites and history timeline; what they
were shown and what they clicked; recommendations from any registry model — the very items
GET /users/{id}/recommendations answers for the same model, k and rules — with reasons and the
rules applied; and items similar to the one they engaged with last. Every read is by the user's
index (their events) or from the serving state: no scan of the event table."""

from __future__ import annotations

from html import escape
from typing import Any

import polars as pl

from feedrank.api.dashboard import svg
from feedrank.api.dashboard.data import Dashboard
from feedrank.api.dashboard.layout import BASE, cards, empty, link, note, panel, table
from feedrank.api.dashboard.models import find
from feedrank.api.recommending import RecRequest
from feedrank.api.runtime import Runtime
from feedrank.evaluation.preferences import per_user_favourites
from feedrank.exceptions import NotFoundError, ParameterError
from feedrank.features.examples import labelled_impressions
from feedrank.models.base import Unsupported
from feedrank.serving.rules import Rules
from feedrank.serving.service import reason_text
from feedrank.views.site import SiteData

MAX_MATCHES = 50
MAX_K = 100
RECENT = 30  # rows of history and impressions shown
RULE_PARAMS = ("filter", "exclude", "boost", "max_per")


def _user_ids(rt: Runtime, dash: Dashboard) -> list[str]:
    def read() -> list[str]:
        ids = set(rt.store.users()["user_id"].to_list())
        ids |= set(rt.store.user_counts()["user_id"].unique().to_list())
        return sorted(ids)

    return dash.cache.get("user-ids", read, max_age=30.0)


def search(rt: Runtime, dash: Dashboard, q: str) -> list[str]:
    ids = _user_ids(rt, dash)
    needle = q.strip().lower()
    found = [u for u in ids if needle in u.lower()] if needle else ids
    form = (
        f"<form class='inline' method='get' action='{BASE}/users'>"
        f"<input name='q' value='{escape(q)}' placeholder='user id (or part of one)' "
        "aria-label='user id'><button class='go' type='submit'>Search</button></form>"
    )
    if not ids:
        return [panel(form, empty("No user stored yet", "feedrank import users users.csv"))]
    shown = found[:MAX_MATCHES]
    profiles = rt.store.users(shown) if shown else pl.DataFrame()
    attrs = {r["user_id"]: r for r in profiles.to_dicts()} if profiles.height else {}
    rows = [
        {
            "user": link(f"/users/{u}", u),
            **{k: v for k, v in attrs.get(u, {}).items() if k != "user_id"},
        }
        for u in shown
    ]
    what = f"{len(found):,} of {len(ids):,} users match '{q}'" if needle else f"{len(ids):,} users"
    more = f"; the first {MAX_MATCHES} are listed" if len(found) > MAX_MATCHES else ""
    return [
        panel(
            form,
            note(what + more),
            table(rows, raw=["user"]) if rows else empty("No user matches"),
        )
    ]


def _int(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ParameterError(name, f"{name} must be an integer from {low} to {high}; got '{raw}'")
    return value


def _rules(params: dict[str, str]) -> Rules:
    lists = {p: [params[p]] if params.get(p) else [] for p in RULE_PARAMS}
    rules = Rules.parse(
        lists["filter"], lists["exclude"], None, lists["boost"], lists["max_per"], 0
    )
    exclude_seen = params.get("exclude_seen", "true").lower() not in ("0", "false", "no", "off")
    from dataclasses import replace

    return replace(rules, exclude_seen=exclude_seen)


def _titles(rt: Runtime, item_ids: list[str]) -> dict[str, dict[str, Any]]:
    items = rt.state.catalogue.items
    cols = [c for c in ("title", "content_type", "lang") if c in items.columns]
    found = items.filter(pl.col("item_id").is_in(item_ids)).select("item_id", *cols)
    return {r["item_id"]: r for r in found.to_dicts()}


def recommendations(
    rt: Runtime, user_id: str, k: int, model: str | None, rules: Rules
) -> tuple[Any, dict[str, str]]:
    """What the API answers for this user, model, k and rules (the same service call), and
    each item's reasons from an explained live scoring (keyed by item: the answer itself may
    come from the precomputed generation)."""
    state = rt.state
    out = rt.recommending.recommend(state, RecRequest(user_id, k, False, model, rules))
    reasons: dict[str, str] = {}
    try:
        why = rt.recommending.live(state, RecRequest(user_id, k, True, model, rules))
        reasons = {r["item_id"]: reason_text(r.get("reasons") or []) for r in why.items}
    except Unsupported:
        pass  # a model without explanations: the rows say "no reasons"
    return out, reasons


def inspect(rt: Runtime, dash: Dashboard, user_id: str, params: dict[str, str]) -> list[str]:
    store, settings = rt.store, rt.state.settings
    profile = store.users([user_id])
    events = store.events(user_ids=[user_id])
    if profile.is_empty() and events.is_empty():
        raise NotFoundError(
            f"user must be a stored user (a profile or events); got '{user_id}' — search at "
            f"{BASE}/users"
        )
    k = _int(params, "k", 10, 1, MAX_K)
    model = params.get("model") or None
    label = None
    if model is not None:
        rec = find(rt, dash, model)
        label = f"{rec.name}/{rec.version}"
    rules = _rules(params)
    out, reasons = recommendations(rt, user_id, k, label, rules)
    ids = [r["item_id"] for r in out.items]
    titles = _titles(rt, ids + events["item_id"].unique().to_list())
    body = [_profile(profile, events), _form(rt, dash, user_id, params, k, label)]
    rows = [
        {
            "rank": r["rank"],
            "item_id": r["item_id"],
            **{c: titles.get(r["item_id"], {}).get(c) for c in ("title", "content_type", "lang")},
            "score": r["score"],
            "source": r["source"],
            "reasons": reasons.get(r["item_id"])
            or "(no reasons: "
            + ("a fallback" if r["source"] != "model" else "not explained")
            + ")",
        }
        for r in out.items
    ]
    body.append(
        panel(
            f"<h2>Recommendations from {escape(out.model)}</h2>",
            note(
                f"served from the {out.served_from}"
                + (f" #{out.generation}" if out.generation else "")
                + ("; cold start: fallbacks only" if out.cold_start else "")
                + f"; the same items as GET /users/{user_id}/recommendations?k={k}"
                + (f"&model={label}" if label else "")
            ),
            f"<div id='recommendations' data-items='{escape(' '.join(ids))}'>",
            table(rows) if rows else empty("No item could be recommended under these rules"),
            "</div><h3>Rules applied</h3>",
            table(out.rules) if out.rules else note("no rule removed anything"),
        )
    )
    body.append(_similar(rt, events, label, settings))
    body += _history(events, titles, settings, profile)
    return body


def _profile(profile: pl.DataFrame, events: pl.DataFrame) -> str:
    attrs = profile.drop("user_id").to_dicts()[0] if profile.height else {}
    facts: list[tuple[str, Any]] = [(k, v) for k, v in attrs.items() if v is not None]
    if events.height:
        facts += [
            ("events", events.height),
            ("first event", events["timestamp"].min()),
            ("last event", events["timestamp"].max()),
        ]
    return cards(facts or [("profile", "none stored")])


def _form(
    rt: Runtime, dash: Dashboard, user_id: str, params: dict[str, str], k: int, label: str | None
) -> str:
    records = dash.cache.get("registry", rt.registry.list)
    options = ["<option value=''>the serving model</option>"] + [
        f"<option value='{escape(f'{r.name}/{r.version}')}'"
        f"{' selected' if label == f'{r.name}/{r.version}' else ''}>"
        f"{escape(f'{r.name}/{r.version}')}</option>"
        for r in sorted(records, key=lambda r: r.version, reverse=True)
    ]
    inputs = "".join(
        f"<input name='{p}' value='{escape(params.get(p, ''))}' placeholder='{p}' size='14'>"
        for p in RULE_PARAMS
    )
    return (
        f"<form class='inline' method='get' action='{BASE}/users/{escape(user_id)}'>"
        f"<label>model <select name='model'>{''.join(options)}</select></label>"
        f"<label>k <input name='k' value='{k}' size='3'></label>{inputs}"
        "<button class='go' type='submit'>Recommend</button></form>"
    )


def _similar(rt: Runtime, events: pl.DataFrame, label: str | None, settings: Any) -> str:
    head = "<h2>Similar items</h2>"
    engaged = events.filter(settings.engaged_expr(events["type"].unique().to_list()))
    if engaged.is_empty():
        return panel(head, empty("The user engaged with nothing yet: no item to start from"))
    last = str(engaged["item_id"][-1])
    try:
        got = rt.recommending.similar(rt.state, last, 5, label, Rules())
    except (Unsupported, NotFoundError) as exc:
        return panel(head, empty(f"No similar items for {last}: {exc}"))
    titles = _titles(rt, [r["item_id"] for r in got["similar"]])
    rows = [{**r, "title": titles.get(r["item_id"], {}).get("title")} for r in got["similar"]]
    return panel(
        head,
        note(
            f"To {last}, the item the user engaged with last ({got['similarity']} similarity of {got['model']})."
        ),
        table(rows, ["rank", "item_id", "title", "score", "source"]),
    )


def _history(
    events: pl.DataFrame, titles: dict[str, dict[str, Any]], settings: Any, profile: pl.DataFrame
) -> list[str]:
    if events.is_empty():
        return [panel("<h2>History</h2>", empty("No event stored for this user"))]
    days = (
        events.with_columns(day=pl.col("timestamp").dt.date())
        .group_by("day", "type")
        .len()
        .pivot(on="type", index="day", values="len")
        .fill_null(0)
        .sort("day")
    )
    types = [c for c in days.columns if c != "day"]
    chart = svg.stacked_bars(
        "user-timeline",
        "The user's events per day by type",
        [d.strftime("%m-%d") for d in days["day"]],
        {t: days[t].to_list() for t in types},
        "events",
    )
    recent = (
        events.tail(RECENT)
        .reverse()
        .with_columns(
            title=pl.col("item_id").replace_strict(
                {i: t.get("title") for i, t in titles.items()}, default=None, return_dtype=pl.String
            )
        )
    )
    timeline = panel(
        "<h2>History timeline</h2>",
        chart,
        f"<h3>The {recent.height} newest events</h3>",
        table(recent, ["timestamp", "type", "item_id", "title", "position", "device"]),
    )
    uid = str(events["user_id"][0])
    users = profile if profile.height else pl.DataFrame({"user_id": [uid]})
    items = (
        pl.DataFrame(list(titles.values()))
        if titles
        else pl.DataFrame(schema={"item_id": pl.String})
    )
    fav = per_user_favourites(SiteData(users, items, events), settings, [uid])
    favourites = (
        table(fav.drop("user_id")) if fav.height else empty("No engagement yet: no favourites")
    )
    imps = labelled_impressions(events, settings)
    if imps.is_empty():
        shown = empty("No impression stored: the site sends what it showed to POST /impressions")
    else:
        clicks = int(imps["label"].sum())
        last = (
            imps.tail(RECENT)
            .reverse()
            .with_columns(
                clicked=pl.col("label").cast(pl.Boolean),
                title=pl.col("item_id").replace_strict(
                    {i: t.get("title") for i, t in titles.items()},
                    default=None,
                    return_dtype=pl.String,
                ),
            )
        )
        shown = note(
            f"{imps.height} impressions, {clicks} clicked (CTR {clicks / imps.height:.3f}); "
            f"the {last.height} newest, clicked ones shaded:"
        ) + table(
            last, ["timestamp", "item_id", "title", "position", "clicked"], highlight="clicked"
        )
    return [
        timeline,
        panel("<h2>Favourites</h2>", favourites),
        panel("<h2>What they were shown and clicked</h2>", shown),
    ]
