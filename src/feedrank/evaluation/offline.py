"""The one offline evaluation harness: every model fitted on a split's training data, served
from the split's view, judged on its held-out engagements — ranking over the full catalogue,
beside popularity — and, for models that predict probabilities, on labelled held-out examples.

Ranking metrics at k (HR, precision, recall, NDCG, MAP) come from the top-k lists a user would
get; MRR from the held-out items' ranks in the full catalogue (an item the model has no signal
for is not ranked). Beyond accuracy: catalogue coverage, novelty (mean self-information of
recommended items), intra-list diversity (mean pairwise distance of a list's items by their
categorical attributes; memory follows the lists, not the catalogue) and personalisation
(1 - mean overlap between two users' lists). Probabilities: ROC-AUC, log loss, calibration;
popularity's probability is each item's smoothed positive rate among the training examples."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from feedrank.evaluation.metrics import classification_metrics, reliability_curve
from feedrank.evaluation.ranking import (
    hit_matrix,
    hit_rate_at_k,
    map_at_k,
    mean_metric,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)
from feedrank.evaluation.splits import Split
from feedrank.exceptions import FeedrankError
from feedrank.features.examples import build_examples
from feedrank.features.groups import user_age_band
from feedrank.features.history import T
from feedrank.models.base import Recommender, Scorer, seen_mask, top_k
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import FrameView

NEW_USER_DAYS = 30
ACTIVITY_BUCKETS = (5, 20)  # past interactions: <5, 5-19, 20+
SCORE_CELLS = 20_000_000  # users x items scored at once
SMOOTHING = 10.0  # pseudo-examples in popularity's per-item positive rate


@dataclass
class Ranked:
    """A model's answers to a split's users: the top-k lists and each user's metrics."""

    recs: pl.DataFrame  # user_id, rank, item_id, score
    per_user: pl.DataFrame  # user_id, HR@k, precision@k, recall@k, NDCG@k, MAP@k, MRR


def rank_users(scorer: Scorer, split: Split, k: int) -> Ranked:
    """Top-k lists and per-user metrics over the view's full catalogue, a block of users at a
    time (one read of their histories, one score block)."""
    users = split.users
    items = scorer.view.candidates()
    col = pl.DataFrame({"item_id": items}, schema={"item_id": pl.String}).with_row_index("__i")
    test = split.test.join(col, on="item_id", how="left")
    step = max(1, SCORE_CELLS // max(len(items), 1))
    recs, best = [], []
    for s in range(0, len(users), step):
        batch = users[s : s + step]
        hist = scorer.view.histories(batch)
        S = scorer.score_users(batch, hist, items).astype(np.float64, copy=True)
        S[~np.isfinite(S)] = -np.inf
        S[seen_mask(hist, batch, items)] = -np.inf
        recs.append(top_k(batch, items, S, k))
        best.append(_best_ranks(S, batch, test))
    top = pl.concat(recs) if recs else pl.DataFrame()
    hits = hit_matrix(top, split.test, users, k)
    n_rel = (
        pl.DataFrame({"user_id": users}, schema={"user_id": pl.String})
        .join(
            split.test.group_by("user_id").agg(n=pl.len()),
            on="user_id",
            how="left",
            maintain_order="left",
        )["n"]
        .to_numpy()
    )
    rank = np.concatenate(best) if best else np.zeros(0)
    per_user = pl.DataFrame(
        {
            "user_id": users,
            f"HR@{k}": hit_rate_at_k(hits, k),
            f"precision@{k}": precision_at_k(hits, k),
            f"recall@{k}": recall_at_k(hits, n_rel, k),
            f"NDCG@{k}": ndcg_at_k(hits, n_rel, k),
            f"MAP@{k}": map_at_k(hits, n_rel, k),
            "MRR": np.where(np.isfinite(rank), 1.0 / rank, 0.0),
        },
        schema_overrides={"user_id": pl.String},
    )
    return Ranked(top, per_user)


def _best_ranks(S: np.ndarray, batch: list[str], test: pl.DataFrame) -> np.ndarray:
    """Per user of the batch: the best full-catalogue rank of a held-out item (1 = first; inf
    when no held-out item has a signal). Ties are broken as a served list breaks them, by
    catalogue position: the rank is where `recommend` would place the item, so HR@k is
    whether the user would have been shown it."""
    rows = pl.DataFrame({"user_id": batch}, schema={"user_id": pl.String}).with_row_index("__u")
    mine = test.join(rows, on="user_id").drop_nulls("__i")
    best = np.full(len(batch), np.inf)
    if mine.is_empty():
        return best
    u, i = mine["__u"].to_numpy(), mine["__i"].to_numpy()
    own = S[u, i]
    above = (S[u] > own[:, None]).sum(axis=1)
    tied_before = ((S[u] == own[:, None]) & (np.arange(S.shape[1]) < i[:, None])).sum(axis=1)
    ranks = np.where(np.isfinite(own), above + tied_before + 1.0, np.inf)
    np.minimum.at(best, u, ranks)
    return best


def item_vectors(items: pl.DataFrame, wanted: np.ndarray) -> sp.csr_matrix:
    """Unit-norm sparse one-hots of the categorical attributes of the wanted items (rows in
    `wanted` order; an item without attributes is a zero row)."""
    cats = [
        c
        for c in items.columns
        if c not in ("item_id", "created_at")
        and items.schema[c] == pl.String
        and 1 < items[c].n_unique() <= 200
    ]
    sub = pl.DataFrame({"item_id": wanted}, schema={"item_id": pl.String}).join(
        items, on="item_id", how="left", maintain_order="left"
    )
    if not cats:
        return sp.csr_matrix((len(wanted), 0))
    blocks = []
    for c in cats:
        values = sub[c].cast(pl.String)
        levels = values.drop_nulls().unique().sort().to_list()
        codes = values.replace_strict(
            levels, list(range(len(levels))), default=-1, return_dtype=pl.Int64
        ).to_numpy()
        r = np.flatnonzero(codes >= 0)
        blocks.append(
            sp.csr_matrix((np.ones(r.size), (r, codes[r])), shape=(len(wanted), len(levels)))
        )
    m = sp.hstack(blocks, format="csr")
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ m


def beyond_accuracy(
    recs: pl.DataFrame,
    train: SiteData,
    settings: Settings,
    k: int,
    n_candidates: int,
    max_pairs: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    top = recs.filter(pl.col("rank") <= k)
    pop = train.engagements(settings).group_by("item_id").agg(n=pl.len())
    total = float(pop["n"].sum()) or 1.0
    # Self-information of an item: -log2 of its share of engagement (unseen items: half an engagement).
    info = top.join(pop, on="item_id", how="left").with_columns(
        s=-(pl.col("n").fill_null(0.5) / total).log(2)
    )
    lists = top.group_by("user_id", maintain_order=True).agg(pl.col("item_id"))
    shown = top["item_id"].unique().to_numpy()
    index = {v: j for j, v in enumerate(shown)}
    vecs = item_vectors(train.items, shown)
    ild = []
    if vecs.shape[1]:
        for ids in lists["item_id"].to_list():  # one k x k product per list
            if len(ids) > 1:
                v = vecs[[index[i] for i in ids]]
                sim = (v @ v.T).toarray()
                m = len(ids)
                ild.append(1.0 - (sim.sum() - np.trace(sim)) / (m * (m - 1)))
    # Personalisation: 1 - mean Jaccard overlap of two users' lists, over sampled pairs.
    sets = [set(x) for x in lists["item_id"].to_list()]
    rng = np.random.default_rng(seed)
    overlaps = []
    if len(sets) > 1:
        a = rng.integers(0, len(sets), max_pairs)
        b = rng.integers(0, len(sets), max_pairs)
        for i, j in zip(a[a != b], b[a != b], strict=True):
            overlaps.append(len(sets[i] & sets[j]) / max(1, len(sets[i] | sets[j])))
    return {
        "coverage": top["item_id"].n_unique() / n_candidates if n_candidates else float("nan"),
        "novelty": float(info["s"].mean() or 0.0) if info.height else float("nan"),  # type: ignore[arg-type]
        "intra_list_diversity": float(np.mean(ild)) if ild else float("nan"),
        "personalisation": 1.0 - float(np.mean(overlaps)) if overlaps else float("nan"),
    }


def popularity_probabilities(train: SiteData, settings: Settings, rows: pl.DataFrame) -> np.ndarray:
    """Popularity as a probability: each item's positive rate among the training examples,
    smoothed towards the overall rate (so it means the same with impressions or without)."""
    ex = build_examples(train, settings)
    if ex.is_empty():
        return np.full(rows.height, 0.5)
    prior = float(ex["label"].mean())  # type: ignore[arg-type]
    rate = ex.group_by("item_id").agg(
        p=(pl.col("label").sum() + SMOOTHING * prior) / (pl.len() + SMOOTHING)
    )
    return (
        rows.select("item_id")
        .join(rate, on="item_id", how="left", maintain_order="left")["p"]
        .fill_null(prior)
        .to_numpy()
    )


@dataclass
class Evaluation:
    split: Split
    k: int
    per_user: dict[str, pl.DataFrame] = field(default_factory=dict)  # model -> per-user metrics
    recs: dict[str, pl.DataFrame] = field(default_factory=dict)  # model -> top-k lists
    beyond: dict[str, dict[str, float]] = field(default_factory=dict)
    probabilities: dict[str, dict[str, float]] = field(default_factory=dict)  # classification
    calibration: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # reliability
    fit_seconds: dict[str, float] = field(default_factory=dict)
    models: dict[str, Recommender] = field(default_factory=dict)  # fitted on split.train

    def table(self) -> pl.DataFrame:
        """One row per model: ranking metrics at k, beyond accuracy, and (where the model gives
        probabilities) AUC, log loss and calibration error on the held-out examples."""
        rows = []
        for name, frame in self.per_user.items():
            ranking = {c: mean_metric(frame[c].to_numpy()) for c in frame.columns if c != "user_id"}
            probs = self.probabilities.get(name, {})
            rows.append(
                {
                    "model": name,
                    "users": frame.height,
                    **ranking,
                    **self.beyond.get(name, {}),
                    "roc_auc": probs.get("roc_auc"),
                    "log_loss": probs.get("log_loss"),
                    "ece": probs.get("ece"),
                    "fit_s": round(self.fit_seconds.get(name, float("nan")), 2),
                }
            )
        out = pl.DataFrame(rows, infer_schema_length=None)
        empty = [c for c in ("roc_auc", "log_loss", "ece") if out[c].null_count() == out.height]
        return out.drop(empty)

    def metric(self, model: str, name: str) -> float:
        return mean_metric(self.per_user[model][name].to_numpy())

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


def evaluate(
    models: dict[str, Recommender],
    split: Split,
    settings: Settings,
    k: int = 10,
    progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """Fit every (unfitted) model on the split's training data and judge it."""
    if k < 1:
        raise FeedrankError(f"k must be >= 1; got {k}")
    ev = Evaluation(split, k)
    view: FrameView | None = None
    for name, model in models.items():
        if progress:
            progress(name)
        t0 = time.perf_counter()
        model.fit(split.train, settings)
        ev.fit_seconds[name] = time.perf_counter() - t0
        ev.models[name] = model
        # The view after the first fit, not before: its per-user index is not held while a
        # model builds its training matrix (the peak of a training job's memory).
        view = view or split.view(settings)
        n_cand = len(view.candidates())
        ranked = rank_users(model.at(view), split, k)
        ev.per_user[name], ev.recs[name] = ranked.per_user, ranked.recs
        ev.beyond[name] = beyond_accuracy(ranked.recs, split.train, settings, k, n_cand)
        if split.examples is not None:
            y = split.examples["label"].to_numpy()
            if model.probabilistic:
                p = model.predict_proba(split.data, split.examples)
                ev.probabilities[name] = classification_metrics(y, p)
                ev.calibration[name] = reliability_curve(y, p)
            elif model.kind == "popularity":
                p = popularity_probabilities(split.train, settings, split.examples)
                ev.probabilities[name] = classification_metrics(y, p)
                ev.calibration[name] = reliability_curve(y, p)
    return ev


def user_segments(split: Split, settings: Settings, segment_by: Sequence[str]) -> pl.DataFrame:
    """user_id and one column per requested segment: tenure (new / long-term), activity
    (past interactions bucket), or any user attribute (age_band from age) or item attribute
    (of the held-out item: one row per user, its first held-out item)."""
    users = split.test.select("user_id").unique(maintain_order=True)
    out = users
    ev = split.train.events
    items = split.data.items
    for seg in segment_by:
        if seg == "tenure":
            first = ev.group_by("user_id").agg(first=pl.col(T).min())
            col = users.join(first, on="user_id", how="left", maintain_order="left").select(
                "user_id",
                tenure=pl.when(pl.col("first").is_null())
                .then(pl.lit("new (no history)"))
                .when(pl.col("first") > split.at - timedelta(days=NEW_USER_DAYS))
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
        elif seg in items.columns:
            held = (
                split.test.group_by("user_id", maintain_order=True)
                .first()
                .join(
                    items.select("item_id", pl.col(seg).cast(pl.String)), on="item_id", how="left"
                )
            )
            col = users.join(
                held.select("user_id", seg), on="user_id", how="left", maintain_order="left"
            )
        else:
            known = sorted(
                (set(split.train.users.columns) | set(items.columns)) - {"user_id", "item_id"}
            )
            raise FeedrankError(
                f"--segment-by must be tenure, activity, or a user or item attribute {known}; "
                f"got '{seg}'"
            )
        out = out.join(
            col.with_columns(pl.col(seg).fill_null("(missing)")),
            on="user_id",
            how="left",
            maintain_order="left",
        )
    return out


def sampled_metrics(
    scorer: Scorer, split: Split, settings: Settings, n_negatives: int, k: int, seed: int = 0
) -> dict[str, float]:
    """The sampled-negatives protocol, only on request: each held-out (user, item) is ranked
    among `n_negatives` items drawn at random (seeded) from those the user never engaged with.
    Much easier than full ranking, so its numbers are higher and not comparable to it."""
    rng = np.random.default_rng(seed)
    items = scorer.view.candidates()
    known = pl.concat([split.train.seen_pairs(), split.test]).unique()
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
        .join(known, on=["user_id", "item_id"], how="anti", maintain_order="left")
        .group_by("pair", maintain_order=True)
        .head(n_negatives)
    )
    ranks = np.zeros(pairs.height, dtype=np.int64)
    for (user,), group in pairs.group_by("user_id", maintain_order=True):  # one score() per user
        mine = neg.filter(pl.col("pair").is_in(group["pair"].implode()))
        cand = np.unique(np.concatenate([group["item_id"].to_numpy(), mine["item_id"].to_numpy()]))
        score = dict(zip(cand, scorer.score([str(user)], cand)[0], strict=True))
        for pair, pos in group.select("pair", "item_id").iter_rows():
            negs = mine.filter(pl.col("pair") == pair)["item_id"].to_numpy()
            ranks[pair] = int(sum(score[x] >= score[pos] for x in negs))  # ties count against
    return {
        f"sampled HR@{k}": float(np.mean(ranks < k)),
        f"sampled NDCG@{k}": float(np.mean(np.where(ranks < k, 1 / np.log2(ranks + 2), 0.0))),
        "sampled MRR": float(np.mean(1 / (ranks + 1))),
    }


def describe(ev: Evaluation) -> dict[str, Any]:
    """The split and k, for every table printed or saved with these numbers."""
    return {
        "split": ev.split.kind,
        "description": ev.split.description,
        "k": ev.k,
        "at": ev.split.at.isoformat(),
    }
