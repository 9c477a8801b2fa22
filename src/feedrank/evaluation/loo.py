"""Seed 004's evaluation on a seeded leave-one-out hold-out (feedrank.evaluation.splits.
loo_split), for implicit data without usable timestamps: the harness's ranking
(feedrank.evaluation.offline) plus the seed's business-unit measures, tuning on validation
hold-outs carved from the training data, and the comparison table.

Per user (k = 10 by default):
- item HR@k, NDCG@k, MRR: the hidden item in the full ranking;
- business-unit hit rate: the share of the top k whose units meet the hidden item's units
  (an item may have several units; a recommended item without a unit never matches). Users whose
  hidden item has no unit are left out of this mean (their count is reported);
- top hit rate (the seed's "top hit"): the share of the top k whose units meet the units of the
  user's strongest items, i.e. the item(s) of maximal weighted engagement (type weight x
  attribute weight x value: the seed's event_strength) over the user's whole history, the
  hidden item included. It asks whether the list stays in the units the user cares most about;
  unlike the business-unit hit rate its reference usually includes training items (the model
  never sees the hidden one, and seen items are never recommended).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import polars as pl

from feedrank.evaluation.offline import rank_users
from feedrank.evaluation.ranking import mean_metric
from feedrank.evaluation.splits import Split, loo_split
from feedrank.features.history import weighted
from feedrank.models.base import Recommender
from feedrank.settings import Settings
from feedrank.views.site import SiteData

K = 10


def item_units(items: pl.DataFrame, column: str = "business_units") -> pl.DataFrame:
    """(item_id, unit) rows from a pipe-joined units column (or a single-unit column)."""
    if column not in items.columns:
        return pl.DataFrame(schema={"item_id": pl.String, "unit": pl.String})
    return (
        items.select("item_id", unit=pl.col(column).cast(pl.String).str.split("|"))
        .explode("unit")
        .filter(pl.col("unit").is_not_null() & (pl.col("unit") != ""))
    )


def strongest_items(data: SiteData, settings: Settings) -> pl.DataFrame:
    """(user_id, item_id) of each user's item(s) of maximal weighted engagement (ties kept)."""
    ev = weighted(data.events, data.items, settings, data.types).filter(pl.col("engaged") > 0)
    w = ev.group_by("user_id", "item_id").agg(pl.col("weight").sum())
    return w.filter(pl.col("weight") == pl.col("weight").max().over("user_id")).select(
        "user_id", "item_id"
    )


def unit_share(
    recs: pl.DataFrame, reference: pl.DataFrame, units: pl.DataFrame, users: Sequence[str], k: int
) -> np.ndarray:
    """Per user: share of the top k whose units meet the units of the reference items; NaN for
    users whose reference items have no unit."""
    ref_units = reference.join(units, on="item_id").select("user_id", "unit").unique()
    matched = (
        recs.filter(pl.col("rank") <= k)
        .join(units, on="item_id")
        .join(ref_units, on=["user_id", "unit"])
        .select("user_id", "rank")
        .unique()
        .group_by("user_id")
        .agg(n=pl.len())
    )
    frame = (
        pl.DataFrame({"user_id": list(users)}, schema={"user_id": pl.String})
        .join(matched, on="user_id", how="left", maintain_order="left")
        .join(
            ref_units.select("user_id").unique().with_columns(has=pl.lit(True)),
            on="user_id",
            how="left",
            maintain_order="left",
        )
    )
    share = frame["n"].fill_null(0).to_numpy() / float(k)
    return np.where(frame["has"].fill_null(False).to_numpy(), share, np.nan)


@dataclass
class ModelResult:
    name: str
    kind: str
    params: dict[str, Any]
    per_user: pl.DataFrame  # user_id, hidden, rank, hit, ndcg, rr, bu_hit_rate, top_hit_rate
    fit_seconds: float
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    k: int = K

    def metrics(self) -> dict[str, float]:
        p = self.per_user
        return {
            f"HR@{self.k}": mean_metric(p["hit"].to_numpy()),
            f"NDCG@{self.k}": mean_metric(p["ndcg"].to_numpy()),
            "MRR": mean_metric(p["rr"].to_numpy()),
            "BU hit rate": mean_metric(p["bu_hit_rate"].to_numpy()),
            "top hit rate": mean_metric(p["top_hit_rate"].to_numpy()),
        }


def evaluate(
    model: Recommender,
    split: Split,
    settings: Settings,
    k: int = K,
    unit_column: str = "business_units",
) -> pl.DataFrame:
    """Per-user results of a model fitted on split.train (never on the hidden pairs): the
    harness's ranking (feedrank.evaluation.offline) plus the seed's unit hit rates."""
    ranked = rank_users(model.at(split.view(settings)), split, k)
    users = split.users
    per_user = ranked.per_user
    recs = ranked.recs
    hidden = split.test.group_by("user_id", maintain_order=True).first()
    units = item_units(split.data.items, unit_column)
    strongest = strongest_items(split.data, settings)
    frame = pl.DataFrame({"user_id": users}, schema={"user_id": pl.String}).join(
        hidden.rename({"item_id": "hidden"}), on="user_id", how="left", maintain_order="left"
    )
    # The hidden item's place in the full ranking (MRR = 1 / rank; 0: the model has no signal
    # for it), not only within the top k.
    rr = per_user["MRR"].to_numpy()
    with np.errstate(divide="ignore"):
        rank = np.where(rr > 0, np.rint(1.0 / rr), 0).astype(np.int64)
    return pl.DataFrame(
        {
            "user_id": users,
            "hidden": frame["hidden"],
            "rank": rank,
            "hit": per_user[f"HR@{k}"],
            "ndcg": per_user[f"NDCG@{k}"],
            "rr": per_user["MRR"],
            "bu_hit_rate": unit_share(recs, split.test, units, users, k),
            "top_hit_rate": unit_share(recs, strongest, units, users, k),
        },
        schema_overrides={"user_id": pl.String, "hidden": pl.String, "rank": pl.Int64},
    )


def fit_and_evaluate(
    name: str,
    factory: Callable[[], Recommender],
    split: Split,
    settings: Settings,
    k: int = K,
    note: str = "",
) -> ModelResult:
    model = factory()
    t0 = time.perf_counter()
    model.fit(split.train, settings)
    seconds = time.perf_counter() - t0
    per_user = evaluate(model, split, settings, k)
    return ModelResult(
        name, model.kind, model.get_params(), per_user, seconds, note, {"model": model}, k
    )


def tune(
    factory: Callable[..., Recommender],
    grid: Sequence[dict[str, Any]],
    train: SiteData,
    settings: Settings,
    seed: int,
    objective: Callable[[dict[str, float]], float] | None = None,
    k: int = K,
    folds: int = 3,
) -> tuple[dict[str, Any], pl.DataFrame]:
    """Pick parameters on validation leave-one-outs carved from the TRAINING data only (one more
    item hidden per user with >= 2 training items; `folds` of them, seeds seed + 1000, + 1001,
    ...): the test hold-out is never looked at. The metrics are averaged over the folds (one
    random hold-out of a few hundred users is a noisy judge) and `objective` maps them to the
    number to maximise (default: HR@k). Returns the best parameters and the validation table."""
    if not grid:
        raise ValueError("grid must hold at least one parameter set; got none")
    if folds < 1:
        raise ValueError(f"folds must be >= 1; got {folds}")
    if objective is None:
        objective = partial(_hit_rate, k=k)
    inners = [loo_split(train, settings, seed=seed + 1000 + f) for f in range(folds)]
    rows, scores = [], []
    for params in grid:
        per_fold = [
            fit_and_evaluate("validation", partial(factory, **params), inner, settings, k).metrics()
            for inner in inners
        ]
        m = {n: float(np.mean([fm[n] for fm in per_fold])) for n in per_fold[0]}
        scores.append(objective(m))
        rows.append(
            {
                "params": str(params),
                **{f"val {n}": v for n, v in m.items()},
                "objective": scores[-1],
            }
        )
    return dict(grid[int(np.argmax(scores))]), pl.DataFrame(rows)


def _hit_rate(m: dict[str, float], k: int) -> float:
    return m[f"HR@{k}"]


def comparison_table(results: Sequence[ModelResult], baseline: str = "popularity") -> pl.DataFrame:
    """One row per model, the metrics side by side, and HR@k relative to the baseline."""
    rows = []
    hr = f"HR@{results[0].k}" if results else f"HR@{K}"
    base = next((r.metrics()[hr] for r in results if r.name == baseline), float("nan"))
    for r in results:
        m = r.metrics()
        rows.append(
            {
                "model": r.name,
                **m,
                f"{hr} vs popularity": m[hr] - base,
                "BU users": int(r.per_user["bu_hit_rate"].is_not_nan().sum()),
                "fit s": round(r.fit_seconds, 2),
                "params": r.note,
            }
        )
    return pl.DataFrame(rows)
