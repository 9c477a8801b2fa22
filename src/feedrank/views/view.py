"""Views: what a scoring step may read, as of a time `at`, and nothing more.

- `histories(users)`: those users' events strictly before `at` (a batch at a time: never the
  whole event table on a serving path);
- `profiles(users)`: their user rows;
- `catalogue`: the items and their counters (views.catalogue);
- `active_users()`: who has events before `at` (what a batch job iterates over).

`FrameView` reads frames (a SiteData: offline evaluation, tests); `StoreView` reads a Store
(serving, batch scoring). A fitted model scores through a view (`model.at(view)`), so fresh
events mean a newer view, never a changed model."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from functools import cached_property

import numpy as np
import polars as pl

from feedrank.settings import Settings
from feedrank.store.base import Store
from feedrank.views.catalogue import Catalogue, just_after
from feedrank.views.site import SiteData


class View(ABC):
    settings: Settings
    catalogue: Catalogue
    at: datetime

    @abstractmethod
    def histories(self, user_ids: Sequence[str]) -> pl.DataFrame:
        """The users' events strictly before `at`, in time order."""

    @abstractmethod
    def profiles(self, user_ids: Sequence[str]) -> pl.DataFrame:
        """The users' rows (user_id + attributes) for those that have one."""

    @abstractmethod
    def active_users(self) -> list[str]:
        """Users with at least one event before `at`, sorted."""

    def candidates(self) -> np.ndarray:
        return self.catalogue.candidates()

    @property
    def types(self) -> list[str]:
        """Event types known to the catalogue (what the engagement rule is evaluated over)."""
        return self.catalogue.memo(
            "types", lambda: sorted(self.catalogue.counts["type"].unique().to_list())
        )


class FrameView(View):
    """A view over frames, as of `at` (default: `serving_time(data)`)."""

    def __init__(self, data: SiteData, settings: Settings, at: datetime | None = None) -> None:
        self.settings = settings
        self.at = at or serving_time(data)
        self._events = data.events.filter(pl.col("timestamp") < self.at)
        self._users = data.users
        self.catalogue = Catalogue.from_events(data.items, self._events, self.at)

    @cached_property
    def _rows_by_user(self) -> pl.DataFrame:
        """user_id -> the row numbers of their events: a hash group-by, once (a sort of the
        ids would cost ten times as much), then each batch is a join and a gather."""
        return (
            self._events.select("user_id").with_row_index("__row").group_by("user_id").agg("__row")
        )

    def histories(self, user_ids: Sequence[str]) -> pl.DataFrame:
        ids = pl.DataFrame({"user_id": list(user_ids)}, schema={"user_id": pl.String})
        rows = ids.join(self._rows_by_user, on="user_id")["__row"].explode().drop_nulls()
        # in row order, then by time (stably): each user's events in the order they came
        return self._events[rows.sort().to_numpy()].sort("timestamp", maintain_order=True)

    def profiles(self, user_ids: Sequence[str]) -> pl.DataFrame:
        return self._users.filter(pl.col("user_id").is_in(list(user_ids)))

    def active_users(self) -> list[str]:
        return self._rows_by_user["user_id"].sort().to_list()


class StoreView(View):
    """A view over a store: histories and profiles are read per batch of users, by index.
    `prefetched` holds histories already read (the server reads a user's events once, to set
    the serving time past them)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        catalogue: Catalogue,
        at: datetime | None = None,
        prefetched: dict[str, pl.DataFrame] | None = None,
    ) -> None:
        self.store, self.settings, self.catalogue = store, settings, catalogue
        self.at = at or catalogue.as_of
        self._prefetched = prefetched or {}

    @classmethod
    def for_user(
        cls, store: Store, settings: Settings, catalogue: Catalogue, user_id: str
    ) -> StoreView:
        """A view of one user as stored now: served as of just after their newest event when
        that is newer than the catalogue."""
        events = store.events(user_ids=[user_id])
        newest = events["timestamp"].max() if events.height else None
        at = max(catalogue.as_of, just_after(newest)) if newest is not None else catalogue.as_of  # type: ignore[arg-type]
        return cls(
            store, settings, catalogue, at, {user_id: events.filter(pl.col("timestamp") < at)}
        )

    def histories(self, user_ids: Sequence[str]) -> pl.DataFrame:
        ids = list(user_ids)
        if ids and all(u in self._prefetched for u in ids):
            return pl.concat([self._prefetched[u] for u in ids]).sort(
                "timestamp", maintain_order=True
            )
        return self.store.events(end=self.at, user_ids=ids)

    def profiles(self, user_ids: Sequence[str]) -> pl.DataFrame:
        return self.store.users(list(user_ids))

    def active_users(self) -> list[str]:
        counts = self.store.user_counts()
        return sorted(counts.filter(pl.col("first_ts") < self.at)["user_id"].unique().to_list())


def store_catalogue(store: Store) -> Catalogue:
    """The store's catalogue now: its items and counters, as of just after its newest event or
    item. The data's clock, not the wall clock: a store of last year's logs is served as of
    then (a live site's newest event is now anyway), and no stored event or item is in the
    catalogue's future."""
    items = store.items()
    newest = pl.Series([store.newest_event_time()], dtype=pl.Datetime("us", "UTC"))
    return Catalogue(items, store.item_counts(), just_after(newest_time(newest, items)))


def serving_time(data: SiteData) -> datetime:
    """Just after the newest event or item of the data: the data's own clock (what a store of
    the same records is served as of, `store_catalogue`)."""
    return just_after(newest_time(data.events["timestamp"], data.items))


def newest_time(event_times: pl.Series, items: pl.DataFrame) -> datetime | None:
    """The newest of some events' times and some items' creation times (None: neither)."""
    times = [event_times.max()]
    if "created_at" in items.columns:
        times.append(items["created_at"].max())
    known = [t for t in times if t is not None]
    return max(known) if known else None  # type: ignore[type-var,return-value]
