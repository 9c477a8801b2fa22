"""A sequence-aware next-item model: what users engage with after each item.

Fit: each user's engagements in time order (events at the same instant share a step and are
unordered: both directions count) give transitions i -> j from every item to the items of the
next `window` steps, the nearer ones weighing more (step d weighs step_decay^(d-1)); with
`session_gap_hours`, no transition spans a longer gap. The counts C are smoothed towards item
similarity S (cosine of the items' user columns, each row normalised to sum 1), so an item
with few or no observed transitions still leads somewhere:

    P[i] = (C[i] + smoothing * S[i]) / (sum_j C[i, j] + smoothing)

and each row keeps its `max_next` largest entries. Serving: a user's `n_recent` most recent
distinct items (by their latest engagement; ties share a step) weigh recency_decay^(step - 1),
and an item's score is sum_i weight_i * P[i, item] — a decomposition, so an explanation names
the items that led to each suggestion, and similar items are the likeliest next ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from implicit.nearest_neighbours import all_pairs_knn

from feedrank.exceptions import ConfigError
from feedrank.models.matrix import (
    Interactions,
    MatrixRecommender,
    MatrixRows,
    MatrixScorer,
    csr_arrays,
    csr_from,
    sparse_top_k,
    weighted_events,
)
from feedrank.settings import Settings
from feedrank.views.site import SiteData

STEPS = ("engaged", "seen")


class TransitionRecommender(MatrixRecommender):
    kind = "transition"

    next_: sp.csr_matrix  # items x items: P(next item | item), float32, max_next per row

    def __init__(
        self,
        window: int = 2,
        step_decay: float = 0.5,
        session_gap_hours: float | None = None,
        smoothing: float = 2.0,
        k_similar: int = 50,
        n_recent: int = 3,
        recency_decay: float = 0.5,
        max_next: int = 200,
        steps: str = "engaged",
    ) -> None:
        self.window = window
        self.step_decay = step_decay
        self.session_gap_hours = session_gap_hours
        self.smoothing = smoothing
        self.k_similar = k_similar
        self.n_recent = n_recent
        self.recency_decay = recency_decay
        self.max_next = max_next
        self.steps = steps

    def _validate(self) -> None:
        if self.steps not in STEPS:
            raise ConfigError(f"steps must be one of {list(STEPS)}; got '{self.steps}'")
        for name in ("window", "k_similar", "n_recent", "max_next"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be an integer >= 1; got {getattr(self, name)}")
        for name in ("step_decay", "recency_decay"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1]; got {getattr(self, name)}")
        if not self.smoothing > 0:
            raise ConfigError(f"smoothing must be > 0; got {self.smoothing}")
        if self.session_gap_hours is not None and not self.session_gap_hours > 0:
            raise ConfigError(
                f"session_gap_hours must be > 0 or None (no limit); got {self.session_gap_hours}"
            )

    # -- fitting -------------------------------------------------------------------------------
    def _fit_matrix(self, inter: Interactions, data: SiteData) -> None:
        counts = self._transitions(data, inter)
        # Rows of C sum to the item's observed transitions; similarity rows sum to 1.
        sim = _row_normalised(_cosine(inter.matrix, int(self.k_similar)))
        observed = np.asarray(counts.sum(axis=1)).ravel()
        scale = sp.diags(1.0 / (observed + self.smoothing))
        p = (scale @ (counts + self.smoothing * sim)).tocsr().astype(np.float32)
        p.eliminate_zeros()
        self.next_ = sparse_top_k(p, int(self.max_next))
        self.next_.sort_indices()

    def _transitions(self, data: SiteData, inter: Interactions) -> sp.csr_matrix:
        """C[i, j]: how often (discounted by steps) j came within `window` steps after i."""
        seq = (
            self._steps(data.events, data.items)
            .join(inter.items.frame.rename({"id": "item_id", "idx": "__i"}), on="item_id")
            .select("user_id", "__i", "timestamp")
            .with_columns(
                step=pl.col("timestamp").rank("dense").over("user_id").cast(pl.Int64),
            )
        )
        gap = self.session_gap_hours
        parts = []
        for d in range(int(self.window) + 1):  # d = 0: the same instant, both directions
            after = seq.select(
                "user_id",
                step=pl.col("step") - d,
                __j=pl.col("__i"),
                __tj=pl.col("timestamp"),
            )
            pairs = seq.join(after, on=["user_id", "step"]).filter(pl.col("__i") != pl.col("__j"))
            if gap is not None:
                pairs = pairs.filter(
                    (pl.col("__tj") - pl.col("timestamp")) <= pl.duration(seconds=gap * 3600)
                )
            w = float(self.step_decay) ** max(d - 1, 0)
            parts.append(pairs.select("__i", "__j", w=pl.lit(w, dtype=pl.Float64)))
        # Sorted, so the sums run in one order whatever the join's threads did.
        pairs = pl.concat(parts).sort("__i", "__j", "w")
        n = len(inter.items)
        c = sp.csr_matrix(
            (pairs["w"].to_numpy(), (pairs["__i"].to_numpy(), pairs["__j"].to_numpy())),
            shape=(n, n),
        )
        c.sum_duplicates()
        return c

    def _steps(self, events: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
        """The events that make a user's sequence: engagements (what weighs something), or
        every item the user came to know (a low rating still tells where they went next)."""
        if self.steps == "seen":
            return events.filter(Settings.seen_expr())
        return weighted_events(events, items, self.settings_)

    # -- serving -------------------------------------------------------------------------------
    def _history_rows(
        self, coded: pl.DataFrame, items: pl.DataFrame, shape: tuple[int, int]
    ) -> sp.csr_matrix:
        """The n_recent most recent distinct items of each user, recency_decay^(step - 1)."""
        recent = (
            self._steps(coded, items)
            .group_by("__u", "__i")
            .agg(t=pl.col("timestamp").max())
            .with_columns(step=pl.col("t").rank("dense", descending=True).over("__u"))
            .filter(pl.col("step") <= int(self.n_recent))
            .with_columns(w=pl.lit(float(self.recency_decay)).pow(pl.col("step") - 1))
            .sort("__u", "__i")
        )
        m = sp.csr_matrix(
            (
                recent["w"].to_numpy().astype(np.float32),
                (recent["__u"].to_numpy(), recent["__i"].to_numpy()),
            ),
            shape=shape,
        )
        m.sort_indices()
        return m

    def _score_sparse(self, scorer: MatrixScorer, rows: MatrixRows) -> sp.csr_matrix:
        return (rows.matrix @ self.next_).tocsr()

    def _score_rows(self, scorer: MatrixScorer, rows: MatrixRows) -> np.ndarray:
        return self._score_sparse(scorer, rows).toarray()

    def _item_to_item(self, rows: MatrixRows) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        return rows.matrix, self.next_

    def _similarity(self, scorer: MatrixScorer, cols: np.ndarray) -> np.ndarray:
        """Row i of P: the likeliest items after item i."""
        return self.next_[cols].toarray()

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = super()._state()
        return meta, {**arrays, **csr_arrays("next", self.next_)}

    def _load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super()._load_state(meta, arrays)
        self.next_ = csr_from("next", arrays)


def _cosine(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Items x items cosine of the binary user columns, k neighbours per item, no diagonal
    (implicit's multi-threaded all-pairs kNN, as item-kNN uses)."""
    x = matrix.tocsc().astype(np.float64)
    x.data[:] = 1.0
    users_per_item = np.diff(x.indptr).astype(np.float64)
    x = (x @ sp.diags(1.0 / np.sqrt(np.maximum(users_per_item, 1.0)))).tocsr()
    sim = all_pairs_knn(x, k + 1, num_threads=0, show_progress=False).tocoo()
    off = sim.row != sim.col
    out = sp.csr_matrix((sim.data[off], (sim.row[off], sim.col[off])), shape=sim.shape)
    out.eliminate_zeros()
    out.sort_indices()
    return out


def _row_normalised(m: sp.csr_matrix) -> sp.csr_matrix:
    total = np.asarray(m.sum(axis=1)).ravel()
    return (sp.diags(1.0 / np.where(total > 0, total, 1.0)) @ m).tocsr()
