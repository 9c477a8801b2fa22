"""Experiments: each A/B test's click-through per variant with intervals, day by day; the
fixed-horizon and the always-valid p-value after each day; 7- and 14-day churn per variant; and
off-policy estimates of the champion and popularity with their weight diagnostics. Computed in
the dashboard's background thread over its snapshot of recent events (see data.py)."""

from __future__ import annotations

from html import escape
from typing import Any

import polars as pl

from feedrank.api.dashboard import svg
from feedrank.api.dashboard.data import Dashboard
from feedrank.api.dashboard.layout import empty, fmt, note, panel, table
from feedrank.api.runtime import Runtime
from feedrank.evaluation.offpolicy_models import default_cut, estimate_models, logged_impressions
from feedrank.exceptions import NotFoundError
from feedrank.experiments.ab import ctr_table, exposures, report
from feedrank.models import make
from feedrank.settings import Settings
from feedrank.views.site import SiteData

RELOAD_MS = 2000
OFFPOLICY_DAYS = 7.0  # the log the estimates read: the last week's impressions


def experiment_names(site: SiteData, settings: Settings) -> list[str]:
    imps = site.events.filter(pl.col("type") == "impression")
    found = (
        imps.select(pl.col("context").str.json_path_match("$.experiment"))
        .to_series()
        .drop_nulls()
        .unique()
        .to_list()
    )
    return sorted(set(found) | set(settings.experiments))


def daily_ctr(imps: pl.DataFrame) -> pl.DataFrame:
    """Per day and variant: CTR with its 95% interval (users as the unit, delta method)."""
    days = imps.with_columns(day=pl.col("timestamp").dt.date())
    parts = [
        ctr_table(group).with_columns(day=pl.lit(day))
        for (day,), group in days.group_by("day", maintain_order=True)
    ]
    return pl.concat(parts).sort("day", "variant") if parts else pl.DataFrame()


def analyse(site: SiteData, settings: Settings) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in experiment_names(site, settings):
        try:
            imps = exposures(site.events, name, settings)
        except NotFoundError as exc:  # no impressions carry it yet: the page says so
            out.append({"name": name, "missing": str(exc)})
            continue
        rep = report(site.events, name, settings)
        out.append({"name": name, "report": rep, "daily": daily_ctr(imps)})
    return out


def offpolicy(site: SiteData, settings: Settings, champion_kind: str | None) -> Any:
    cut = default_cut(site, OFFPOLICY_DAYS)
    if logged_impressions(site, settings, cut).is_empty():
        return None
    kinds = list(dict.fromkeys([champion_kind or "glm", "popularity"]))
    return estimate_models({k: make(k) for k in kinds}, site, settings, cut)


def build(rt: Runtime, dash: Dashboard) -> tuple[list[str], int]:
    key = dash.data_key(rt.store)
    settings = rt.state.settings
    store = rt.store
    champion = rt.state.served.record
    kind = champion.kind if champion else None
    fresh_a, tests = dash.jobs.latest(
        "experiments", key, lambda: analyse(dash.site(store, key), settings)
    )
    fresh_o, off = dash.jobs.latest(
        "offpolicy", (key, kind), lambda: offpolicy(dash.site(store, key), settings, kind)
    )
    body: list[str] = []
    reload = 0
    if tests is None:
        body.append(panel(note("Computing the A/B reports from the recent events…")))
        reload = RELOAD_MS
    elif isinstance(tests, Exception):
        body.append(panel(empty(f"The A/B reports failed: {tests}")))
    elif not tests:
        body.append(
            panel(
                "<h2>A/B tests</h2>",
                empty(
                    "No experiment yet: none in the settings, no impression carries one",
                    "feedrank settings import FILE.toml (experiments = { home = { glm = 0.5, "
                    "popularity = 0.5 } }), then serve with ?experiment=home",
                ),
            )
        )
    else:
        body += [_experiment(t) for t in tests]
    if tests is not None and not fresh_a:
        reload = RELOAD_MS
    body.append(_offpolicy(off))
    if off is None and not fresh_o:
        reload = RELOAD_MS
    return body, reload


def _experiment(t: dict[str, Any]) -> str:
    name = t["name"]
    if "missing" in t:
        return panel(f"<h2>A/B test: {escape(name)}</h2>", empty(t["missing"]))
    rep = t["report"]
    daily: pl.DataFrame = t["daily"]
    parts = [f"<h2>A/B test: {escape(name)}</h2>"]
    if rep.p_value is not None:
        parts.append(
            note(
                f"Difference of CTRs between the first two variants (users as the unit): "
                f"p = {fmt(rep.p_value)} at a horizon fixed in advance; always-valid p = "
                f"{fmt(rep.p_always_valid)}, valid however often the test was looked at."
            )
        )
    parts.append(table(rep.ctr))
    if daily.height:
        days = daily["day"].unique().sort()
        labels = [d.strftime("%m-%d") for d in days]
        series, bands = {}, {}
        for (variant,), g in daily.group_by("variant", maintain_order=True):
            g = pl.DataFrame({"day": days}).join(g, on="day", how="left")
            series[str(variant)] = g["ctr"].to_list()
            bands[str(variant)] = (g["ctr_low"].to_list(), g["ctr_high"].to_list())
        parts.append(
            svg.lines(
                f"ab-{name}-ctr",
                "CTR per variant, day by day (95% intervals over users)",
                labels,
                series,
                bands,
                "CTR",
            )
        )
    if rep.looks is not None and rep.looks.height:
        looks = rep.looks
        parts.append(
            svg.lines(
                f"ab-{name}-p",
                "p-value after each day: fixed-horizon vs always-valid",
                [d.strftime("%m-%d") for d in looks["day"]],
                {
                    "fixed horizon": looks["p_value"].to_list(),
                    "always valid": looks["p_always_valid"].to_list(),
                },
                ylabel="p",
                ylim=(0.0, 1.0),
                hline=0.05,
            )
        )
    churn = rep.returns.with_columns(
        [
            (1 - pl.col(c)).alias(c.replace("return_", "churn_"))
            for c in rep.returns.columns
            if c.startswith("return_")
        ]
    )
    parts += [
        "<h3>Churn</h3>",
        note(
            "Share of exposed users not seen again within 7 / 14 days of their first exposure, "
            "over users whose window has ended (empty: no such user yet)."
        ),
        table(churn),
    ]
    return panel(*parts)


def _offpolicy(off: Any) -> str:
    head = "<h2>Off-policy estimates</h2>"
    if off is None:
        return panel(
            head,
            empty(
                "No off-policy estimate: no recent impression carries a propensity (or it is "
                "being computed)",
                "serve with ?explore=0.1 and send the propensities back with the impressions",
            ),
        )
    if isinstance(off, Exception):
        return panel(head, empty(f"The off-policy estimates failed: {off}"))
    tab = off.table()
    labels = [f"{m} ({e})" for m, e in tab.select("model", "method").iter_rows()]
    warnings = [f"{p.model}: {w}" for p in off.policies for w in p.weights.warnings]
    return panel(
        head,
        note(f"{off.description}; IPS, SNIPS and DR of each model's greedy top-k."),
        svg.intervals(
            "offpolicy",
            "Estimated CTR had the model served (95% intervals; dashed: the logging policy)",
            labels,
            tab["ctr"].to_list(),
            tab["ci_low"].to_list(),
            tab["ci_high"].to_list(),
            reference=off.logged.value,
        ),
        table(tab),
        *[f"<p class='note bad'>warning: {escape(w)}</p>" for w in warnings],
    )
