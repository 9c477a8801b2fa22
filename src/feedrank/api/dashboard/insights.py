"""Insights: seed 001's whole list over the recent events, computed in the dashboard's
background thread (evaluation/insights.py and evaluation/preferences.py do the work)."""

from __future__ import annotations

from typing import Any

import polars as pl

from feedrank.api.dashboard import svg
from feedrank.api.dashboard.data import WINDOW_DAYS, Dashboard
from feedrank.api.dashboard.layout import empty, link, note, panel, table
from feedrank.api.runtime import Runtime
from feedrank.evaluation.insights import engagement_by_hour, favourites, top_items_per_segment
from feedrank.evaluation.preferences import (
    by_login_hour,
    favourite_tags,
    per_user_favourites,
    preference_shift_by_age,
)
from feedrank.settings import Settings
from feedrank.views.site import SiteData

RELOAD_MS = 2000
TOP_USERS = 15


def analyse(site: SiteData, settings: Settings) -> dict[str, Any]:
    if site.events.is_empty():
        return {}
    shares, shifts = preference_shift_by_age(site, settings, "lang")
    posts, mix = by_login_hour(site, settings)
    return {
        "users": per_user_favourites(site, settings).head(TOP_USERS),
        "lang_by_age": favourites(site, settings, "age_band", "lang"),
        "age_shares": shares,
        "age_shifts": shifts,
        "tags_by_gender": favourite_tags(site, settings, "gender"),
        "type_by_gender": favourites(site, settings, "gender", "content_type"),
        "lang_by_gender": favourites(site, settings, "gender", "lang", top=5),
        "posts_by_gender": top_items_per_segment(site, settings, "gender"),
        "login_posts": posts,
        "login_mix": mix,
        "by_hour": engagement_by_hour(site, settings),
    }


def build(rt: Runtime, dash: Dashboard) -> tuple[list[str], int]:
    key = dash.data_key(rt.store)
    settings, store = rt.state.settings, rt.store
    fresh, got = dash.jobs.latest("insights", key, lambda: analyse(dash.site(store, key), settings))
    if got is None:
        return [panel(note("Computing the insights from the recent events…"))], RELOAD_MS
    if isinstance(got, Exception):
        return [panel(empty(f"The insights failed: {got}"))], 0
    if not got:
        return [panel(empty("No events stored yet", "feedrank import interactions FILE"))], 0
    body = [
        note(
            f"Over the last {WINDOW_DAYS} days of events; shares are of engagement weight "
            "(a like weighs more than a click: the settings' type weights)."
        ),
        _users(got["users"]),
        _age(got),
        _gender(got),
        _login(got),
    ]
    return body, 0 if fresh else RELOAD_MS


def _users(users: pl.DataFrame) -> str:
    if users.is_empty():
        return panel("<h2>Each user's favourites</h2>", empty("No user engaged with anything yet"))
    rows = [
        {**r, "user_id": link(f"/users/{r['user_id']}", r["user_id"])} for r in users.to_dicts()
    ]
    return panel(
        "<h2>Each user's favourite content type, language and post</h2>",
        note(f"The {users.height} most engaged users; the user inspector shows any user's."),
        table(rows, raw=["user_id"]),
    )


def _age(got: dict[str, Any]) -> str:
    shares: pl.DataFrame = got["age_shares"]
    shifts: pl.DataFrame = got["age_shifts"]
    head = "<h2>Favourite languages by age, and the age at which preferences change</h2>"
    if shares.is_empty():
        return panel(
            head, empty("Users carry no age (or items no lang)", "feedrank import users users.csv")
        )
    langs = [c for c in shares.columns if c != "age_band"]
    chart = svg.stacked_bars(
        "lang-by-age",
        "Share of engagement per language, by age band",
        shares["age_band"].to_list(),
        {lang: shares[lang].to_list() for lang in langs},
        "share",
    )
    parts = [head, chart]
    if shifts.height:
        top = shifts.sort("distance", descending=True).row(0, named=True)
        parts.append(
            note(
                f"Preferences change most from the {top['from']} band to {top['to']} (total "
                f"variation distance {top['distance']:.2f}: {top['grew most']} grows most, "
                f"{top['fell most']} falls most)."
            )
        )
        parts.append(table(shifts))
    parts += [
        "<details><summary>Top languages per age band</summary>",
        table(got["lang_by_age"]),
        "</details>",
    ]
    return panel(*parts)


def _gender(got: dict[str, Any]) -> str:
    parts = ["<h2>By gender: favourite tags, content types, languages and posts</h2>"]
    tags: pl.DataFrame = got["tags_by_gender"]
    lang: pl.DataFrame = got["lang_by_gender"]
    if not lang.is_empty():
        genders = lang["gender"].unique().sort().to_list()
        langs = lang["lang"].unique().sort().to_list()
        wide = lang.pivot(on="gender", index="lang", values="share").fill_null(0.0)
        wide = pl.DataFrame({"lang": langs}).join(wide, on="lang", how="left").fill_null(0.0)
        parts.append(
            svg.grouped_bars(
                "lang-by-gender",
                "Share of engagement per language, by gender",
                langs,
                {g: wide[g].to_list() for g in genders},
                "share",
            )
        )
    parts.append("<h3>Favourite tags</h3>")
    parts.append(
        table(tags)
        if not tags.is_empty()
        else empty(
            "No item carries tags (or users no gender): import items with a tags column "
            "such as 'python,web'",
            "feedrank import items items.csv",
        )
    )
    cells = []
    for title, key in (
        ("Favourite content types", "type_by_gender"),
        ("Favourite languages", "lang_by_gender"),
    ):
        frame: pl.DataFrame = got[key]
        cells.append(
            f"<div><h3>{title}</h3>"
            + (table(frame) if not frame.is_empty() else empty("Users carry no gender"))
            + "</div>"
        )
    posts: pl.DataFrame = got["posts_by_gender"]
    parts += [
        "<div class='grid2'>",
        *cells,
        "</div><h3>Most engaged posts</h3>",
        table(posts) if not posts.is_empty() else empty("Users carry no gender"),
    ]
    return panel(*parts)


def _login(got: dict[str, Any]) -> str:
    head = "<h2>Which posts people engage with, by the hour they logged in (UTC)</h2>"
    posts: pl.DataFrame = got["login_posts"]
    mix: pl.DataFrame = got["login_mix"]
    if posts.is_empty():
        return panel(
            head, empty("No login events: sessions start with a 'login' (or 'visit') event")
        )
    hours = list(range(24))
    kinds = mix["kind"].unique().sort().to_list()
    wide = (
        pl.DataFrame({"login_hour": hours}, schema={"login_hour": mix.schema["login_hour"]})
        .join(
            mix.pivot(on="kind", index="login_hour", values="weight"), on="login_hour", how="left"
        )
        .fill_null(0.0)
    )
    by_hour: pl.DataFrame = got["by_hour"]
    return panel(
        head,
        svg.stacked_bars(
            "login-hour",
            "Engagement weight by login hour and content type",
            [f"{h:02d}" for h in hours],
            {k: wide[k].to_list() for k in kinds},
            "weight",
        ),
        "<h3>Top posts per login-hour band</h3>",
        table(posts),
        "<details><summary>Engagement by hour of day (of the event)</summary>",
        table(by_hour),
        "</details>",
    )
