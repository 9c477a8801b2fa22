"""Ranking metrics as small array functions, each checkable by hand.

Every function takes `hits`, a boolean matrix (users x ranked positions): hits[u, r] is True when
the item at rank r+1 of user u's list is relevant. Functions that need to know how many relevant
items a user has in total (recall, NDCG, MAP) take `n_relevant` (one count per user). Each returns
the per-user values; `mean_metric` averages them, skipping users with nothing relevant.

Definitions (k = cut-off, rel_r = hits[u, r-1], R = n_relevant[u]):
- HR@k        1 if any of the first k is relevant, else 0
- precision@k (sum_r<=k rel_r) / k
- recall@k    (sum_r<=k rel_r) / R
- NDCG@k      sum_r<=k rel_r / log2(r+1), divided by its ideal value sum_r<=min(k,R) 1/log2(r+1)
- MAP@k       (sum_r<=k rel_r * precision@r) / min(k, R)
- MRR         1 / (rank of the first relevant item in the list), 0 when none is in it
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl


def _hits(hits: np.ndarray, k: int | None = None) -> np.ndarray:
    h = np.asarray(hits, dtype=bool)
    if h.ndim != 2:
        raise ValueError(f"hits must be a 2-d matrix (users x ranks); got shape {h.shape}")
    if k is not None:
        if k < 1:
            raise ValueError(f"k must be >= 1; got {k}")
        h = h[:, :k]
    return h


def _relevant(n_relevant: np.ndarray | Sequence[int], n_users: int) -> np.ndarray:
    r = np.asarray(n_relevant, dtype=np.float64)
    if r.shape != (n_users,):
        raise ValueError(f"n_relevant must have one count per user ({n_users}); got {r.shape}")
    return r


def hit_rate_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    return np.asarray(_hits(hits, k).any(axis=1), dtype=np.float64)


def precision_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    # Divided by k even when a list is shorter: missing slots are misses.
    counts: np.ndarray = _hits(hits, k).sum(axis=1)
    return counts / float(k)


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray | Sequence[int], k: int) -> np.ndarray:
    h = _hits(hits, k)
    r = _relevant(n_relevant, h.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r > 0, h.sum(axis=1) / r, np.nan)


def _discounts(n: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, n + 2, dtype=np.float64))


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray | Sequence[int], k: int) -> np.ndarray:
    h = _hits(hits, k)
    r = _relevant(n_relevant, h.shape[0])
    disc = _discounts(k)
    dcg = h @ disc[: h.shape[1]]
    ideal = np.concatenate([[0.0], np.cumsum(disc)])[np.minimum(r, k).astype(np.int64)]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ideal > 0, dcg / ideal, np.nan)


def map_at_k(hits: np.ndarray, n_relevant: np.ndarray | Sequence[int], k: int) -> np.ndarray:
    h = _hits(hits, k).astype(np.float64)
    r = _relevant(n_relevant, h.shape[0])
    ranks = np.arange(1, h.shape[1] + 1, dtype=np.float64)
    prec_at_r = np.cumsum(h, axis=1) / ranks
    denom = np.minimum(r, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, (h * prec_at_r).sum(axis=1) / denom, np.nan)


def mrr(hits: np.ndarray) -> np.ndarray:
    h = _hits(hits)
    first = np.argmax(h, axis=1)
    found = h.any(axis=1)
    return np.where(found, 1.0 / (first + 1.0), 0.0)


def mean_metric(values: np.ndarray) -> float:
    """Mean over users, skipping NaN (users with nothing relevant)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def hit_matrix(
    recs: pl.DataFrame, relevant: pl.DataFrame, user_ids: Sequence[str], depth: int
) -> np.ndarray:
    """The hits matrix of a recommendation frame (user_id, rank, item_id) against relevant
    (user_id, item_id) pairs, rows in `user_ids` order, `depth` columns (ranks 1..depth)."""
    rows = pl.DataFrame({"user_id": list(user_ids)}, schema={"user_id": pl.String}).with_row_index(
        "__u"
    )
    hit = (
        recs.filter(pl.col("rank") <= depth)
        .join(relevant.select("user_id", "item_id").unique(), on=["user_id", "item_id"])
        .join(rows, on="user_id")
    )
    out = np.zeros((len(user_ids), depth), dtype=bool)
    out[hit["__u"].to_numpy(), hit["rank"].to_numpy() - 1] = True
    return out
