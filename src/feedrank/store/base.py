"""The Store protocol: the one place events, users, items and served recommendations live.

Backends (the embedded SQLite store, Elasticsearch/OpenSearch) implement this small class and
run the same contract suite (tests/contract). Frames are Polars frames in the canonical schema
of feedrank.schema; callers never see backend types.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from feedrank.data.site import SiteData

RECOMMENDATION_COLUMNS = {
    "user_id": pl.String(),
    "rank": pl.Int32(),
    "item_id": pl.String(),
    "score": pl.Float64(),
    "source": pl.String(),
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


class Store(ABC):
    url: str

    # -- writes (bulk, idempotent by id) -------------------------------------------------------
    @abstractmethod
    def upsert_users(self, users: pl.DataFrame) -> int:
        """Insert or replace users (user_id + attribute columns). Returns rows written."""

    @abstractmethod
    def upsert_items(self, items: pl.DataFrame) -> int:
        """Insert or replace items (item_id, created_at + attribute columns)."""

    @abstractmethod
    def add_events(self, events: pl.DataFrame) -> int:
        """Append validated events; an event already stored (same event_id, or same
        user/item/type/timestamp when it has none) is skipped. Returns the number new."""

    # -- reads -----------------------------------------------------------------------------------
    @abstractmethod
    def users(self) -> pl.DataFrame: ...

    @abstractmethod
    def items(self) -> pl.DataFrame: ...

    @abstractmethod
    def events(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        user_ids: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Events with start <= timestamp < end, sorted by timestamp."""

    def user_history(self, user_id: str, limit: int | None = None) -> pl.DataFrame:
        """A user's events, newest first."""
        h = self.events(user_ids=[user_id]).reverse()
        return h.head(limit) if limit else h

    def load(self, until: datetime | None = None) -> SiteData:
        data = SiteData(self.users(), self.items(), self.events())
        return data.until(until) if until else data

    @abstractmethod
    def delete_user(self, user_id: str) -> dict[str, int]:
        """Erase a user everywhere (profile, events, recommendations); counts of what was removed."""

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

    def durable_writes(self) -> None:  # noqa: B027 - backends that always fsync need nothing
        """From now on, this thread's writes are on disk when they return (a full fsync per
        commit), not only safe against a killed process."""

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        pass

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
