"""`feedrank report`: one self-contained HTML page of how the models do — model comparison beside
popularity, segments, the GLM's calibration and coefficients, the distribution of per-user
recall, A/B tests found in the impressions, click-through per served model and position, and —
when impressions carry the logging policy's propensities — each model's off-policy CTR."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from feedrank.evaluation.html import page, png, table_html
from feedrank.evaluation.metrics import classification_metrics, reliability_curve
from feedrank.evaluation.offline import Evaluation, evaluate, user_segments
from feedrank.evaluation.offpolicy_models import (
    OffPolicyReport,
    estimate_models,
    logged_impressions,
)
from feedrank.evaluation.online import served_ctr
from feedrank.evaluation.splits import make_split
from feedrank.exceptions import FeedrankError
from feedrank.experiments.ab import report as ab_report
from feedrank.features.examples import has_impressions
from feedrank.models import MODELS, make
from feedrank.models.glm import GLMRecommender
from feedrank.settings import Settings
from feedrank.views.site import SiteData

SEGMENTS = ("tenure", "activity", "gender", "age_band", "country")


def _recall_histogram(ev: Evaluation) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    col = f"recall@{ev.k}"
    for name, frame in ev.per_user.items():
        ax.hist(frame[col].drop_nans().to_numpy(), bins=20, range=(0, 1), alpha=0.5, label=name)
    ax.set_xlabel(f"recall@{ev.k} per user")
    ax.set_ylabel("users")
    ax.legend()
    ax.set_title("Per-user hit rate distribution")
    return png(fig)


def _model_bars(table: pl.DataFrame, metric: str) -> str:
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.barh(table["model"].to_list(), table[metric].to_list(), color="#4a7ab5")
    ax.set_xlabel(metric)
    ax.invert_yaxis()
    ax.set_title(f"Model comparison: {metric}")
    return png(fig)


def _calibration(y: np.ndarray, p: np.ndarray) -> str:
    curve = reliability_curve(y, p)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    top = max(max(c["predicted"] for c in curve), max(c["observed"] for c in curve)) * 1.1
    ax.plot([0, top], [0, top], color="#999", linestyle="--", label="perfect")
    ax.plot(
        [c["predicted"] for c in curve], [c["observed"] for c in curve], marker="o", label="GLM"
    )
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed rate")
    ax.legend()
    ax.set_title("Reliability (held-out window)")
    return png(fig)


def _coefficients(model: GLMRecommender, top: int = 20) -> str:
    table = model.coef_table().filter(pl.col("feature") != "intercept")
    table = (
        table.with_columns(a=pl.col("coefficient").abs())
        .sort("a", descending=True)
        .head(top)
        .sort("coefficient")
    )
    fig, ax = plt.subplots(figsize=(7, 0.3 * table.height + 1))
    ax.barh(
        table["feature"].to_list(),
        table["coefficient"].to_list(),
        xerr=1.96 * table["std_error"].to_numpy(),
        color="#b5704a",
    )
    ax.axvline(0, color="#333", linewidth=0.8)
    ax.set_xlabel("coefficient (95% interval)")
    ax.set_title(f"GLM: the {table.height} largest coefficients")
    return png(fig)


def _ctr_plot(ctr: pl.DataFrame) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for (name,), g in ctr.group_by("model", maintain_order=True):
        g = g.filter(pl.col("position").is_not_null()).sort("position")
        ax.plot(g["position"].to_list(), g["ctr"].to_list(), marker="o", label=str(name))
    ax.set_xlabel("position")
    ax.set_ylabel("CTR")
    ax.legend()
    ax.set_title("Click-through by position")
    return png(fig)


def _offpolicy_plot(rep: OffPolicyReport) -> str:
    table = rep.table()
    labels = [f"{m} ({e})" for m, e in table.select("model", "method").iter_rows()]
    ctr = table["ctr"].to_numpy()
    err = np.vstack([ctr - table["ci_low"].to_numpy(), table["ci_high"].to_numpy() - ctr])
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(labels) + 1.5))
    ax.errorbar(ctr, range(len(labels)), xerr=err, fmt="o", capsize=3, color="#4a7ab5")
    ax.axvline(rep.logged.value, color="#999", linestyle="--", label="logging policy (observed)")
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("estimated CTR had the model served (95% interval)")
    ax.legend(loc="lower right")
    return png(fig)


def _offpolicy_section(
    data: SiteData, settings: Settings, names: list[str], cut: datetime
) -> list[str]:
    """Only when the held-out impressions carry the logging policy's propensities."""
    if logged_impressions(data, settings, cut).is_empty():
        return []
    rep = estimate_models({m: make(m) for m in names}, data, settings, cut)
    warnings = [f"{p.model}: {w}" for p in rep.policies for w in p.weights.warnings]
    return [
        "<h2>Off-policy: each model's CTR had it served</h2>",
        f"<p class='note'>{html.escape(rep.description)}; IPS and SNIPS, greedy top-k.</p>",
        table_html(rep.table()),
        f'<img src="{_offpolicy_plot(rep)}" alt="off-policy estimates">',
        *[f"<p class='note'>warning: {html.escape(w)}</p>" for w in warnings],
    ]


def build_report(
    data: SiteData,
    settings: Settings,
    models: Sequence[str] = ("glm",),
    test_days: float = 7.0,
    k: int = 10,
) -> str:
    if data.events.is_empty():
        raise FeedrankError("the store has no interactions to report on")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise FeedrankError(f"models must be among {sorted(MODELS)}; got {unknown}")
    names = list(dict.fromkeys([*models, "popularity"]))
    split = make_split(data, settings, "temporal", test_days=test_days)
    ev = evaluate({m: make(m) for m in names}, split, settings, k)
    table = ev.table()
    segs = [
        s
        for s in SEGMENTS
        if s in ("tenure", "activity")
        or s in data.users.columns
        or (s == "age_band" and "age" in data.users.columns)
    ]
    by_segment = ev.by_segment(user_segments(split, settings, segs))
    body = [
        "<h1>feedrank report</h1>",
        f"<p class='note'>Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC}; {data.users.height} users, "
        f"{data.items.height} items, {data.events.height} events.</p>",
        "<h2>Model comparison</h2>",
        f"<p><b>Split</b>: {html.escape(split.description)}</p>",
        table_html(table),
        f'<img src="{_model_bars(table, f"NDCG@{k}")}" alt="model comparison">',
        f'<img src="{_recall_histogram(ev)}" alt="hit-rate distribution">',
        "<h2>By segment</h2>",
        table_html(by_segment),
    ]
    if has_impressions(data) and split.examples is not None:
        cut, test_ex = split.at, split.examples
        glm = ev.models.get("glm")
        if not isinstance(glm, GLMRecommender):
            glm = GLMRecommender().fit(split.train, settings)
        y, p = test_ex["label"].to_numpy(), glm.predict_proba(split.data, test_ex)
        metrics = classification_metrics(y, p)
        body += [
            "<h2>GLM: calibration and coefficients</h2>",
            f"<p class='note'>Fitted on events before {cut.isoformat()}, judged on the {test_ex.height} "
            "impressions after it (features strictly point in time).</p>",
            table_html(pl.DataFrame({"metric": list(metrics), "value": list(metrics.values())})),
            f'<img src="{_calibration(y, p)}" alt="calibration curve">',
            f'<img src="{_coefficients(glm)}" alt="GLM coefficients">',
        ]
        experiments = (
            data.events.filter(pl.col("type") == "impression")
            .select(pl.col("context").str.json_path_match("$.experiment"))
            .to_series()
            .drop_nulls()
            .unique()
            .sort()
        )
        for name in experiments.to_list():
            rep = ab_report(data.events, name, settings)
            body += [
                f"<h2>A/B test: {html.escape(name)}</h2>",
                table_html(rep.ctr),
                f"<p>Difference of CTRs (users as the unit, delta method): p = "
                f"{rep.p_value:.4g} at a horizon fixed in advance; always-valid p = "
                f"{rep.p_always_valid:.4g} (valid however often the test was looked at).</p>"
                if rep.p_value is not None
                else "",
                table_html(rep.returns),
            ]
        ctr = served_ctr(data.events, settings)
        body += [
            "<h2>Click-through by served model and position</h2>",
            table_html(ctr),
            f'<img src="{_ctr_plot(ctr)}" alt="CTR by position">',
            *_offpolicy_section(data, settings, names, cut),
        ]
    return page("feedrank report", body)
