"""Freshness: newest items first, a candidate generator of the hybrid recommenders (and a
baseline of its own). Items are scored by their age at the serving time alone; an item of
unknown creation time has no signal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
import polars as pl

from feedrank.exceptions import ConfigError
from feedrank.models.base import Recommender, Scorer
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import View


class FreshnessRecommender(Recommender):
    """Newest first: score = 0.5 ** (item age in days at serving time / half_life_days)."""

    kind = "freshness"
    personal = False

    def __init__(self, half_life_days: float = 7.0) -> None:
        self.half_life_days = half_life_days

    def fit(self, data: SiteData, settings: Settings | None = None) -> Self:
        if not self.half_life_days > 0:
            raise ConfigError(f"half_life_days must be > 0; got {self.half_life_days}")
        self._fitted_on(data, settings)
        return self

    def at(self, view: View) -> FreshnessScorer:
        return FreshnessScorer(self, view)


class FreshnessScorer(Scorer):
    model: FreshnessRecommender

    def score_users(
        self, user_ids: Sequence[str], histories: pl.DataFrame, item_ids: np.ndarray
    ) -> np.ndarray:
        age = (
            pl.DataFrame({"item_id": item_ids}, schema={"item_id": pl.String})
            .join(
                self.view.catalogue.items.select("item_id", "created_at"),
                on="item_id",
                how="left",
                maintain_order="left",
            )
            .select(age=(pl.lit(self.view.at) - pl.col("created_at")).dt.total_seconds() / 86400.0)[
                "age"
            ]
            .fill_null(float("nan"))
            .to_numpy()
        )
        fresh = 0.5 ** (np.maximum(age, 0.0) / self.model.half_life_days)
        return np.tile(fresh, (len(user_ids), 1))
