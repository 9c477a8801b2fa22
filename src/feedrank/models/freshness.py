"""Freshness: newest items first, a candidate generator of the hybrid recommenders (and a
baseline of its own). Items are scored by their age at the serving time alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import polars as pl

from feedrank.config import Settings
from feedrank.data.site import SiteData
from feedrank.exceptions import ConfigError
from feedrank.models.base import Recommender


class FreshnessRecommender(Recommender):
    """Newest first: score = 0.5 ** (item age in days at serving time / half_life_days)."""

    kind = "freshness"

    def __init__(self, half_life_days: float = 7.0) -> None:
        self.half_life_days = half_life_days

    def fit(self, data: SiteData, settings: Settings | None = None) -> Self:
        if self.half_life_days <= 0:
            raise ConfigError(f"half_life_days must be > 0; got {self.half_life_days}")
        self.settings_ = settings or Settings()
        return self.serve_with(data)

    def score(self, user_ids: Sequence[str], item_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        self._check()
        created = (
            pl.DataFrame(
                {"item_id": np.asarray(item_ids, dtype=object)}, schema={"item_id": pl.String}
            )
            .join(
                self.data_.items.select("item_id", "created_at"),
                on="item_id",
                how="left",
                maintain_order="left",
            )
            .select(age=(pl.lit(self.at_) - pl.col("created_at")).dt.total_seconds() / 86400.0)[
                "age"
            ]
            .fill_null(float("inf"))
            .to_numpy()
        )
        fresh = 0.5 ** (np.maximum(created, 0.0) / self.half_life_days)
        return np.tile(fresh, (len(user_ids), 1))

    def _params(self) -> dict[str, Any]:
        return {"half_life_days": self.half_life_days}
