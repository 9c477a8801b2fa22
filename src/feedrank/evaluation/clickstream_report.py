"""Seed 004's analyses as PNG plots (matplotlib, Agg) in one self-contained HTML report.

- hit-rate distribution over cookies (business-unit hit rate on the hold-out, per cookie);
- average item similarity per business unit and per asset type: each form's mean cosine
  similarity to its 10 nearest forms, over the asset-weighted cookie x form matrix of all the
  data (a description of the catalogue, not an evaluation), averaged per unit / type;
- hit rate against submissions and interactions (the seed's 3D plot; interactions = distinct
  forms of the cookie, submissions = their total count);
- the model comparison table (every model beside popularity), with the split and its seed,
  the validation tables of the tuned models and the hybrid's coefficient table.
Images are embedded as base64 data URIs, so the file stands alone."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import scipy.sparse as sp

from feedrank.evaluation.clickstream_eval import Comparison, hr_plus_bu
from feedrank.evaluation.html import CSS, png, table_html
from feedrank.evaluation.loo import ModelResult, item_units
from feedrank.features.history import History
from feedrank.models.hybrid import HybridRecommender
from feedrank.settings import Settings
from feedrank.views.site import SiteData

NEIGHBOURS = 10


def item_similarity(
    data: SiteData, settings: Settings, neighbours: int = NEIGHBOURS
) -> pl.DataFrame:
    """item_id, avg_similarity: mean cosine to the item's `neighbours` most similar items."""
    ev = History(data, settings, []).events.filter(pl.col("engaged") > 0)
    w = ev.group_by("user_id", "item_id").agg(pl.col("weight").sum())
    users = w["user_id"].unique().sort()
    items = data.items["item_id"]
    u = pl.DataFrame({"user_id": users}).with_row_index("__u")
    i = pl.DataFrame({"item_id": items}).with_row_index("__i")
    w = w.join(u, on="user_id").join(i, on="item_id")
    X = sp.csc_matrix(
        (w["weight"].to_numpy(), (w["__u"].to_numpy(), w["__i"].to_numpy())),
        shape=(len(users), len(items)),
    )
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=0)).ravel())
    Xn = X @ sp.diags(1.0 / np.where(norms > 0, norms, 1.0))
    S = (Xn.T @ Xn).toarray()
    np.fill_diagonal(S, -np.inf)
    n = min(neighbours, max(len(items) - 1, 1))
    top = -np.sort(-S, axis=1)[:, :n]
    avg = np.where(np.isfinite(top), top, 0.0).mean(axis=1)
    return pl.DataFrame({"item_id": items, "avg_similarity": avg})


def _bars(frame: pl.DataFrame, group: str, title: str) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar(
        frame[group].cast(pl.String).to_list(), frame["avg_similarity"].to_numpy(), color="#4c72b0"
    )
    for x, (v, n) in enumerate(zip(frame["avg_similarity"], frame["forms"], strict=True)):
        ax.text(x, v, f"{n}", ha="center", va="bottom", fontsize=7)
    ax.set_ylabel(f"mean cosine to {NEIGHBOURS} nearest forms")
    ax.set_title(title + " (numbers: forms)")
    ax.tick_params(axis="x", rotation=35, labelsize=8)
    return png(fig)


def similarity_plots(data: SiteData, settings: Settings) -> tuple[str, str]:
    sim = item_similarity(data, settings).join(data.items, on="item_id")
    by_unit = (
        sim.join(item_units(data.items), on="item_id")
        .group_by("unit")
        .agg(pl.col("avg_similarity").mean(), forms=pl.len())
        .sort("unit")
        .rename({"unit": "business unit"})
    )
    type_col = "asset_class" if "asset_class" in sim.columns else "gated_asset_type"
    by_type = (
        sim.group_by(type_col)
        .agg(pl.col("avg_similarity").mean(), forms=pl.len())
        .sort("avg_similarity", descending=True)
    )
    return (
        _bars(by_unit, "business unit", "Average form similarity per business unit"),
        _bars(by_type, type_col, "Average form similarity per asset type"),
    )


def hit_rate_histogram(results: Sequence[ModelResult]) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bins = np.linspace(0, 1, 12).tolist()
    for r in results:
        v = r.per_user["bu_hit_rate"].drop_nans().to_numpy()
        ax.hist(v, bins=bins, alpha=0.5, label=f"{r.name} (mean {v.mean():.3f}, {v.size} cookies)")
    ax.set_xlabel("business-unit hit rate (share of the top 10 in the hidden form's unit)")
    ax.set_ylabel("cookies")
    ax.set_title("Hit-rate distribution over cookies (held-out)")
    ax.legend(fontsize=7)
    return png(fig)


def cookie_activity(data: SiteData, settings: Settings) -> pl.DataFrame:
    """user_id, interactions (distinct forms), form_submissions (total count)."""
    ev = data.engagements(settings)
    return ev.group_by("user_id").agg(
        interactions=pl.col("item_id").n_unique(), form_submissions=pl.col("value").sum()
    )


def hit_rate_3d(result: ModelResult, data: SiteData, settings: Settings) -> str:
    frame = result.per_user.join(cookie_activity(data, settings), on="user_id").filter(
        pl.col("bu_hit_rate").is_not_nan()
    )
    fig = plt.figure(figsize=(6.5, 4.5))
    ax = fig.add_subplot(projection="3d")
    x = frame["interactions"].to_numpy()
    y = np.log10(frame["form_submissions"].to_numpy())
    z = frame["bu_hit_rate"].to_numpy()
    ax.scatter(x, y, z, c=z, cmap="viridis", s=10)  # type: ignore[misc]
    ax.set_xlabel("interactions (forms)")
    ax.set_ylabel("log10 form submissions")
    ax.set_zlabel("BU hit rate")  # type: ignore[attr-defined]
    ax.set_title(f"Hit rate vs submissions and interactions ({result.name})")
    return png(fig)


def render_report(
    comp: Comparison, settings: Settings, summary: dict[str, object] | None = None
) -> str:
    """The whole report as one HTML string."""
    split = comp.split
    pop = comp.result("popularity")
    best = comp.best("HR@10")
    best_bu = comp.best(hr_plus_bu)
    shown = list({r.name: r for r in (pop, best, best_bu)}.values())
    unit_plot, type_plot = similarity_plots(split.data, settings)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<title>feedrank: seed 004 clickstream report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Seed 004's clickstream recommender, measured on a held-out split</h1>",
        f"<p class='note'>Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC} by "
        "<code>feedrank demo clickstream</code>.</p>",
    ]
    if summary:
        parts.append(
            "<h2>Data</h2>"
            + table_html(
                pl.DataFrame({"": list(summary), "value": [str(v) for v in summary.values()]})
            )
        )
    parts += [
        "<h2>Split</h2>",
        f"<p><b>{html.escape(split.description)}</b>. Split seed: <b>{split.seed}</b>. "
        "Tuned models chose their parameters on a validation leave-one-out carved from the "
        f"training data (seed {(split.seed or 0) + 1000}); the test hold-out was never used to "
        "choose.</p>",
        "<p class='note'>HR@10: the hidden form is in the top 10. BU hit rate: share of the top 10 "
        "whose business unit meets the hidden form's (cookies whose hidden form has a unit). Top hit "
        "rate: share of the top 10 whose unit meets the units of the cookie's strongest forms "
        "(maximal asset weight x submissions, whole history). Forms without a unit never match.</p>",
        "<h2>Model comparison</h2>",
        table_html(comp.table()),
    ]
    if comp.skipped:
        parts.append("<p class='note'>Skipped: " + html.escape(str(comp.skipped)) + "</p>")
    parts += [
        "<h2>Hit-rate distribution over cookies</h2>",
        f'<img src="{hit_rate_histogram(shown)}" alt="hit-rate distribution">',
        "<h2>Average item similarity</h2>",
        f'<img src="{unit_plot}" alt="similarity per business unit">',
        f'<img src="{type_plot}" alt="similarity per asset type">',
        "<h2>Hit rate against submissions and interactions</h2>",
        f'<img src="{hit_rate_3d(best_bu, split.data, settings)}" alt="3d hit rate">',
    ]
    hybrids = [r for r in comp.results if isinstance(r.extra.get("model"), HybridRecommender)]
    for r in hybrids:
        model = r.extra["model"]
        parts += [
            f"<h2>How much each source counts ({html.escape(r.name)})</h2>",
            "<p class='note'>Coefficients per standard deviation of each feature, learned on an "
            "inner hold-out of the training data.</p>",
            table_html(model.coef_table()),
        ]
    for name, table in comp.validation.items():
        parts += [f"<h3>Validation: {html.escape(name)}</h3>", table_html(table)]
    parts.append("</body></html>")
    return "\n".join(parts)
