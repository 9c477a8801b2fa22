"""SiteData: the users, items and events of a window, as Polars frames in the canonical schema
(feedrank.schema). What models are fitted on and what offline evaluation splits; serving reads
through a View instead (feedrank.views.view)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from feedrank.settings import Settings
from feedrank.store.base import Store


@dataclass(frozen=True)
class SiteData:
    users: pl.DataFrame
    items: pl.DataFrame
    events: pl.DataFrame  # sorted by timestamp
    # Where knowledge stops (set by `until`): an example whose label window reaches past it
    # cannot be labelled honestly, so none is built (features.examples).
    end: datetime | None = None

    def until(self, t: datetime) -> SiteData:
        """Only what was known strictly before t: events before t, items created before t (or
        of unknown creation time)."""
        ts = self.events["timestamp"]
        events = (  # time-sorted events (the usual case): a zero-copy slice, not a copy
            self.events.slice(0, ts.search_sorted(t, side="left"))
            if ts.is_sorted()
            else self.events.filter(pl.col("timestamp") < t)
        )
        return SiteData(
            users=self.users,
            items=self.items.filter(pl.col("created_at").is_null() | (pl.col("created_at") < t)),
            events=events,
            end=t,
        )

    def without(self, pairs: pl.DataFrame) -> SiteData:
        """Every event of these (user_id, item_id) pairs removed (a hold-out)."""
        events = self.events.join(
            pairs, on=["user_id", "item_id"], how="anti", maintain_order="left"
        )
        return SiteData(self.users, self.items, events, self.end)

    @property
    def time_span(self) -> tuple[datetime | None, datetime | None]:
        if self.events.is_empty():
            return None, None
        ts = self.events["timestamp"]
        return ts.min(), ts.max()  # type: ignore[return-value]

    @property
    def types(self) -> list[str]:
        return sorted(self.events["type"].unique().to_list())

    def engagements(self, settings: Settings) -> pl.DataFrame:
        """The events that count as engagements under the settings."""
        return self.events.filter(settings.engaged_expr(self.types))

    def engaged_pairs(self, settings: Settings) -> pl.DataFrame:
        """Distinct (user_id, item_id) pairs with at least one engagement."""
        return self.engagements(settings).select("user_id", "item_id").unique()

    def seen_pairs(self) -> pl.DataFrame:
        """Distinct (user_id, item_id) pairs the user knows (any item event but an impression)."""
        return self.events.filter(Settings.seen_expr()).select("user_id", "item_id").unique()


def read_site(store: Store, end: datetime | None = None) -> SiteData:
    """Everything a store holds (events before `end`), as frames read in columnar batches: a
    training job's memory follows the frames, not one Python object per event."""
    from feedrank.schema import empty_events

    frames = list(store.scan_events(end=end))
    events = pl.concat(frames, rechunk=False) if frames else empty_events()
    return SiteData(store.users(), store.items(), events, end)
