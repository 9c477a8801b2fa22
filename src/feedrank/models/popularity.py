"""Popularity: the baseline every table shows, and the cold-start fallback. Items are scored
by their share of weighted engagement before the serving time — overall, or within the user's
segment (e.g. age band x gender) when the segment has enough of it — optionally time-decayed
(trending)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import polars as pl

from feedrank.config import Settings
from feedrank.data.site import SiteData
from feedrank.features.groups import user_age_band
from feedrank.features.history import History, T
from feedrank.models.base import Recommender

OVERALL = "popular_overall"
IN_SEGMENT = "popular_in_segment"


def user_segments(
    users: pl.DataFrame, segment_by: Sequence[str], age_bands: Sequence[int]
) -> pl.DataFrame:
    """user_id and a segment key built from the named attributes (age_band derived from age)."""
    parts = []
    for c in segment_by:
        band = user_age_band(users, age_bands) if c == "age_band" else None
        if band is not None:
            parts.append(band)
        elif c in users.columns:
            parts.append(pl.col(c).cast(pl.String))
    if not parts:
        return users.select("user_id", segment=pl.lit(None, pl.String))
    return users.select(
        "user_id", segment=pl.concat_str([p.fill_null("?") for p in parts], separator="|")
    )


class PopularityRecommender(Recommender):
    kind = "popularity"

    def __init__(
        self,
        segment_by: Sequence[str] = (),
        half_life_days: float | None = None,
        min_segment_weight: float = 20.0,
    ) -> None:
        self.segment_by = tuple(segment_by)
        self.half_life_days = half_life_days
        self.min_segment_weight = min_segment_weight

    def fit(self, data: SiteData, settings: Settings | None = None) -> Self:
        self.settings_ = settings or Settings()
        return self.serve_with(data)

    def _prepare_serving(self) -> None:
        ev = History(self.data_, self.settings_, []).events
        ev = ev.filter((pl.col(T) < self.at_) & (pl.col("item_id") != "") & (pl.col("weight") > 0))
        w = pl.col("weight")
        if self.half_life_days:
            age = (pl.lit(self.at_) - pl.col(T)).dt.total_seconds() / 86400.0
            w = w * (0.5 ** (age / self.half_life_days))
        ev = ev.with_columns(w=w)
        self.overall_ = ev.group_by("item_id").agg(pl.col("w").sum())
        self.segments_ = user_segments(self.data_.users, self.segment_by, self.settings_.age_bands)
        if self.segment_by:
            seg = ev.join(self.segments_, on="user_id", how="left")
            self.by_segment_ = seg.group_by("segment", "item_id").agg(pl.col("w").sum())
            totals = self.by_segment_.group_by("segment").agg(total=pl.col("w").sum())
            self.strong_segments_ = set(
                totals.filter(pl.col("total") >= self.min_segment_weight)["segment"].to_list()
            )
        else:
            self.by_segment_ = pl.DataFrame(
                schema={"segment": pl.String, "item_id": pl.String, "w": pl.Float64}
            )
            self.strong_segments_ = set()

    def sources(self, user_ids: Sequence[str]) -> list[str]:
        """Which popularity each user gets: their segment's when it is strong enough."""
        seg = (
            pl.DataFrame({"user_id": list(user_ids)}, schema={"user_id": pl.String})
            .join(self.segments_, on="user_id", how="left", maintain_order="left")["segment"]
            .to_list()
        )
        return [IN_SEGMENT if s in self.strong_segments_ else OVERALL for s in seg]

    def _vector(self, table: pl.DataFrame, item_ids: np.ndarray) -> np.ndarray:
        v = (
            pl.DataFrame({"item_id": item_ids}, schema={"item_id": pl.String})
            .join(table.select("item_id", "w"), on="item_id", how="left", maintain_order="left")[
                "w"
            ]
            .fill_null(0.0)
            .to_numpy()
        )
        total = v.sum()
        return v / total if total > 0 else v

    def score(self, user_ids: Sequence[str], item_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        self._check()
        items = np.asarray(item_ids, dtype=object)
        overall = self._vector(self.overall_, items)
        out = np.tile(overall, (len(user_ids), 1))
        if self.segment_by:
            seg = (
                pl.DataFrame({"user_id": list(user_ids)}, schema={"user_id": pl.String})
                .join(self.segments_, on="user_id", how="left", maintain_order="left")["segment"]
                .to_list()
            )
            for s in set(seg) & self.strong_segments_:
                rows = [i for i, x in enumerate(seg) if x == s]
                out[rows] = self._vector(self.by_segment_.filter(pl.col("segment") == s), items)
        return out

    def _params(self) -> dict[str, Any]:
        return {
            "segment_by": list(self.segment_by),
            "half_life_days": self.half_life_days,
            "min_segment_weight": self.min_segment_weight,
        }
