"""Offline evaluation of recommenders: splits, ranking and beyond-accuracy metrics, segments.

Splits (each printed with every number):
- temporal: fit on events before a cut, judge on what each user engaged with after it;
- last-N: per user, the N most recent distinct engaged items are hidden;
- leave-one-out: one engaged item per user hidden at random (seeded; evaluation.loo).
Ranking is over the full catalogue (items the user had not engaged with in training).
Beyond accuracy: catalogue coverage, novelty (mean self-information of recommended items),
intra-list diversity (mean pairwise distance of a list's items by their attributes) and
personalisation (1 - mean overlap between two users' lists)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from feedrank.config import Settings
from feedrank.data.site import SiteData
from feedrank.evaluation.loo import leave_one_out
from feedrank.evaluation.ranking import (
    hit_matrix,
    hit_rate_at_k,
    map_at_k,
    mean_metric,
    mrr,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)
from feedrank.exceptions import FeedrankError
from feedrank.features.groups import user_age_band
from feedrank.models.base import Recommender

SPLITS = ("temporal", "last", "loo")
NEW_USER_DAYS = 30
ACTIVITY_BUCKETS = (5, 20)  # past interactions: <5, 5-19, 20+


@dataclass(frozen=True)
class Split:
    kind: str
    train: SiteData
    test: pl.DataFrame  # user_id, item_id: what each evaluated user engaged with afterwards
    reference_time: datetime  # the time segments (tenure, activity) are measured at
    description: str
    items: pl.DataFrame  # the whole catalogue, for the attributes of held-out items


def _engagements(data: SiteData, settings: Settings) -> pl.DataFrame:
    return data.events.filter(
        pl.col("type").is_in(settings.engagement_types) & (pl.col("item_id") != "")
    )


def temporal_split(data: SiteData, settings: Settings, cut: datetime) -> Split:
    train = data.until(cut)
    seen = train.engaged_pairs(settings.engagement_types)
    later = (
        _engagements(data, settings)
        .filter(pl.col("timestamp") >= cut)
        .select("user_id", "item_id")
        .unique()
    )
    test = later.join(seen, on=["user_id", "item_id"], how="anti").sort("user_id", "item_id")
    if test.is_empty():
        raise FeedrankError(f"no new engagements at or after {cut.isoformat()} to evaluate on")
    new_items = test.join(train.items.select("item_id"), on="item_id", how="anti").height
    return Split(
        "temporal",
        train,
        test,
        cut,
        f"temporal: fitted on events before {cut.isoformat()}, judged on the {test.height} new "
        f"(user, item) engagements of {test['user_id'].n_unique()} users after it ({new_items} of "
        "them on items created after the cut, which no model fitted before it can rank); "
        "full ranking",
        data.items,
    )


def last_n_split(data: SiteData, settings: Settings, n: int = 1) -> Split:
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    first = (
        _engagements(data, settings).group_by("user_id", "item_id").agg(t=pl.col("timestamp").min())
    )
    ranked = first.with_columns(
        r=pl.col("t").rank("ordinal", descending=True).over("user_id"), m=pl.len().over("user_id")
    )
    hidden = (
        ranked.filter((pl.col("r") <= n) & (pl.col("m") > n))
        .select("user_id", "item_id")
        .sort("user_id", "item_id")
    )
    if hidden.is_empty():
        raise FeedrankError(f"no user has more than {n} distinct engaged items to hold out")
    events = data.events.join(hidden, on=["user_id", "item_id"], how="anti", maintain_order="left")
    last = data.time_span[1]
    assert last is not None
    return Split(
        "last",
        SiteData(data.users, data.items, events),
        hidden,
        last,
        f"per-user leave-last-{n}: each user's {n} most recent distinct engaged item(s) hidden "
        f"({hidden['user_id'].n_unique()} users with more than {n}); full ranking",
        data.items,
    )


def loo_split(data: SiteData, settings: Settings, seed: int = 0) -> Split:
    s = leave_one_out(data, settings, seed=seed)
    last = data.time_span[1]
    assert last is not None
    return Split("loo", s.train, s.hidden, last, s.describe(), data.items)


def make_split(
    data: SiteData, settings: Settings, kind: str, test_days: float = 7.0, n: int = 1, seed: int = 0
) -> Split:
    if kind == "temporal":
        last = data.time_span[1]
        if last is None:
            raise FeedrankError("the store has no events to split")
        return temporal_split(data, settings, last - timedelta(days=test_days))
    if kind == "last":
        return last_n_split(data, settings, n)
    if kind == "loo":
        return loo_split(data, settings, seed)
    raise FeedrankError(f"--split must be one of {list(SPLITS)}; got '{kind}'")


# -- metrics -----------------------------------------------------------------------------------


def ranking_metrics(recs: pl.DataFrame, split: Split, k: int) -> pl.DataFrame:
    """Per evaluated user: HR, precision, recall, NDCG, MAP at k and MRR."""
    users = split.test["user_id"].unique(maintain_order=True).to_list()
    depth = int(recs["rank"].cast(pl.Int64).max() or k) if recs.height else k  # type: ignore[arg-type]
    hits = hit_matrix(recs, split.test, users, max(depth, k))
    n_rel = split.test.group_by("user_id").agg(n=pl.len())
    n_relevant = (
        pl.DataFrame({"user_id": users})
        .join(n_rel, on="user_id", how="left", maintain_order="left")["n"]
        .to_numpy()
    )
    return pl.DataFrame(
        {
            "user_id": users,
            f"HR@{k}": hit_rate_at_k(hits, k),
            f"precision@{k}": precision_at_k(hits, k),
            f"recall@{k}": recall_at_k(hits, n_relevant, k),
            f"NDCG@{k}": ndcg_at_k(hits, n_relevant, k),
            f"MAP@{k}": map_at_k(hits, n_relevant, k),
            "MRR": mrr(hits),
        },
        schema_overrides={"user_id": pl.String},
    )


def item_vectors(items: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Item ids and unit-norm one-hot vectors of their categorical attributes (for diversity)."""
    cats = [
        c
        for c in items.columns
        if c not in ("item_id", "created_at")
        and items.schema[c] == pl.String
        and 1 < items[c].n_unique() <= 200
    ]
    if not cats:
        return items["item_id"].to_numpy(), np.eye(items.height)
    onehot = items.select(cats).to_dummies().to_numpy().astype(np.float64)
    return items["item_id"].to_numpy(), onehot / np.linalg.norm(onehot, axis=1, keepdims=True).clip(
        1e-12
    )


def beyond_accuracy(
    recs: pl.DataFrame,
    train: SiteData,
    settings: Settings,
    k: int,
    max_pairs: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    top = recs.filter(pl.col("rank") <= k)
    catalogue = train.items.height
    pop = _engagements(train, settings).group_by("item_id").agg(n=pl.len())
    total = float(pop["n"].sum()) or 1.0
    # Self-information of an item: -log2 of its share of engagement (unseen items: half an engagement).
    info = top.join(pop, on="item_id", how="left").with_columns(
        s=-(pl.col("n").fill_null(0.5) / total).log(2)
    )
    ids, vecs = item_vectors(train.items)
    index = pl.DataFrame(
        {"item_id": ids, "__i": np.arange(len(ids))}, schema={"item_id": pl.String, "__i": pl.Int64}
    )
    lists = top.join(index, on="item_id").group_by("user_id").agg(pl.col("__i"))
    ild = []
    for idx in lists["__i"].to_list():  # one small matrix per user list, not per event
        if len(idx) > 1:
            v = vecs[idx]
            sim = v @ v.T
            m = len(idx)
            ild.append(1.0 - (sim.sum() - np.trace(sim)) / (m * (m - 1)))
    # Personalisation: 1 - mean Jaccard overlap of two users' lists, over sampled pairs.
    sets = [set(x) for x in lists["__i"].to_list()]
    rng = np.random.default_rng(seed)
    overlaps = []
    if len(sets) > 1:
        a = rng.integers(0, len(sets), max_pairs)
        b = rng.integers(0, len(sets), max_pairs)
        for i, j in zip(a[a != b], b[a != b], strict=True):
            overlaps.append(len(sets[i] & sets[j]) / max(1, len(sets[i] | sets[j])))
    return {
        "coverage": top["item_id"].n_unique() / catalogue if catalogue else float("nan"),
        "novelty": float(info["s"].mean() or 0.0) if info.height else float("nan"),  # type: ignore[arg-type]
        "intra_list_diversity": float(np.mean(ild)) if ild else float("nan"),
        "personalisation": 1.0 - float(np.mean(overlaps)) if overlaps else float("nan"),
    }


# -- segments ----------------------------------------------------------------------------------


def user_segments(split: Split, settings: Settings, segment_by: Sequence[str]) -> pl.DataFrame:
    """user_id and one column per requested segment: tenure (new / long-term), activity
    (past interactions bucket), or any user attribute (age_band from age) or item attribute
    (of the held-out item: one row per user, its first held-out item)."""
    users = split.test.select("user_id").unique(maintain_order=True)
    out = users
    ev = split.train.events
    for seg in segment_by:
        if seg == "tenure":
            first = ev.group_by("user_id").agg(first=pl.col("timestamp").min())
            col = users.join(first, on="user_id", how="left", maintain_order="left").select(
                "user_id",
                tenure=pl.when(pl.col("first").is_null())
                .then(pl.lit("new (no history)"))
                .when(pl.col("first") > split.reference_time - timedelta(days=NEW_USER_DAYS))
                .then(pl.lit(f"new (<{NEW_USER_DAYS}d)"))
                .otherwise(pl.lit("long-term")),
            )
        elif seg == "activity":
            lo, hi = ACTIVITY_BUCKETS
            n = ev.group_by("user_id").agg(n=pl.len())
            col = users.join(n, on="user_id", how="left", maintain_order="left").select(
                "user_id",
                activity=pl.when(pl.col("n").fill_null(0) < lo)
                .then(pl.lit(f"<{lo}"))
                .when(pl.col("n") < hi)
                .then(pl.lit(f"{lo}-{hi - 1}"))
                .otherwise(pl.lit(f"{hi}+")),
            )
        elif (
            seg == "age_band"
            and (band := user_age_band(split.train.users, settings.age_bands)) is not None
        ):
            col = users.join(
                split.train.users.select("user_id", band),
                on="user_id",
                how="left",
                maintain_order="left",
            )
        elif seg in split.train.users.columns:
            col = users.join(
                split.train.users.select("user_id", pl.col(seg).cast(pl.String)),
                on="user_id",
                how="left",
                maintain_order="left",
            )
        elif seg in split.items.columns:
            held = (
                split.test.group_by("user_id", maintain_order=True)
                .first()
                .join(
                    split.items.select("item_id", pl.col(seg).cast(pl.String)),
                    on="item_id",
                    how="left",
                )
            )
            col = users.join(
                held.select("user_id", seg), on="user_id", how="left", maintain_order="left"
            )
        else:
            raise FeedrankError(
                "--segment-by must be tenure, activity, or a user or item attribute "
                f"{sorted(set(split.train.users.columns) | set(split.items.columns) - {'user_id', 'item_id'})}; got '{seg}'"
            )
        out = out.join(
            col.with_columns(pl.col(seg).fill_null("(missing)")),
            on="user_id",
            how="left",
            maintain_order="left",
        )
    return out


def sampled_metrics(
    model: Recommender, split: Split, settings: Settings, n_negatives: int, k: int, seed: int = 0
) -> dict[str, float]:
    """The sampled-negatives protocol, only on request: each held-out (user, item) is ranked
    among `n_negatives` items drawn at random (seeded) from those the user never engaged with.
    Much easier than full ranking, so its numbers are higher and not comparable to it."""
    rng = np.random.default_rng(seed)
    items = split.train.items["item_id"].to_numpy()
    engaged = pl.concat([split.train.engaged_pairs(settings.engagement_types), split.test]).unique()
    pairs = split.test.with_row_index("pair")
    draws = rng.integers(0, len(items), (pairs.height, n_negatives * 2))  # spare draws for rejects
    neg = (
        pl.DataFrame(
            {
                "pair": np.repeat(pairs["pair"].to_numpy(), draws.shape[1]),
                "item_id": items[draws.ravel()],
            },
            schema={"pair": pl.UInt32, "item_id": pl.String},
        )
        .join(pairs.select("pair", "user_id"), on="pair")
        .join(engaged, on=["user_id", "item_id"], how="anti", maintain_order="left")
        .group_by("pair", maintain_order=True)
        .head(n_negatives)
    )
    ranks = np.zeros(pairs.height, dtype=np.int64)
    for (user,), group in pairs.group_by("user_id", maintain_order=True):  # one score() per user
        mine = neg.filter(pl.col("pair").is_in(group["pair"].implode()))
        cand = np.unique(np.concatenate([group["item_id"].to_numpy(), mine["item_id"].to_numpy()]))
        score = dict(zip(cand, model.score([str(user)], cand)[0], strict=True))
        for pair, pos in group.select("pair", "item_id").iter_rows():
            negs = mine.filter(pl.col("pair") == pair)["item_id"].to_numpy()
            ranks[pair] = int(sum(score[x] >= score[pos] for x in negs))  # ties count against
    return {
        f"sampled HR@{k}": float(np.mean(ranks < k)),
        f"sampled NDCG@{k}": float(np.mean(np.where(ranks < k, 1 / np.log2(ranks + 2), 0.0))),
        "sampled MRR": float(np.mean(1 / (ranks + 1))),
    }


@dataclass
class Evaluation:
    split: Split
    k: int
    per_user: dict[str, pl.DataFrame]  # model -> per-user ranking metrics
    beyond: dict[str, dict[str, float]]  # model -> beyond-accuracy metrics
    sampled: dict[str, dict[str, float]] | None = None  # model -> sampled-negatives metrics

    def table(self) -> pl.DataFrame:
        rows = []
        for name, frame in self.per_user.items():
            metrics = {c: mean_metric(frame[c].to_numpy()) for c in frame.columns if c != "user_id"}
            rows.append({"model": name, "users": frame.height, **metrics, **self.beyond[name]})
        return pl.DataFrame(rows)

    def by_segment(self, segments: pl.DataFrame) -> pl.DataFrame:
        """Mean metrics per model and segment value."""
        parts = []
        for seg in [c for c in segments.columns if c != "user_id"]:
            for name, frame in self.per_user.items():
                joined = frame.join(segments.select("user_id", seg), on="user_id")
                metrics = [c for c in frame.columns if c != "user_id"]
                g = joined.group_by(seg).agg(
                    pl.len().alias("users"), *[pl.col(c).mean() for c in metrics]
                )
                parts.append(
                    g.rename({seg: "value"}).with_columns(segment=pl.lit(seg), model=pl.lit(name))
                )
        if not parts:
            return pl.DataFrame()
        out = pl.concat(parts, how="diagonal_relaxed")
        return out.select(
            "segment", "value", "model", pl.exclude("segment", "value", "model")
        ).sort("segment", "value", "model")


def evaluate_models(
    models: dict[str, Recommender],
    split: Split,
    settings: Settings,
    k: int = 10,
    sampled: int | None = None,
) -> Evaluation:
    """Fit every model on the split's training data and rank the full catalogue for its users."""
    users = split.test["user_id"].unique(maintain_order=True).to_list()
    per_user, beyond, samp = {}, {}, {}
    for name, model in models.items():
        model.fit(split.train, settings)
        recs = model.recommend(users, k=k, exclude_seen=True)
        per_user[name] = ranking_metrics(recs, split, k)
        beyond[name] = beyond_accuracy(recs, split.train, settings, k)
        if sampled:
            samp[name] = sampled_metrics(model, split, settings, sampled, k)
    return Evaluation(split, k, per_user, beyond, samp or None)
