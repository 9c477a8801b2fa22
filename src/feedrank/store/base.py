"""The Store: the one place events, users, items, settings and served recommendations live.

Stores know records only (feedrank.schema): no features, no models. Backends (the embedded
SQLite store, Elasticsearch/OpenSearch) implement this class and run the same contract suite
(tests/contract). Frames are Polars frames in the canonical schema; callers never see backend
types.

Beyond the records, a store keeps, up to date at write time:
- counters per (item, type, value) and per (user, type, value), so serving reads aggregates
  without reading the event table;
- a change feed: every write advances a watermark, and `changes(since)` says what is new (the
  events, the items upserted, whether users were erased), so a server applies changes
  incrementally instead of reloading;
- the settings, versioned (`put_settings`, `settings`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from feedrank.settings import Settings

RECOMMENDATION_COLUMNS = {
    "user_id": pl.String(),
    "rank": pl.Int32(),
    "item_id": pl.String(),
    "score": pl.Float64(),
    "source": pl.String(),
}
ITEM_COUNT_COLUMNS = {
    "item_id": pl.String(),
    "type": pl.String(),
    "value": pl.Float64(),
    "n": pl.Int64(),
}
USER_COUNT_COLUMNS = {
    "user_id": pl.String(),
    "type": pl.String(),
    "value": pl.Float64(),
    "n": pl.Int64(),
    "first_ts": pl.Datetime("us", "UTC"),
    "last_ts": pl.Datetime("us", "UTC"),
}


@dataclass(frozen=True)
class Generation:
    """One batch of precomputed recommendations; exactly one is active at a time."""

    id: int
    model: str
    created_at: datetime
    n_users: int
    n_rows: int
    active: bool


@dataclass(frozen=True)
class Watermark:
    """How far a reader has followed the store's writes: opaque positions, compared only with
    positions from the same store."""

    events: int = 0
    items: int = 0
    erasures: int = 0


@dataclass(frozen=True)
class Changes:
    """What was written after a watermark: new events (canonical columns), the items upserted
    (whole rows), and whether any user was erased; `until` is the watermark to ask from next."""

    events: pl.DataFrame
    items: pl.DataFrame
    erased: bool
    until: Watermark


class Store(ABC):
    url: str

    # -- writes (bulk, idempotent by id) -------------------------------------------------------
    @abstractmethod
    def upsert_users(self, users: pl.DataFrame) -> int:
        """Insert or replace users (user_id + attribute columns). Returns rows written."""

    @abstractmethod
    def upsert_items(self, items: pl.DataFrame) -> int:
        """Insert or replace items (item_id, created_at (may be null) + attribute columns)."""

    @abstractmethod
    def add_events(self, events: pl.DataFrame) -> int:
        """Append validated events; an event already stored (same event_id, or same
        user/item/type/timestamp when it has none) is skipped. Counters move with the new
        events only. Returns the number new."""

    @abstractmethod
    def delete_user(self, user_id: str) -> dict[str, int]:
        """Erase a user everywhere (profile, events, counters, recommendations); counts of what
        was removed."""

    # -- records -----------------------------------------------------------------------------------
    @abstractmethod
    def users(self, user_ids: Sequence[str] | None = None) -> pl.DataFrame:
        """Profiles (all, or those of the given ids that exist)."""

    @abstractmethod
    def items(self, item_ids: Sequence[str] | None = None) -> pl.DataFrame:
        """Items (all, or those of the given ids that exist)."""

    @abstractmethod
    def scan_events(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        user_ids: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        batch_rows: int = 500_000,
    ) -> Iterator[pl.DataFrame]:
        """Events with start <= timestamp < end in frames of at most `batch_rows`, in time
        order: a reader's memory follows the batch, not the table."""

    def events(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        user_ids: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Events with start <= timestamp < end, sorted by timestamp, as one frame."""
        from feedrank.schema import empty_events

        frames = list(self.scan_events(start, end, user_ids=user_ids, types=types))
        return pl.concat(frames) if frames else empty_events()

    def seen_items(self, user_id: str) -> tuple[set[str], datetime | None]:
        """The items the user has any event with but impressions (what they already know), and
        the time of their newest event (None: no event). A server's fast path: backends answer
        it without building frames."""
        ev = self.events(user_ids=[user_id])
        if ev.is_empty():
            return set(), None
        known = ev.filter((pl.col("item_id") != "") & (pl.col("type") != "impression"))
        return set(known["item_id"].to_list()), ev["timestamp"].max()  # type: ignore[return-value]

    # -- counters (kept at write time) -------------------------------------------------------------
    @abstractmethod
    def item_counts(self) -> pl.DataFrame:
        """Events per (item, type, value): ITEM_COUNT_COLUMNS."""

    @abstractmethod
    def user_counts(self, user_ids: Sequence[str] | None = None) -> pl.DataFrame:
        """Events per (user, type, value) with their first and last time: USER_COUNT_COLUMNS."""

    def newest_event_time(self) -> datetime | None:
        """The newest stored event's time (None: no event), from the counters; backends answer
        it without reading every user's counters."""
        newest = self.user_counts()["last_ts"].max()
        return newest  # type: ignore[return-value]

    # -- change feed -------------------------------------------------------------------------------
    @abstractmethod
    def watermark(self) -> Watermark:
        """The position of the newest write."""

    @abstractmethod
    def changes(self, since: Watermark, max_events: int = 100_000) -> Changes:
        """What was written after `since` (at most `max_events` events: ask again from
        `until` for the rest)."""

    # -- settings ------------------------------------------------------------------------------------
    @abstractmethod
    def put_settings(self, settings: dict[str, Any]) -> int:
        """Store a new version of the settings (a JSON-able dict); returns its version."""

    @abstractmethod
    def settings_versions(self) -> list[tuple[int, datetime]]:
        """(version, stored at), oldest first."""

    @abstractmethod
    def stored_settings(self, version: int | None = None) -> dict[str, Any] | None:
        """The newest stored settings (or the given version); None when none were stored."""

    def settings(self) -> Settings:
        """The newest stored settings as Settings; the defaults when none were stored."""
        stored = self.stored_settings()
        return Settings.from_dict(stored, "the store's settings") if stored else Settings()

    # -- recommendation generations --------------------------------------------------------------
    @abstractmethod
    def write_generation(self, recs: pl.DataFrame, model: str, activate: bool = True) -> int:
        """Store a whole generation (columns RECOMMENDATION_COLUMNS) invisibly, then activate it
        atomically when asked: readers see the old generation or the new one, never a mix."""

    @abstractmethod
    def activate_generation(self, generation_id: int) -> None: ...

    @abstractmethod
    def generations(self) -> list[Generation]: ...

    def active_generation(self) -> Generation | None:
        return next((g for g in self.generations() if g.active), None)

    @abstractmethod
    def recommendations(self, user_id: str, k: int | None = None) -> pl.DataFrame:
        """The active generation's recommendations for a user, best first (empty if none)."""

    # -- housekeeping ------------------------------------------------------------------------------
    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counts of users, items, events per type, and the events' time span."""

    def check_writable(self) -> None:  # noqa: B027 - backends whose faults show on each call
        """A small write, committed: raises StoreError while the store cannot take writes
        (read-only, disk full)."""

    def durable_writes(self) -> None:  # noqa: B027 - backends that always fsync need nothing
        """From now on, this thread's writes are on disk when they return (a full fsync per
        commit), not only safe against a killed process."""

    def bounded_cache(self) -> None:  # noqa: B027 - backends without a client-side cache
        """From now on, this thread's connection and every one opened later keep a small page
        cache: a server reads by index from many threads, and the operating system's file
        cache serves them all, so its memory does not follow the store's size."""

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        pass

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
