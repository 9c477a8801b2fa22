"""Seeded leave-one-out hold-out for implicit data without usable timestamps (seed 004's forms).

The split: among the distinct (user, item) engagements, every user with at least `min_items`
distinct items has exactly one of them hidden, chosen uniformly at random with a seeded generator
(pairs are sorted first, so the choice depends on the seed and the data only). Every event of a
hidden pair is removed from training; the catalogue (items) is kept whole. A model is fitted on
the rest and asked for a full ranking of the items the user did not engage with in training; the
hidden item's position in it gives the metrics. Nothing is ever measured in-sample.

Per user (k = 10 by default):
- item HR@k, NDCG@k, MRR: the hidden item in the ranking (feedrank.evaluation.ranking);
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

from feedrank.config import Settings
from feedrank.data.site import SiteData
from feedrank.evaluation.ranking import (
    hit_matrix,
    hit_rate_at_k,
    mean_metric,
    mrr,
    ndcg_at_k,
)
from feedrank.exceptions import FeedrankError
from feedrank.features.history import History
from feedrank.models.base import Recommender


@dataclass(frozen=True)
class LeaveOneOut:
    data: SiteData  # everything (the reference for strongest items)
    train: SiteData  # without the hidden pairs
    hidden: pl.DataFrame  # user_id, item_id: one row per eligible user
    seed: int
    min_items: int
    n_pairs: int

    def describe(self) -> str:
        return (
            f"seeded leave-one-out (seed {self.seed}): one item hidden per user with >= "
            f"{self.min_items} distinct items ({self.hidden.height} users, {self.hidden.height} of "
            f"{self.n_pairs} user-item pairs hidden); models fitted on the rest; full ranking over "
            "the items each user did not engage with in training"
        )


def leave_one_out(
    data: SiteData, settings: Settings, seed: int = 0, min_items: int = 2
) -> LeaveOneOut:
    if min_items < 2:
        raise ValueError(
            f"min_items must be >= 2 (a user keeps one item to learn from); got {min_items}"
        )
    pairs = data.engaged_pairs(settings.engagement_types).sort("user_id", "item_id")
    if pairs.is_empty():
        raise FeedrankError(
            f"no engagements of types {list(settings.engagement_types)} to hold out"
        )
    rng = np.random.default_rng(seed)
    keyed = pairs.with_columns(
        __key=pl.Series(rng.random(pairs.height)),
        __n=pl.len().over("user_id"),
    )
    hidden = (
        keyed.filter(pl.col("__n") >= min_items)
        .sort("user_id", "__key")
        .group_by("user_id", maintain_order=True)
        .first()
        .select("user_id", "item_id")
    )
    if hidden.is_empty():
        raise FeedrankError(f"no user has >= {min_items} distinct items to hold one out")
    events = data.events.join(hidden, on=["user_id", "item_id"], how="anti", maintain_order="left")
    train = SiteData(data.users, data.items, events)
    return LeaveOneOut(data, train, hidden, seed, min_items, pairs.height)


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
    ev = History(data, settings, []).events.filter(pl.col("engaged"))
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

    def metrics(self) -> dict[str, float]:
        p = self.per_user
        return {
            "HR@10": mean_metric(p["hit"].to_numpy()),
            "NDCG@10": mean_metric(p["ndcg"].to_numpy()),
            "MRR": mean_metric(p["rr"].to_numpy()),
            "BU hit rate": mean_metric(p["bu_hit_rate"].to_numpy()),
            "top hit rate": mean_metric(p["top_hit_rate"].to_numpy()),
        }


def evaluate(
    model: Recommender,
    split: LeaveOneOut,
    settings: Settings,
    k: int = 10,
    unit_column: str = "business_units",
) -> pl.DataFrame:
    """Per-user results of a model fitted on split.train (never on the hidden pairs)."""
    users = split.hidden["user_id"].to_list()
    n_items = split.train.items.height
    recs = model.recommend(users, k=n_items, exclude_seen=True)
    hits = hit_matrix(recs, split.hidden, users, n_items)
    rank = np.where(hits.any(axis=1), np.argmax(hits, axis=1) + 1, 0)
    units = item_units(split.data.items, unit_column)
    strongest = strongest_items(split.data, settings)
    return pl.DataFrame(
        {
            "user_id": users,
            "hidden": split.hidden["item_id"].to_list(),
            "rank": rank,
            "hit": hit_rate_at_k(hits, k),
            "ndcg": ndcg_at_k(hits, np.ones(len(users)), k),
            "rr": mrr(hits),
            "bu_hit_rate": unit_share(recs, split.hidden, units, users, k),
            "top_hit_rate": unit_share(recs, strongest, units, users, k),
        },
        schema_overrides={"user_id": pl.String, "hidden": pl.String, "rank": pl.Int64},
    )


def fit_and_evaluate(
    name: str,
    factory: Callable[[], Recommender],
    split: LeaveOneOut,
    settings: Settings,
    k: int = 10,
    note: str = "",
) -> ModelResult:
    model = factory()
    t0 = time.perf_counter()
    model.fit(split.train, settings)
    seconds = time.perf_counter() - t0
    params = {key: v for key, v in vars(model).items() if not key.endswith("_")}
    per_user = evaluate(model, split, settings, k)
    return ModelResult(name, model.kind, params, per_user, seconds, note, {"model": model})


def tune(
    factory: Callable[..., Recommender],
    grid: Sequence[dict[str, Any]],
    train: SiteData,
    settings: Settings,
    seed: int,
    objective: Callable[[dict[str, float]], float] = lambda m: m["HR@10"],
    k: int = 10,
    folds: int = 3,
) -> tuple[dict[str, Any], pl.DataFrame]:
    """Pick parameters on validation leave-one-outs carved from the TRAINING data only (one more
    item hidden per user with >= 2 training items; `folds` of them, seeds seed + 1000, + 1001,
    ...): the test hold-out is never looked at. The metrics are averaged over the folds (one
    random hold-out of a few hundred users is a noisy judge) and `objective` maps them to the
    number to maximise. Returns the best parameters and the validation table."""
    if not grid:
        raise ValueError("grid must hold at least one parameter set; got none")
    if folds < 1:
        raise ValueError(f"folds must be >= 1; got {folds}")
    inners = [leave_one_out(train, settings, seed=seed + 1000 + f) for f in range(folds)]
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


def comparison_table(results: Sequence[ModelResult], baseline: str = "popularity") -> pl.DataFrame:
    """One row per model, the metrics side by side, and HR@10 relative to the baseline."""
    rows = []
    base = next((r.metrics()["HR@10"] for r in results if r.name == baseline), float("nan"))
    for r in results:
        m = r.metrics()
        rows.append(
            {
                "model": r.name,
                **m,
                "HR@10 vs popularity": m["HR@10"] - base,
                "BU users": int(r.per_user["bu_hit_rate"].is_not_nan().sum()),
                "fit s": round(r.fit_seconds, 2),
                "params": r.note,
            }
        )
    return pl.DataFrame(rows)
