"""Models: the registry with held-out metrics beside popularity, champion/challenger history;
per model, its metrics by user segment, its calibration plot and (GLM) its coefficients with
intervals. Everything comes from what training stored in the registry: no model is evaluated
on a page view (a GLM is loaded once for its coefficients when its CSV is missing)."""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from feedrank.api.dashboard import svg
from feedrank.api.dashboard.data import Dashboard
from feedrank.api.dashboard.layout import empty, link, note, panel, table
from feedrank.api.runtime import Runtime
from feedrank.exceptions import NotFoundError
from feedrank.models.glm import GLMRecommender
from feedrank.pipeline.registry import ModelRecord

TOP_COEFFICIENTS = 25
Z95 = 1.959963984540054


def _label(rec: ModelRecord) -> str:
    return f"{rec.name}/{rec.version}"


def _k(rec: ModelRecord) -> int:
    split = rec.meta.get("split") or {}
    return int(split.get("k") or 10)


def metric_sets(rec: ModelRecord) -> dict[str, dict[str, Any]]:
    """Held-out metrics as {column label: {metric: value}}: `feedrank train` stores
    {model: {...}, popularity: {...}}; `feedrank retrain` {set: {challenger: {...}, ...}}."""
    raw = rec.meta.get("metrics") or {}
    out: dict[str, dict[str, Any]] = {}
    for name, values in raw.items():
        if not isinstance(values, dict):
            continue
        if values and all(isinstance(v, dict) for v in values.values()):
            for who, inner in values.items():
                out[f"{who} ({name})"] = inner
        else:
            out["this model" if name == rec.kind else name] = values
    return out


def _diagnostics(rec: ModelRecord) -> dict[str, Any]:
    """What `feedrank train` stored beside the metrics (pipeline.train.TrainResult.diagnostics)."""
    got = rec.meta.get("diagnostics")
    return got if isinstance(got, dict) else {}


def _headline(rec: ModelRecord) -> dict[str, Any]:
    k = _k(rec)
    sets = metric_sets(rec)
    mine = sets.get("this model") or next(iter(sets.values()), {})
    pop = sets.get("popularity", {})
    return {
        f"NDCG@{k}": mine.get(f"NDCG@{k}"),
        f"pop NDCG@{k}": pop.get(f"NDCG@{k}"),
        f"recall@{k}": mine.get(f"recall@{k}"),
        f"pop recall@{k}": pop.get(f"recall@{k}"),
        "AUC": mine.get("roc_auc"),
    }


def _records(rt: Runtime, dash: Dashboard) -> list[ModelRecord]:
    return dash.cache.get("registry", rt.registry.list)


def build_list(rt: Runtime, dash: Dashboard) -> list[str]:
    records = _records(rt, dash)
    if not records:
        return [
            panel(
                empty(
                    "No trained model in the registry", "feedrank train --model glm --test-days 7"
                )
            )
        ]
    champion = dash.cache.get("champion", rt.registry.champion)
    champ = _label(champion) if champion else None
    rows = []
    for rec in sorted(records, key=lambda r: r.version, reverse=True):
        split = rec.meta.get("split") or {}
        rows.append(
            {
                "model": link(f"/models/{_label(rec)}", _label(rec)),
                "kind": rec.kind,
                "champion": _label(rec) == champ,
                "serving": _label(rec) == rt.state.label,
                **_headline(rec),
                "split": split.get("description") or rec.meta.get("engine", ""),
                "not promoted by retrain because": "; ".join(rec.meta.get("retrain_reasons") or []),
            }
        )
    if not any(r["not promoted by retrain because"] for r in rows):
        for r in rows:
            del r["not promoted by retrain because"]
    body = [
        panel(
            "<h2>Registry</h2>",
            note(
                "Held-out metrics as stored by `feedrank train` (each beside popularity fitted on "
                "the same training data, judged on the same split); the champion row is shaded."
            ),
            table(rows, raw=["model"], highlight="champion"),
        )
    ]
    charted = [r for r in records if _headline(r)[f"NDCG@{_k(r)}"] is not None]
    if charted:
        labels = [_label(r).split("/")[0] + " " + r.version[4:13] for r in charted]
        heads = [_headline(r) for r in charted]
        body.append(
            panel(
                svg.grouped_bars(
                    "registry-ndcg",
                    "NDCG on the held-out split: each model beside popularity",
                    labels,
                    {
                        "model": [h[f"NDCG@{_k(r)}"] for h, r in zip(heads, charted, strict=True)],
                        "popularity": [
                            h[f"pop NDCG@{_k(r)}"] for h, r in zip(heads, charted, strict=True)
                        ],
                    },
                    "NDCG",
                )
            )
        )
    body.append(panel("<h2>Champion history</h2>", _history(rt, dash)))
    return body


def _history(rt: Runtime, dash: Dashboard, only: str | None = None) -> str:
    history = dash.cache.get("champion-history", rt.registry.champion_history)
    rows = [
        {"promoted at": h.get("at", ""), "model": h.get("model", ""), "reason": h.get("reason", "")}
        for h in reversed(history)
        if only is None or h.get("model") == only
    ]
    if not rows:
        return empty(
            "No model was ever promoted" if only is None else "This model was never champion",
            "feedrank models promote NAME/VERSION",
        )
    return table(rows)


def find(rt: Runtime, dash: Dashboard, name: str) -> ModelRecord:
    """A name (its newest version) or name/version; 404 naming the known models (and no path)."""
    records = _records(rt, dash)
    found = [r for r in records if name in (r.name, _label(r))]
    if not found:
        known = sorted({r.name for r in records})
        raise NotFoundError(f"model must be one of {known} (or NAME/VERSION); got '{name}'")
    return max(found, key=lambda r: r.version)


def build_one(rt: Runtime, dash: Dashboard, name: str) -> list[str]:
    rec = find(rt, dash, name)
    label = _label(rec)
    split = rec.meta.get("split") or {}
    sets = metric_sets(rec)
    body = [
        note(
            f"kind {rec.kind}; trained {rec.version}; parent champion {rec.meta.get('parent') or '-'}; "
            f"split: {split.get('description') or 'none stored'}"
        ),
        link("/users", "Inspect a user with this model", model=label),
    ]
    if sets:
        metrics = sorted({m for values in sets.values() for m in values if m != "fit_s"})
        rows = [{"metric": m, **{s: sets[s].get(m) for s in sets}} for m in metrics]
        body.append(panel("<h2>Held-out metrics beside popularity</h2>", table(rows)))
    else:
        body.append(
            panel(
                empty(
                    "No held-out metrics stored with this model",
                    "feedrank evaluate --model " + rec.kind,
                )
            )
        )
    body.append(_segments(rec))
    curves = _diagnostics(rec).get("calibration") or {}
    if curves:
        body.append(
            panel(
                svg.calibration(
                    "calibration",
                    "Calibration on the held-out impressions (predicted vs observed click rate)",
                    {("this model" if m == rec.kind else m): c for m, c in curves.items()},
                ),
                note(
                    "Dots: bins of predicted probability; their area follows the examples in them."
                ),
            )
        )
    else:
        body.append(
            panel(
                "<h2>Calibration</h2>",
                empty(
                    "No calibration stored: the model predicts no probabilities, or was trained "
                    "before the dashboard",
                    "feedrank train --model glm --test-days 7",
                ),
            )
        )
    if rec.kind == "glm":
        body.append(_coefficients(rt, dash, rec))
    body.append(panel("<h2>Champion history of this model</h2>", _history(rt, dash, label)))
    return body


def _segments(rec: ModelRecord) -> str:
    rows = _diagnostics(rec).get("segments") or []
    if not rows:
        return panel(
            "<h2>By segment</h2>",
            empty(
                "No segment metrics stored with this model (trained before the dashboard, or "
                "by retrain)",
                f"feedrank train --model {rec.kind} --test-days 7",
            ),
        )
    k = _k(rec)
    metric, recall = f"NDCG@{k}", f"recall@{k}"
    frame = pl.DataFrame(rows, infer_schema_length=None)
    models = frame["model"].unique(maintain_order=True).to_list()

    def name(m: str) -> str:
        return "this model" if m == rec.kind else m

    keys = frame.select("segment", "value", "users").unique(["segment", "value"], keep="first")
    wide = keys
    for m in models:
        mine = frame.filter(pl.col("model") == m).select(
            "segment",
            "value",
            pl.col(metric).alias(f"{metric} {name(m)}"),
            pl.col(recall).alias(f"{recall} {name(m)}"),
        )
        wide = wide.join(mine, on=["segment", "value"], how="left")
    wide = wide.sort("segment", "value")
    charts = []
    for (segment,), g in wide.group_by("segment", maintain_order=True):
        charts.append(
            svg.grouped_bars(
                f"segment-{segment}",
                f"{metric} by {segment}",
                [str(v) for v in g["value"]],
                {name(m): [_finite(v) for v in g[f"{metric} {name(m)}"].to_list()] for m in models},
                metric,
                width=460,
            )
        )
    return panel(
        "<h2>By segment</h2>",
        note(
            "Held-out metrics per user segment: tenure (new vs long-term users), age band, gender, "
            "country; 'users' counts the held-out users in each."
        ),
        "<div class='grid2'>",
        *charts,
        "</div>",
        table(wide),
    )


def _finite(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def coefficient_frame(rt: Runtime, rec: ModelRecord) -> pl.DataFrame:
    csv = rec.path / "coefficients.csv"
    if csv.exists():
        table_ = pl.read_csv(csv)
    else:
        served = rt.state.served_for(_label(rec), rt.registry)
        if not isinstance(served.model, GLMRecommender):
            return pl.DataFrame()
        table_ = served.model.coef_table()
    return table_.with_columns(
        low=pl.col("coefficient") - Z95 * pl.col("std_error"),
        high=pl.col("coefficient") + Z95 * pl.col("std_error"),
    )


def _coefficients(rt: Runtime, dash: Dashboard, rec: ModelRecord) -> str:
    coef = dash.cache.get(("coef", _label(rec)), lambda: coefficient_frame(rt, rec), max_age=3600)
    if coef.is_empty():
        return panel("<h2>GLM coefficients</h2>", empty("No coefficients could be read"))
    top = (
        coef.filter(pl.col("feature") != "intercept")
        .with_columns(a=pl.col("coefficient").abs())
        .sort("a", descending=True)
        .head(TOP_COEFFICIENTS)
        .sort("coefficient", descending=True)
    )
    chart = svg.intervals(
        "coefficients",
        f"The {top.height} largest GLM coefficients (log-odds, 95% intervals)",
        top["feature"].to_list(),
        top["coefficient"].to_list(),
        top["low"].fill_null(float("nan")).to_list(),
        top["high"].fill_null(float("nan")).to_list(),
    )
    shown = coef.select(
        "feature", "coefficient", "std_error", "low", "high", "p_value", "odds_ratio"
    ).rename({"low": "95% low", "high": "95% high"})
    return panel(
        "<h2>GLM coefficients</h2>",
        note(
            f"{coef.height} coefficients; intervals are coefficient ± 1.96 standard errors "
            f"({int((coef['p_value'] < 0.05).sum())} of them with p below 0.05)."
        ),
        chart,
        "<details><summary>The whole table</summary>",
        table(shown),
        "</details>",
    )
