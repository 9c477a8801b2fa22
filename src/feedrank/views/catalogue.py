"""The catalogue a view serves from: the items (with their attributes) and the raw counters of
what every user did with each of them, as of one time. Immutable: a newer state of the store is
a new Catalogue (a server makes one per change it applies, `Catalogue.apply`).

Counters are raw (events per item, type and value); what they mean under the settings (weights,
engagements, exposure) is computed by the feature code. Work that depends only on a catalogue
(a model's item-side scores) is kept per catalogue with `memo`, under a key naming the fitted
model, so it is computed once per state, not once per request."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import numpy as np
import polars as pl

from feedrank.schema import to_timestamp
from feedrank.store.base import ITEM_COUNT_COLUMNS

T_ = TypeVar("T_")
_versions = itertools.count(1)


def count_events(events: pl.DataFrame) -> pl.DataFrame:
    """Events per (item, type, value): the store's counters, computed from a frame."""
    return (
        events.filter(pl.col("item_id") != "")
        .group_by("item_id", "type", "value")
        .agg(n=pl.len().cast(pl.Int64))
        .select(list(ITEM_COUNT_COLUMNS))
    )


class Catalogue:
    def __init__(self, items: pl.DataFrame, counts: pl.DataFrame, as_of: datetime) -> None:
        if "created_at" not in items.columns:
            items = items.with_columns(created_at=pl.lit(None, pl.Datetime("us", "UTC")))
        # Items known only from events (no items file) are items all the same.
        extra = (
            counts.select("item_id")
            .unique()
            .join(items.select("item_id"), on="item_id", how="anti")
        )
        if extra.height:
            items = pl.concat([items, extra], how="diagonal_relaxed")
        self.items = items.sort("item_id")
        self.counts = counts
        self.as_of = as_of
        self.version = next(_versions)
        self._memo: dict[Any, Any] = {}
        self._items_memo: dict[Any, Any] = {}  # work that depends on the items only
        self._lock = threading.Lock()

    def candidates(self) -> np.ndarray:
        """Ids of the items that may be served as of the catalogue's time, sorted: created at or
        before it (or of unknown creation time), not `hidden`, and not past `available_until`.
        Every model, fallback and path ranks these only, so a hidden item is never served."""
        return self.memo_items(
            "candidates",
            lambda: (
                self.items.filter(self.exists() & ~self.withdrawn())["item_id"]
                .to_numpy()
                .astype(object)
            ),
        )

    def item_ids(self) -> frozenset[str]:
        """Every item's id (served or not), for membership tests."""
        return self.memo_items("item_ids", lambda: frozenset(self.items["item_id"].to_list()))

    def exists(self) -> pl.Expr:
        """Items created at or before the catalogue's time (or of unknown creation time)."""
        return pl.col("created_at").is_null() | (pl.col("created_at") <= self.as_of)

    def withdrawn(self) -> pl.Expr:
        """Items that must never be served: `hidden` true (a boolean, or 'true' / '1' as text)
        or an `available_until` at or before the catalogue's time."""
        out = pl.lit(False)
        cols = self.items.schema
        if "hidden" in cols:
            hidden = pl.col("hidden").cast(pl.String).str.to_lowercase()
            out = out | hidden.is_in(["true", "1", "1.0", "yes"]).fill_null(False)
        if "available_until" in cols:
            until = to_timestamp(pl.col("available_until"), cols["available_until"])
            out = out | (until <= self.as_of).fill_null(False)
        return out

    def memo(self, key: Any, compute: Callable[[], T_]) -> T_:
        """compute() once per catalogue and key (thread-safe; the lock is not held while
        computing, so two first callers may both compute: the results are equal)."""
        return _memo(self._memo, self._lock, key, compute)

    def memo_items(self, key: Any, compute: Callable[[], T_]) -> T_:
        """`memo` for work that depends on the items and on which of them may be served, not
        on the counters (rule selections, candidates, attribute lookups): a catalogue that
        `apply` makes from this one keeps it while no item changed or came in or out of
        service."""
        return _memo(self._items_memo, self._lock, key, compute)

    def memoised(self, key: Any) -> bool:
        """Whether `memo` or `memo_items` holds key (its work is done)."""
        with self._lock:
            return key in self._memo or key in self._items_memo

    def _served(self) -> np.ndarray:
        """Per item: whether it exists and whether it is withdrawn, at the catalogue's time."""
        return self.memo(
            "served mask",
            lambda: self.items.select(self.exists(), self.withdrawn()).to_numpy(),
        )

    def apply(self, events: pl.DataFrame, items: pl.DataFrame, as_of: datetime) -> Catalogue:
        """A new catalogue with new events counted and upserted items replaced."""
        counts = self.counts
        if events.height:
            counts = (
                pl.concat([counts, count_events(events)])
                .group_by("item_id", "type", "value")
                .agg(pl.col("n").sum())
                .select(list(ITEM_COUNT_COLUMNS))
            )
        merged = self.items
        if items.height:
            merged = pl.concat(
                [merged.join(items.select("item_id"), on="item_id", how="anti"), items],
                how="diagonal_relaxed",
            )
        new = Catalogue(merged, counts, as_of)
        # Most refreshes bring events only: the items and what may be served stay the same,
        # and so does the work that depends on them alone.
        same_items = not items.height and new.items.height == self.items.height
        if same_items and np.array_equal(new._served(), self._served()):
            with self._lock:
                new._items_memo = dict(self._items_memo)
        return new

    @classmethod
    def from_events(cls, items: pl.DataFrame, events: pl.DataFrame, at: datetime) -> Catalogue:
        """The catalogue as of `at` from frames: events strictly before it, items that exist."""
        before = events.filter(pl.col("timestamp") < at)
        return cls(items, count_events(before), at)


def _memo(memo: dict[Any, Any], lock: threading.Lock, key: Any, compute: Callable[[], T_]) -> T_:
    with lock:
        if key in memo:
            return memo[key]  # type: ignore[no-any-return]
    value = compute()
    with lock:
        memo.setdefault(key, value)
        if len(memo) > 64:  # bounded: keys name models, and models come and go
            memo.pop(next(iter(memo)))
        return memo[key]  # type: ignore[no-any-return]


def just_after(t: datetime | None) -> datetime:
    """The serving time of data whose newest event is at t: one microsecond later, so every
    event counts (a strict as-of read of time t itself would leave it out)."""
    if t is None:  # no event yet: the epoch (an empty catalogue has nothing to age)
        return datetime(1970, 1, 1, tzinfo=UTC)
    return t + timedelta(microseconds=1)
