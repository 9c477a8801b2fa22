"""Popularity: the baseline every table shows, and the cold-start fallback. Items are scored
by their share of weighted engagement before the serving time — overall (from the view's
counters, so it follows fresh events), or within the user's segment (e.g. age band x gender,
learned at fit) when the segment has enough of it — or time-decayed as of the fit (trending).
Items nobody engaged with have no signal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import polars as pl

from feedrank.exceptions import ConfigError
from feedrank.features.groups import user_age_band
from feedrank.features.history import T, item_totals, weighted
from feedrank.models.base import Recommender, Scorer
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import View

OVERALL = "popular_overall"
IN_SEGMENT = "popular_in_segment"


def user_segments(
    users: pl.DataFrame, segment_by: Sequence[str], age_bands: Sequence[int]
) -> pl.DataFrame:
    """user_id and a segment key built from the named attributes (age_band derived from age);
    null where the user has none of them."""
    parts = []
    for c in segment_by:
        band = user_age_band(users, age_bands) if c == "age_band" else None
        if band is not None:
            parts.append(band)
        elif c in users.columns:
            parts.append(pl.col(c).cast(pl.String))
    if not parts or users.is_empty():
        return users.select("user_id", segment=pl.lit(None, pl.String))
    known = pl.any_horizontal([p.is_not_null() for p in parts])
    key = pl.concat_str([p.fill_null("?") for p in parts], separator="|")
    return users.select("user_id", segment=pl.when(known).then(key))


class PopularityRecommender(Recommender):
    kind = "popularity"
    personal = False

    overall_: pl.DataFrame  # item_id, w: decayed weights as of the fit (trending only)
    by_segment_: pl.DataFrame  # segment, item_id, w
    strong_segments_: list[str]

    def __init__(
        self,
        segment_by: Sequence[str] = (),
        half_life_days: float | None = None,
        min_segment_weight: float = 20.0,
    ) -> None:
        self.segment_by = list(segment_by)
        self.half_life_days = half_life_days
        self.min_segment_weight = min_segment_weight

    def fit(self, data: SiteData, settings: Settings | None = None) -> Self:
        settings = self._fitted_on(data, settings)
        if self.half_life_days is not None and not self.half_life_days > 0:
            raise ConfigError(f"half_life_days must be > 0; got {self.half_life_days}")
        ev = weighted(data.events, data.items, settings, data.types).filter(pl.col("weight") > 0)
        w = pl.col("weight")
        end = data.time_span[1]
        if self.half_life_days and end is not None:
            age = (pl.lit(end) - pl.col(T)).dt.total_seconds() / 86400.0
            w = w * (0.5 ** (age / self.half_life_days))
        ev = ev.with_columns(w=w)
        self.overall_ = ev.group_by("item_id").agg(pl.col("w").sum()).sort("item_id")
        segments = user_segments(data.users, self.segment_by, settings.age_bands)
        seg = ev.join(segments, on="user_id").filter(pl.col("segment").is_not_null())
        self.by_segment_ = (
            seg.group_by("segment", "item_id").agg(pl.col("w").sum()).sort("segment", "item_id")
        )
        totals = self.by_segment_.group_by("segment").agg(total=pl.col("w").sum())
        self.strong_segments_ = sorted(
            totals.filter(pl.col("total") >= self.min_segment_weight)["segment"].to_list()
        )
        return self

    def at(self, view: View) -> PopularityScorer:
        return PopularityScorer(self, view)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"strong_segments": self.strong_segments_}, {
            "overall_items": self.overall_["item_id"].to_numpy().astype(str),
            "overall_w": self.overall_["w"].to_numpy(),
            "segment": self.by_segment_["segment"].to_numpy().astype(str),
            "segment_items": self.by_segment_["item_id"].to_numpy().astype(str),
            "segment_w": self.by_segment_["w"].to_numpy(),
        }

    def _load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.strong_segments_ = list(meta["strong_segments"])
        self.overall_ = pl.DataFrame(
            {"item_id": arrays["overall_items"].astype(object), "w": arrays["overall_w"]},
            schema={"item_id": pl.String, "w": pl.Float64},
        )
        self.by_segment_ = pl.DataFrame(
            {
                "segment": arrays["segment"].astype(object),
                "item_id": arrays["segment_items"].astype(object),
                "w": arrays["segment_w"],
            },
            schema={"segment": pl.String, "item_id": pl.String, "w": pl.Float64},
        )


def _shares(table: pl.DataFrame, item_ids: np.ndarray) -> np.ndarray:
    """Each item's share of the table's weight (NaN: no weight, no signal)."""
    v = (
        pl.DataFrame({"item_id": item_ids}, schema={"item_id": pl.String})
        .join(table.select("item_id", "w"), on="item_id", how="left", maintain_order="left")["w"]
        .fill_null(0.0)
        .to_numpy()
    )
    total = v.sum()
    out = v / total if total > 0 else v.astype(np.float64, copy=True)
    out[~(v > 0)] = np.nan
    return out


class PopularityScorer(Scorer):
    model: PopularityRecommender

    def overall(self) -> pl.DataFrame:
        """item_id, w: live weights from the view's counters (decayed ones as of the fit)."""
        if self.model.half_life_days:
            return self.model.overall_
        totals = item_totals(self.view.catalogue, self.settings, [])
        return totals.select("item_id", w=pl.col("i_weight"))

    def segments(self, user_ids: Sequence[str]) -> list[str | None]:
        users = list(user_ids)
        if not self.model.segment_by:
            return [None] * len(users)
        seg = user_segments(
            self.view.profiles(users), self.model.segment_by, self.settings.age_bands
        )
        return (
            pl.DataFrame({"user_id": users}, schema={"user_id": pl.String})
            .join(seg, on="user_id", how="left", maintain_order="left")["segment"]
            .to_list()
        )

    def sources(self, user_ids: Sequence[str]) -> list[str]:
        """Which popularity each user gets: their segment's when it is strong enough."""
        strong = set(self.model.strong_segments_)
        return [IN_SEGMENT if s in strong else OVERALL for s in self.segments(user_ids)]

    def score_users(
        self, user_ids: Sequence[str], histories: pl.DataFrame, item_ids: np.ndarray
    ) -> np.ndarray:
        overall = _shares(self.overall(), item_ids)
        out = np.tile(overall, (len(user_ids), 1))
        strong = set(self.model.strong_segments_)
        seg = self.segments(user_ids)
        for s in set(seg) & strong:
            rows = [i for i, x in enumerate(seg) if x == s]
            table = self.model.by_segment_.filter(pl.col("segment") == s)
            out[rows] = _shares(table, item_ids)
        return out
