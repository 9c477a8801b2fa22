"""SiteData: the users, items and events a model learns from or serves against, as Polars frames
in the canonical schema (see feedrank.schema)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl


@dataclass(frozen=True)
class SiteData:
    users: pl.DataFrame
    items: pl.DataFrame
    events: pl.DataFrame  # sorted by timestamp

    def until(self, t: datetime) -> SiteData:
        """Only what was known strictly before t: events before t, items created before t."""
        return SiteData(
            users=self.users,
            items=self.items.filter(pl.col("created_at") < t),
            events=self.events.filter(pl.col("timestamp") < t),
        )

    @property
    def time_span(self) -> tuple[datetime | None, datetime | None]:
        if self.events.is_empty():
            return None, None
        ts = self.events["timestamp"]
        return ts.min(), ts.max()  # type: ignore[return-value]

    def engaged_pairs(self, engagement_types: tuple[str, ...]) -> pl.DataFrame:
        """Distinct (user_id, item_id) pairs with at least one engagement."""
        return (
            self.events.filter(pl.col("type").is_in(engagement_types) & (pl.col("item_id") != ""))
            .select("user_id", "item_id")
            .unique()
        )
