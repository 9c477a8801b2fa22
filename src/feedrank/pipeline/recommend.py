"""The recommendation service shared by the CLI, the batch scorer and the HTTP API: a model's
top-k for users with history, popularity (in their segment, then overall) for users without,
every row marked with where it came from, and explanations on request."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl

from feedrank.models.base import RECS_SCHEMA, Recommender
from feedrank.models.popularity import PopularityRecommender

MODEL = "model"
FALLBACK_SEGMENTS = ("age_band", "gender")


class RecommendationService:
    def __init__(self, model: Recommender, segment_by: Sequence[str] = FALLBACK_SEGMENTS) -> None:
        self.model = model
        data, settings = model.data_, model.settings_
        self.fallback = (
            PopularityRecommender(segment_by=segment_by)
            .fit(data, settings)
            .serve_with(data, model.at_)
        )
        engaged = data.events.filter(
            pl.col("type").is_in(settings.engagement_types)
            & (pl.col("item_id") != "")
            & (pl.col("timestamp") < model.at_)
        )
        self._with_history = set(engaged["user_id"].unique().to_list())

    def has_history(self, user_id: str) -> bool:
        return user_id in self._with_history

    def recommend(
        self,
        user_ids: Sequence[str],
        k: int = 10,
        exclude_seen: bool = True,
        batch_size: int = 512,
        progress: Callable[[int], None] | None = None,
    ) -> pl.DataFrame:
        """Columns user_id, rank, item_id, score, source; users in input order."""
        warm = [u for u in user_ids if u in self._with_history]
        cold = [u for u in user_ids if u not in self._with_history]
        parts = []
        for start in range(0, len(warm), batch_size):
            chunk = warm[start : start + batch_size]
            parts.append(
                self.model.recommend(chunk, k, exclude_seen).with_columns(source=pl.lit(MODEL))
            )
            if progress:
                progress(len(chunk))
        if cold:
            recs = self.fallback.recommend(cold, k, exclude_seen)
            src = pl.DataFrame(
                {"user_id": cold, "source": self.fallback.sources(cold)},
                schema={"user_id": pl.String, "source": pl.String},
            )
            parts.append(recs.join(src, on="user_id", how="left"))
            if progress:
                progress(len(cold))
        if not parts:
            return pl.DataFrame(schema={**RECS_SCHEMA, "source": pl.String})
        out = pl.concat(parts)
        order = pl.DataFrame(
            {"user_id": list(user_ids), "__o": np.arange(len(user_ids))},
            schema={"user_id": pl.String, "__o": pl.Int64},
        )
        return out.join(order, on="user_id").sort("__o", "rank").drop("__o")

    def explain(self, recs: pl.DataFrame, top: int = 5) -> list[list[dict[str, Any]]]:
        """Per row of `recs`: the model's largest contributions (empty for fallback rows)."""
        mine = recs.with_row_index("__row").filter(pl.col("source") == MODEL)
        why = self.model.explain_pairs(mine["user_id"].to_list(), mine["item_id"].to_list(), top)
        out: list[list[dict[str, Any]]] = [[] for _ in range(recs.height)]
        for row, reasons in zip(mine["__row"].to_list(), why, strict=True):
            out[row] = reasons
        return out


def reason_text(contributions: list[dict[str, Any]], top: int = 3) -> str:
    """'user_share_content_type=0.62 (+0.84); item_age_days=2.1 (-0.30)'."""
    parts = []
    for c in contributions[:top]:
        v = c["value"]
        shown = f"{v:.3g}" if isinstance(v, float) else str(v)
        parts.append(f"{c['feature']}={shown} ({c['contribution']:+.2f})")
    return "; ".join(parts)
