"""The user x item interaction matrix, and the base of every model served from it.

- `IdMap` keeps website ids (strings) apart from matrix indices: ids go in, ids come out; an
  index never leaves a model.
- `interactions(data, settings)` builds a CSR of confidence weights (features.history.weighted:
  type weight x value x item-attribute weight, summed per (user, item)).
- `MatrixRecommender` fits on that matrix; its `MatrixScorer` reads a batch of users' histories
  from the view, builds their rows on the model's item axis, and scores them with array
  products — so a user's first events change the answer at once (fold-in from their own
  history). `recommend` masks seen items with a sparse matrix and takes the top k by
  argpartition (dense scores) or by one sort of the stored entries (sparse scores), a block of
  users at a time on a few threads."""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self, TypeVar

import numpy as np
import polars as pl
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from feedrank.exceptions import NotFoundError
from feedrank.features.history import weighted
from feedrank.models.base import (
    RECS_SCHEMA,
    SIMILAR_SCHEMA,
    Recommender,
    Scorer,
    Unsupported,
    best_of,
    top_k,
)
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import View

# Dense score blocks are kept under this many cells (float32: 80 MB) whatever the batch size.
MAX_BLOCK_CELLS = 20_000_000
MAX_WORKERS = 4
T_ = TypeVar("T_")


class IdMap:
    """Distinct string ids <-> 0..n-1 (sorted, or in first-seen order with keep_order). Lookups
    are joins, not Python dicts."""

    def __init__(
        self, ids: Sequence[str] | np.ndarray | pl.Series, keep_order: bool = False
    ) -> None:
        s = pl.Series("id", ids, dtype=pl.String)
        s = s.unique(maintain_order=True) if keep_order else s.unique().sort()
        self.frame = s.to_frame().with_columns(idx=pl.int_range(pl.len(), dtype=pl.Int64))
        self.ids = s.to_numpy().astype(object)

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, ids: Sequence[str] | np.ndarray | pl.Series) -> np.ndarray:
        """Index of each id, -1 where unknown; input order kept."""
        q = pl.DataFrame({"id": pl.Series(ids, dtype=pl.String)})
        out = q.join(self.frame, on="id", how="left", maintain_order="left")["idx"]
        return out.fill_null(-1).to_numpy()

    def to_array(self) -> np.ndarray:
        """For arrays.npz: a fixed-width unicode array (no pickle)."""
        return np.asarray(self.ids, dtype=str)

    @classmethod
    def from_array(cls, a: np.ndarray) -> IdMap:
        return cls(a.astype(object), keep_order=True)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and np.array_equal(self.ids, other.ids)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Interactions:
    matrix: sp.csr_matrix  # users x items, float32 confidence weights
    users: IdMap
    items: IdMap


def to_csr(pairs: pl.DataFrame, users: IdMap, items: IdMap, value: str) -> sp.csr_matrix:
    """Sum `value` per (user, item) into a CSR on the given axes; pairs off the axes are dropped."""
    joined = (
        pairs.join(users.frame.rename({"id": "user_id", "idx": "__u"}), on="user_id")
        .join(items.frame.rename({"id": "item_id", "idx": "__i"}), on="item_id")
        .group_by("__u", "__i")
        .agg(pl.col(value).sum())
    )
    m = sp.csr_matrix(
        (
            joined[value].to_numpy().astype(np.float32),
            (joined["__u"].to_numpy(), joined["__i"].to_numpy()),
        ),
        shape=(len(users), len(items)),
    )
    m.sort_indices()
    return m


def weighted_events(events: pl.DataFrame, items: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """The item events that weigh something, with their `weight`."""
    types = sorted(events["type"].unique().to_list())
    ev = weighted(events.filter(pl.col("item_id") != ""), items, settings, types)
    return ev.filter(pl.col("weight") > 0)


def weighted_pairs(events: pl.DataFrame, items: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """user_id, item_id, weight of the events that weigh something."""
    return weighted_events(events, items, settings).select("user_id", "item_id", "weight")


def interactions(data: SiteData, settings: Settings, items: IdMap | None = None) -> Interactions:
    """The confidence matrix of all of `data`. Rows: users with a weighted event. Columns:
    `items` when given, else every item of the catalogue and of the events."""
    ev = weighted_pairs(data.events, data.items, settings)
    users = IdMap(ev["user_id"])
    if items is None:
        items = IdMap(pl.concat([data.items["item_id"], ev["item_id"]]))
    return Interactions(to_csr(ev, users, items, "weight"), users, items)


def block_rows(n_cols: int, batch_size: int) -> int:
    """Rows per dense block so a block stays under MAX_BLOCK_CELLS."""
    return max(1, min(batch_size, MAX_BLOCK_CELLS // max(n_cols, 1)))


def sparse_top_k(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Each row's k largest stored entries, best first (rows keep min(k, stored) entries)."""
    m = m.tocsr()
    counts = np.diff(m.indptr)
    data, indices = m.data, m.indices
    vals = data if data.dtype == np.float32 else data.astype(np.float32)
    # Long rows first drop what cannot be in their top k: the k-th largest of a row's first
    # `sample` entries bounds its true k-th largest from below (one small dense partition), so
    # only a few entries per row reach the sort.
    sample = 16 * k
    long = np.flatnonzero(counts > sample)
    if long.size:
        head = vals[m.indptr[long][:, None] + np.arange(sample)]
        floor = np.full(m.shape[0], -np.inf, dtype=np.float32)
        floor[long] = np.partition(head, sample - k, axis=1)[:, sample - k]
        keep = np.flatnonzero(vals >= np.repeat(floor, counts))
        data, indices, vals = data[keep], indices[keep], vals[keep]
        counts = np.diff(np.searchsorted(keep, m.indptr))
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), counts)
    # One int64 sort key per entry: the row, then the value descending. A float32's bits, with
    # the sign bit flipped (all bits for negatives), order like the float: 7x faster than lexsort.
    u = vals.view(np.uint32)
    mono = np.where(u & np.uint32(0x80000000), ~u, u | np.uint32(0x80000000))
    order = np.argsort(
        (rows << 32) | (np.uint32(0xFFFFFFFF) - mono).astype(np.int64), kind="stable"
    )
    starts = np.cumsum(counts) - counts
    pos = np.arange(order.size) - np.repeat(starts, counts)
    keep = order[pos < k]
    indptr = np.concatenate([[0], np.cumsum(np.minimum(counts, k))])
    return sp.csr_matrix((data[keep], indices[keep], indptr), shape=m.shape)


def parallel_map(
    fn: Callable[[int], T_], starts: Iterable[int], pool: ThreadPoolExecutor | None = None
) -> list[T_]:
    """fn over block starts on a few threads, results in order. BLAS is held to one thread
    inside, so the blocks, not the library, share the cores. A caller with many rounds passes
    its own `pool` (made by `worker_pool`, inside BLAS's limit) instead of one per call."""
    starts = list(starts)
    if pool is not None:
        return list(pool.map(fn, starts))
    workers = min(MAX_WORKERS, os.cpu_count() or 1, len(starts))
    if workers <= 1:
        return [fn(s) for s in starts]
    with threadpool_limits(1, "blas"), ThreadPoolExecutor(workers) as own:
        return list(own.map(fn, starts))


@contextmanager
def worker_pool() -> Iterator[ThreadPoolExecutor]:
    """A few threads for block work, with BLAS held to one thread meanwhile."""
    workers = max(1, min(MAX_WORKERS, os.cpu_count() or 1))
    with threadpool_limits(1, "blas"), ThreadPoolExecutor(workers) as pool:
        yield pool


class MatrixRecommender(Recommender):
    """Base of the models that score users over an item axis by array products.

    Subclasses implement `_fit_matrix` (learn from the training interactions) and
    `_score_rows` (a dense block of scores of some users, given their history rows on the
    serving axis). An item the model does not know scores NaN (no signal); where
    `zero_is_no_signal`, a score of exactly 0 (no path from the user's history) is no signal
    too."""

    zero_is_no_signal: ClassVar[bool] = True
    items_: IdMap  # the item axis learned at fit

    def fit(self, data: SiteData, settings: Settings | None = None) -> Self:
        settings = self._fitted_on(data, settings)
        self._validate()
        inter = interactions(data, settings)
        self.items_ = inter.items
        self._fit_matrix(inter, data)
        return self

    def _validate(self) -> None:
        """Check parameters (raise ConfigError naming the parameter, allowed values, value got)."""

    @abstractmethod
    def _fit_matrix(self, inter: Interactions, data: SiteData) -> None: ...

    @abstractmethod
    def _score_rows(self, scorer: MatrixScorer, rows: MatrixRows) -> np.ndarray:
        """Dense scores (len(rows) x len(scorer.axis)) of users given their history rows."""

    def _score_sparse(self, scorer: MatrixScorer, rows: MatrixRows) -> sp.csr_matrix | None:
        """Scores as a sparse matrix (unstored = no signal) for models whose products are
        sparse; None where a model's scores are dense."""
        return None

    def _prepare(self, scorer: MatrixScorer) -> None:
        """Per-catalogue work a model does before scoring (content: item vectors)."""

    def _history_rows(
        self, coded: pl.DataFrame, items: pl.DataFrame, shape: tuple[int, int]
    ) -> sp.csr_matrix:
        """Users' rows on the axis from their events on it (with __u, __i): confidence weights
        summed per item; a sequence model weighs its steps by recency instead."""
        return _csr(weighted_events(coded, items, self.settings_), "weight", shape)

    def _with_state(self, rows: MatrixRows) -> MatrixRows:
        """Per-batch work a model does once for a block of users (factor models: their
        vectors), before the block is split for scoring."""
        return rows

    def serving_axis(self, view: View) -> IdMap:
        """The item axis scored at serving: the fitted one, unless a model can place new items."""
        return self.items_

    def at(self, view: View) -> MatrixScorer:
        return MatrixScorer(self, view)

    def _similarity(self, scorer: MatrixScorer, cols: np.ndarray) -> np.ndarray:
        """Similarity of the items at `cols` of the axis to every axis item."""
        raise Unsupported(f"similar items need a model with item similarity; got '{self.kind}'")

    def _item_to_item(self, rows: MatrixRows) -> tuple[sp.csr_matrix, Any] | None:
        """For models whose score is a sum over the user's history, score(u, i) =
        sum_j x[u, j] * M[j, i]: (x, M). None where scores do not decompose so (factors)."""
        return None

    # -- persistence -------------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {}, {"items": self.items_.to_array()}

    def _load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.items_ = IdMap.from_array(arrays["items"])


@dataclass(frozen=True)
class MatrixRows:
    """A batch of users as a matrix model sees them: their ids, their confidence rows on the
    serving axis, and when their newest event happened (NaT: no event)."""

    user_ids: list[str]
    matrix: sp.csr_matrix  # len(user_ids) x len(axis), float32
    newest: np.ndarray  # datetime64[us] per user
    vectors: np.ndarray | None = None  # per-user model state, once per batch (factor models)

    def has_history(self) -> np.ndarray:
        return np.diff(self.matrix.indptr) > 0

    def slice(self, start: int, stop: int) -> MatrixRows:
        return MatrixRows(
            self.user_ids[start:stop],
            self.matrix[start:stop],
            self.newest[start:stop],
            None if self.vectors is None else self.vectors[start:stop],
        )


class MatrixScorer(Scorer):
    model: MatrixRecommender

    def __init__(self, model: MatrixRecommender, view: View) -> None:
        super().__init__(model, view)
        self.axis = model.serving_axis(view)
        cand = view.candidates()
        self.cand_ids = cand
        self.cand_cols = self.axis.index(cand)
        self._identity = len(cand) == len(self.axis) and bool(
            np.array_equal(self.cand_cols, np.arange(len(cand)))
        )
        self.cand_map = IdMap(cand, keep_order=True)

    def prepare(self) -> MatrixScorer:
        self.model._prepare(self)
        return self

    def rows(self, user_ids: Sequence[str], histories: pl.DataFrame) -> MatrixRows:
        return self._batch(user_ids, histories, exclude_seen=False)[0]

    def _batch(
        self, user_ids: Sequence[str], histories: pl.DataFrame, exclude_seen: bool
    ) -> tuple[MatrixRows, sp.csr_matrix | None]:
        """The users' rows on the axis and (with exclude_seen) their seen items on the
        candidates, from one pass over their histories: each id is looked up once."""
        users = list(user_ids)
        n = len(users)
        coded = histories.join(
            pl.DataFrame({"user_id": users}, schema={"user_id": pl.String}).with_row_index("__u"),
            on="user_id",
        ).join(self.axis.frame.rename({"id": "item_id", "idx": "__i"}), on="item_id", how="left")
        matrix = self.model._history_rows(
            coded.filter(pl.col("__i").is_not_null()),
            self.view.catalogue.items,
            (n, len(self.axis)),
        )
        newest = np.full(n, np.datetime64("NaT"), dtype="datetime64[us]")
        last = coded.group_by("__u").agg(t=pl.col("timestamp").max())
        newest[last["__u"].to_numpy()] = last["t"].dt.replace_time_zone(None).to_numpy()
        rows = self.model._with_state(MatrixRows(users, matrix, newest))
        if not exclude_seen:
            return rows, None
        seen = coded.filter(Settings.seen_expr())
        if not self._identity:
            seen = seen.drop("__i").join(
                self.cand_map.frame.rename({"id": "item_id", "idx": "__i"}), on="item_id"
            )
        seen = seen.filter(pl.col("__i").is_not_null()).with_columns(one=pl.lit(1.0))
        return rows, _csr(seen, "one", (n, len(self.cand_ids)))  # counts; a mask needs > 0

    def _block(self, rows: MatrixRows) -> np.ndarray:
        """Dense scores on the axis with no signal as NaN (in the model's own float type)."""
        block = np.asarray(self.model._score_rows(self, rows))
        if block.dtype.kind != "f":
            block = block.astype(np.float64)
        if self.model.zero_is_no_signal:
            block[block == 0.0] = np.nan
        return block

    def score_users(
        self, user_ids: Sequence[str], histories: pl.DataFrame, item_ids: np.ndarray
    ) -> np.ndarray:
        rows = self.rows(user_ids, histories)
        cols = self.axis.index(item_ids)
        out = self._block(rows)[:, np.maximum(cols, 0)]
        out[:, cols < 0] = np.nan  # items the model cannot place
        return out

    def recommend(
        self,
        user_ids: Sequence[str],
        k: int = 10,
        exclude_seen: bool = True,
        batch_size: int | None = None,
    ) -> pl.DataFrame:
        """Top-k per user, the same answer as Scorer.recommend's path through `score_users`:
        blocks of users scored with array products, seen items masked from a sparse matrix,
        the best k taken by argpartition (or, for models whose scores are sparse, from the
        stored entries alone); sub-blocks run on a few threads (the products, sorts and
        partitions release the GIL) and the frame is built once at the end."""
        users = list(user_ids)
        kk = min(k, len(self.cand_ids))
        if not users or kk <= 0:
            return pl.DataFrame(schema=RECS_SCHEMA)
        step = block_rows(len(self.axis), 512)
        batch_size = batch_size or 4096
        # Pipelined: while the threads score one batch's slices, this thread reads and builds
        # the next batch.
        with worker_pool() as pool:
            futures = []
            for start in range(0, len(users), batch_size):
                batch = users[start : start + batch_size]
                rows, seen = self._batch(batch, self.view.histories(batch), exclude_seen)
                futures += [
                    pool.submit(self._top_slice, rows, seen, kk, s, s + step)
                    for s in range(0, len(batch), step)
                ]
            parts = [f.result() for f in futures]
        idx = np.concatenate([p[0] for p in parts])
        scores = np.concatenate([p[1] for p in parts])
        out = pl.DataFrame(
            {
                "__u": np.repeat(np.arange(len(users)), kk),
                "rank": np.tile(np.arange(1, kk + 1, dtype=np.int32), len(users)),
                "__i": idx.ravel(),
                "score": scores.ravel().astype(np.float64),
            }
        ).filter(pl.col("score").is_finite())
        # A list whose tail has no signal keeps its head: ranks stay 1..n.
        return out.select(
            user_id=pl.Series(users, dtype=pl.String).gather(out["__u"]),
            rank=pl.col("rank"),
            item_id=pl.Series(self.cand_ids, dtype=pl.String).gather(out["__i"]),
            score=pl.col("score"),
        )

    def _top_slice(
        self, rows: MatrixRows, seen: sp.csr_matrix | None, k: int, start: int, stop: int
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._top(rows.slice(start, stop), None if seen is None else seen[start:stop], k)

    def _on_candidates(self, block: np.ndarray) -> np.ndarray:
        if self._identity:
            return block
        out = block[:, np.maximum(self.cand_cols, 0)]
        out[:, self.cand_cols < 0] = np.nan
        return out

    def _top(
        self, rows: MatrixRows, seen: sp.csr_matrix | None, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        sparse = self._identity and self.model.zero_is_no_signal
        p = self.model._score_sparse(self, rows) if sparse else None
        if p is None:
            block = self._on_candidates(np.asarray(self.model._score_rows(self, rows)))
            if self.model.zero_is_no_signal:
                block[block == 0] = -np.inf
            # no signal is a whole row here (a NaN user), or an item the axis lacks (NaN column)
            block[np.isnan(block[:, 0])] = -np.inf
            if not self._identity:
                block[:, self.cand_cols < 0] = -np.inf
            if seen is not None:
                r, c = seen.nonzero()
                block[r, c] = -np.inf
            return best_of(block, k)
        # Sparse scores: unstored entries are no signal, so each row's top k comes from its
        # stored entries alone (rows with fewer than k keep what they have, padded with -inf).
        if seen is not None:
            p = p - p.multiply(seen.astype(bool))
        p = p.tocsr()
        p.eliminate_zeros()
        top = sparse_top_k(p, k)
        n = len(rows.user_ids)
        idx = np.zeros((n, k), dtype=np.int64)
        vals = np.full((n, k), -np.inf)
        counts = np.diff(top.indptr)
        r = np.repeat(np.arange(n), counts)
        pos = np.arange(top.indptr[-1]) - np.repeat(top.indptr[:-1], counts)
        idx[r, pos] = top.indices
        vals[r, pos] = top.data
        return idx, vals

    def explain_pairs(
        self, user_ids: Sequence[str], item_ids: Sequence[str], top: int = 5
    ) -> list[list[dict[str, Any]]]:
        """Item-to-item models: the history items that raise each pair's score most (feature
        `because of <item>`, value: the user's weight on it, contribution: its share of the
        score). Exact: the contributions sum to the score."""
        users = list(dict.fromkeys(user_ids))
        decomposed = self.model._item_to_item(self.rows(users, self.view.histories(users)))
        if decomposed is None:
            return super().explain_pairs(user_ids, item_ids, top)
        x, weights = decomposed
        row = {u: r for r, u in enumerate(users)}
        cols = self.axis.index(list(item_ids))
        out: list[list[dict[str, Any]]] = []
        for u, c in zip(user_ids, cols, strict=True):
            hist = x.getrow(row[u])
            if c < 0 or hist.nnz == 0:
                out.append([])
                continue
            w = weights[hist.indices, c]
            contrib = hist.data * np.asarray(w.todense() if sp.issparse(w) else w).ravel()
            order = [j for j in np.argsort(-np.abs(contrib), kind="stable") if contrib[j] != 0]
            out.append(
                [
                    {
                        "feature": f"because of {self.axis.ids[hist.indices[j]]}",
                        "value": float(hist.data[j]),
                        "contribution": float(contrib[j]),
                    }
                    for j in order[:top]
                ]
            )
        return out

    # -- item-to-item ------------------------------------------------------------------------------
    def similar_items(self, item_ids: Sequence[str], k: int = 10) -> pl.DataFrame:
        """The k most similar candidates of each item, by the model's item similarity; an item
        is never its own neighbour and a similarity of 0 is none."""
        cols = self.axis.index(list(item_ids))
        if (cols < 0).any():
            missing = [i for i, c in zip(item_ids, cols, strict=True) if c < 0]
            raise NotFoundError(
                f"item must be one of the {len(self.axis)} items the '{self.model.kind}' model "
                f"knows; got {missing[:5]}"
            )
        sims = np.asarray(self.model._similarity(self, cols), dtype=np.float64)
        block = self._on_candidates(sims)
        own = self.cand_map.index(list(item_ids))
        has = np.flatnonzero(own >= 0)
        block[has, own[has]] = -np.inf
        block[~np.isfinite(block) | (block <= 0)] = -np.inf
        recs = top_k(list(item_ids), self.cand_ids, block, k)
        return recs.rename({"user_id": "item_id", "item_id": "similar_item_id"}).select(
            list(SIMILAR_SCHEMA)
        )


def _csr(coded: pl.DataFrame, value: str, shape: tuple[int, int]) -> sp.csr_matrix:
    """A CSR from a frame of (__u, __i, value), values summed per cell (by scipy, which
    sums duplicates as it converts: no group-by)."""
    m = sp.csr_matrix(
        (
            coded[value].to_numpy().astype(np.float32),
            (coded["__u"].to_numpy(), coded["__i"].to_numpy()),
        ),
        shape=shape,
    )
    m.sum_duplicates()
    return m


def rows_of(m: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """m's rows at `rows`, with empty rows where rows is -1."""
    out = m[np.maximum(rows, 0)]
    if (rows < 0).any():
        out = sp.diags((rows >= 0).astype(m.dtype)) @ out
    return out.tocsr()


def csr_arrays(prefix: str, m: sp.csr_matrix) -> dict[str, np.ndarray]:
    return {
        f"{prefix}_data": m.data,
        f"{prefix}_indices": m.indices,
        f"{prefix}_indptr": m.indptr,
        f"{prefix}_shape": np.asarray(m.shape, dtype=np.int64),
    }


def csr_from(prefix: str, arrays: dict[str, np.ndarray]) -> sp.csr_matrix:
    shape = tuple(int(x) for x in arrays[f"{prefix}_shape"])
    return sp.csr_matrix(
        (arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]),
        shape=shape,
    )


def drop_user_rows(
    arrays: dict[str, np.ndarray],
    user_ids: set[str],
    dense: Sequence[str] = (),
    csr: Sequence[str] = (),
) -> bool:
    """Erasure in a dump: the `users` id array and the rows of the named arrays (dense, or CSR
    by prefix) that follow it lose these users' entries. Whether any was there."""
    users = arrays["users"]
    keep = ~np.isin(users, np.asarray(sorted(user_ids)))  # not users' width: no truncation
    if keep.all():
        return False
    arrays["users"] = users[keep]
    for name in dense:
        arrays[name] = arrays[name][keep]
    for prefix in csr:
        arrays.update(csr_arrays(prefix, csr_from(prefix, arrays)[keep]))
    return True


def trained_until(model: Recommender) -> datetime | None:
    end = model.window_[1]
    return datetime.fromisoformat(end) if end else None
