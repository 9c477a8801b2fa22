"""The user x item interaction matrix, and the base class of every model served from it.

- `IdMap` keeps website ids (strings) apart from matrix indices: ids go in, ids come out; an
  index never leaves a model.
- `interactions(data, settings, at)` builds a CSR of confidence weights — type weight x
  item-attribute weight x value (History.events' `weight`), summed per (user, item) — over
  events strictly before `at`.
- `MatrixRecommender` serves any model that scores a batch of users over its item axis with
  array products: `score` and `recommend` share one path; `recommend` masks seen items with a
  sparse matrix and takes the top k by argpartition (dense scores) or by one sort of the stored
  entries (sparse scores), a block of users at a time on a few threads."""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self, TypeVar

import numpy as np
import polars as pl
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from feedrank.config import Settings
from feedrank.data.site import SiteData
from feedrank.exceptions import NotFoundError
from feedrank.features.history import History, T
from feedrank.models.base import RECS_SCHEMA, Recommender, default_serving_time, top_k

# Dense score blocks are kept under this many cells (float32: 80 MB) whatever the batch size.
MAX_BLOCK_CELLS = 20_000_000
MAX_WORKERS = 4
T_ = TypeVar("T_")

SIMILAR_SCHEMA = {
    "item_id": pl.String,
    "rank": pl.Int32,
    "similar_item_id": pl.String,
    "score": pl.Float64,
}


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

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and np.array_equal(self.ids, other.ids)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Interactions:
    matrix: sp.csr_matrix  # users x items, float32 confidence weights
    users: IdMap
    items: IdMap
    # True when the weighted events are exactly the engagements: the matrix's non-zeros are then
    # the seen (user, item) pairs, and serving need not build them again.
    engaged_only: bool = False


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


def interactions(
    data: SiteData, settings: Settings, at: datetime | None = None, items: IdMap | None = None
) -> Interactions:
    """The confidence matrix as of `at` (default: just after the newest event). Rows: users with
    a weighted event. Columns: `items` when given, else every item of the catalogue and events."""
    at = at or default_serving_time(data)
    ev = History(data, settings, []).events.filter((pl.col(T) < at) & (pl.col("item_id") != ""))
    engaged_only = bool(ev.select(((pl.col("weight") > 0) == pl.col("engaged")).all()).item())
    ev = ev.filter(pl.col("weight") > 0)
    users = IdMap(ev["user_id"])
    if items is None:
        items = IdMap(pl.concat([data.items["item_id"], ev["item_id"]]))
    return Interactions(to_csr(ev, users, items, "weight"), users, items, engaged_only)


def block_rows(n_cols: int, batch_size: int) -> int:
    """Rows per dense block so a block stays under MAX_BLOCK_CELLS."""
    return max(1, min(batch_size, MAX_BLOCK_CELLS // max(n_cols, 1)))


def best_k(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the k largest entries of each row, best first. Partitions
    at n - k, so no negated copy of the block is made."""
    n = block.shape[1]
    part = (
        np.argpartition(block, n - k, axis=1)[:, n - k :]
        if k < n
        else np.broadcast_to(np.arange(n), block.shape)
    )
    vals = np.take_along_axis(block, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


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
    order = np.argsort((rows << 32) | (np.uint32(0xFFFFFFFF) - mono).astype(np.int64))
    starts = np.cumsum(counts) - counts
    pos = np.arange(order.size) - np.repeat(starts, counts)
    keep = order[pos < k]
    indptr = np.concatenate([[0], np.cumsum(np.minimum(counts, k))])
    return sp.csr_matrix((data[keep], indices[keep], indptr), shape=m.shape)


def parallel_map(fn: Callable[[int], T_], starts: Iterable[int]) -> list[T_]:
    """fn over block starts on a few threads, results in order. BLAS is held to one thread
    inside, so the blocks, not the library, share the cores."""
    starts = list(starts)
    workers = min(MAX_WORKERS, os.cpu_count() or 1, len(starts))
    if workers <= 1:
        return [fn(s) for s in starts]
    with threadpool_limits(1, "blas"), ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, starts))


class MatrixRecommender(Recommender):
    """Base of the models that score users over an item axis by array products.

    Subclasses implement `_fit_matrix` (learn from the training interactions) and `_score_rows`
    (a dense block of scores of some users over `axis_`). Serving builds the history matrix as
    of the serving time on the model's axis, so a fresh engagement moves memory-based scores
    at once; items a model does not know score 0 (no signal), so scores stay finite."""

    items_: IdMap  # the item axis learned at fit
    axis_: IdMap  # the item axis scored at serving (items_ unless a model can embed new items)
    history_: Interactions  # serving-time confidence matrix on axis_
    _pending: Interactions | None = None

    def fit(self, data: SiteData, settings: Settings | None = None) -> Self:
        self.settings_ = settings or Settings()
        self._validate()
        at = default_serving_time(data)
        inter = interactions(data, self.settings_, at)
        self.items_ = inter.items
        self._fit_matrix(inter, data)
        self._pending = inter  # serving as of the same time reuses the matrix just built
        return self.serve_with(data, at)

    def _validate(self) -> None:
        """Check parameters (raise ConfigError naming the parameter, allowed values, value got)."""

    @abstractmethod
    def _fit_matrix(self, inter: Interactions, data: SiteData) -> None: ...

    @abstractmethod
    def _score_rows(self, rows: np.ndarray) -> np.ndarray:
        """Dense scores (len(rows) x len(axis_)) for history_ rows (-1: a user with no history)."""

    # -- serving -----------------------------------------------------------------------------------
    def _serving_axis(self) -> IdMap:
        return self.items_

    def _prepare_serving(self) -> None:
        self.axis_ = self._serving_axis()
        pending, self._pending = self._pending, None
        if pending is not None and pending.items == self.axis_:
            self.history_ = pending
        else:
            self.history_ = interactions(self.data_, self.settings_, self.at_, self.axis_)
        cand = self.item_ids_
        self.cand_ids_ = cand
        self.cand_cols_ = self.axis_.index(cand)
        self._cand_identity = len(cand) == len(self.axis_) and bool(
            np.array_equal(self.cand_cols_, np.arange(len(cand)))
        )
        self.cand_map_ = IdMap(cand, keep_order=True)  # candidate id -> its column in a block
        if self.history_.engaged_only and self._cand_identity:
            self.seen_users_ = self.history_.users
            self.seen_ = self.history_.matrix.copy()
            self.seen_.data[:] = 1.0
        else:
            engaged = (
                self.data_.events.filter(
                    pl.col("type").is_in(self.settings_.engagement_types)
                    & (pl.col(T) < self.at_)
                    & (pl.col("item_id") != "")
                )
                .select("user_id", "item_id", one=pl.lit(1.0))
                .unique(["user_id", "item_id"])
            )
            self.seen_users_ = IdMap(engaged["user_id"])
            self.seen_ = to_csr(engaged, self.seen_users_, self.cand_map_, "one")
        self._prepare_model()

    def _prepare_model(self) -> None:
        """Precompute per-serving state (after history_ is built)."""

    def _rows(self, user_ids: Sequence[str]) -> np.ndarray:
        return self.history_.users.index(user_ids)

    def _on_columns(self, block: np.ndarray, cols: np.ndarray, identity: bool) -> np.ndarray:
        if identity:
            return block
        out = block[:, np.maximum(cols, 0)]
        out[:, cols < 0] = 0.0
        return out

    def score(self, user_ids: Sequence[str], item_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        self._check()
        users = list(user_ids)
        cols = self.axis_.index(np.asarray(item_ids, dtype=object))
        rows = self._rows(users)
        step = block_rows(len(self.axis_), 4096)
        out = np.empty((len(users), len(cols)), dtype=np.float64)
        for s in range(0, len(users), step):
            out[s : s + step] = self._on_columns(self._score_rows(rows[s : s + step]), cols, False)
        return out

    def recommend(
        self,
        user_ids: Sequence[str],
        k: int = 10,
        exclude_seen: bool = True,
        batch_size: int = 512,
    ) -> pl.DataFrame:
        """Top-k per user, the same answer as the base class's path through `score` and
        `seen_mask`: blocks of users scored with array products, seen items masked from a
        sparse matrix, the best k taken by argpartition (or, for models whose scores are sparse,
        from the stored entries alone); blocks run on a few threads (the products, sorts and
        partitions release the GIL) and the frame is built once at the end."""
        self._check()
        users = list(user_ids)
        kk = min(k, len(self.cand_ids_))
        if not users or kk <= 0:
            return pl.DataFrame(schema=RECS_SCHEMA)
        rows = self._rows(users)
        seen_rows = self.seen_users_.index(users) if exclude_seen else None
        step = block_rows(len(self.axis_), batch_size)
        sparse = self._cand_identity and self._score_sparse(rows[:0]) is not None

        def block_top(s: int) -> tuple[np.ndarray, np.ndarray]:
            r = rows[s : s + step]
            sr = None if seen_rows is None else seen_rows[s : s + step]
            if sparse:
                return self._sparse_top(r, sr, kk)
            return self._dense_top(r, sr, kk)

        parts = parallel_map(block_top, range(0, len(users), step))
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
        return out.select(
            user_id=pl.Series(users, dtype=pl.String).gather(out["__u"]),
            rank=pl.col("rank"),
            item_id=pl.Series(self.cand_ids_, dtype=pl.String).gather(out["__i"]),
            score=pl.col("score"),
        )

    def _score_sparse(self, rows: np.ndarray) -> sp.csr_matrix | None:
        """Scores as a sparse matrix (unstored = 0) for models whose products are sparse;
        None where a model's scores are dense."""
        return None

    def _seen_block(self, seen_rows: np.ndarray) -> sp.csr_matrix:
        """The seen matrix's rows for these users (empty rows for users with nothing seen)."""
        known = seen_rows >= 0
        block = self.seen_[np.maximum(seen_rows, 0)]
        if not known.all():
            block = sp.diags(known.astype(np.float32)) @ block
        return block.tocsr()

    def _dense_top(
        self, rows: np.ndarray, seen_rows: np.ndarray | None, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        block = self._on_columns(self._score_rows(rows), self.cand_cols_, self._cand_identity)
        if seen_rows is not None:
            r, c = self._seen_block(seen_rows).nonzero()
            block[r, c] = -np.inf
        return best_k(block, k)

    def _sparse_top(
        self, rows: np.ndarray, seen_rows: np.ndarray | None, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows with at least k positive unseen scores take their top k from the stored entries
        (every unstored item scores 0, below them); the rest go through the dense path."""
        p = self._score_sparse(rows)
        if p is None:
            return self._dense_top(rows, seen_rows, k)
        if seen_rows is not None:
            p = p - p.multiply(self._seen_block(seen_rows).astype(bool))
        p = p.tocsr()
        p.data[p.data <= 0] = 0.0
        p.eliminate_zeros()
        enough = np.diff(p.indptr) >= k
        idx = np.empty((len(rows), k), dtype=np.int64)
        vals = np.empty((len(rows), k), dtype=p.dtype)
        if enough.any():
            top = sparse_top_k(p[enough], k)
            idx[enough] = top.indices.reshape(-1, k)
            vals[enough] = top.data.reshape(-1, k)
        few = np.flatnonzero(~enough)
        if few.size:
            dense = self._dense_top(rows[few], None if seen_rows is None else seen_rows[few], k)
            idx[few], vals[few] = dense[0], dense[1].astype(vals.dtype)
        return idx, vals

    # -- item-to-item ------------------------------------------------------------------------------
    def _item_cols(self, item_ids: Sequence[str]) -> np.ndarray:
        self._check()
        cols = self.axis_.index(list(item_ids))
        if (cols < 0).any():
            missing = [i for i, c in zip(item_ids, cols, strict=True) if c < 0]
            raise NotFoundError(
                f"item must be one of the {len(self.axis_)} items the '{self.kind}' model knows; "
                f"got {missing[:5]}"
            )
        return cols

    def _similar_from(self, item_ids: Sequence[str], sims: np.ndarray, k: int) -> pl.DataFrame:
        """similar_items over the serving candidates, from a (queries x axis_) similarity block;
        an item is never its own neighbour and zero similarity is no similarity."""
        block = self._on_columns(sims, self.cand_cols_, self._cand_identity).astype(np.float64)
        own = self.cand_map_.index(list(item_ids))
        has = np.flatnonzero(own >= 0)
        block[has, own[has]] = -np.inf
        block[block <= 0] = -np.inf
        recs = top_k(list(item_ids), self.cand_ids_, block, k)
        return recs.rename({"user_id": "item_id", "item_id": "similar_item_id"}).select(
            list(SIMILAR_SCHEMA)
        )

    # -- persistence helpers -----------------------------------------------------------------------
    def _base_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"settings": self.settings_.to_dict()}, {"items": self.items_.to_array()}

    def _load_base(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.settings_ = Settings.from_dict(meta["settings"])
        self.items_ = IdMap(arrays["items"].astype(object))


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
