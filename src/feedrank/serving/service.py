"""The recommendation service shared by the CLI, the batch scorer and the HTTP API: a model's
top-k, filled where the model has no signal (a user it knows nothing about, a list it cannot
complete) from popularity — in the user's segment when segments exist and are strong enough,
else overall — then from the newest items; every row says where it came from."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl

from feedrank.models.base import RECS_SCHEMA, Recommender, Scorer
from feedrank.models.freshness import FreshnessRecommender
from feedrank.models.popularity import PopularityRecommender, PopularityScorer
from feedrank.serving.ranking import Answer, Source, rank_users
from feedrank.serving.rules import Rules, select
from feedrank.views.site import SiteData
from feedrank.views.view import View

MODEL = "model"
NEWEST = "newest"
ANY = "catalogue"  # an eligible item no model, popularity or recency could rank
FALLBACK_SEGMENTS = ("age_band", "gender")
SERVED_SCHEMA = {**RECS_SCHEMA, "source": pl.String}


def fallback_model(data: SiteData, settings: Any) -> PopularityRecommender:
    """The cold-start fallback fitted on a training window: popularity by age band x gender
    (overall where a user has no segment or a segment is too thin)."""
    return PopularityRecommender(segment_by=FALLBACK_SEGMENTS).fit(data, settings)


class RecommendationService:
    def __init__(
        self,
        model: Recommender,
        view: View,
        fallback: PopularityRecommender | None = None,
        negative_types: Sequence[str] | None = None,
    ) -> None:
        self.view = view
        self.scorer: Scorer = model.at(view)
        if fallback is None:  # no fitted segments: overall popularity, live from the view
            fallback = PopularityRecommender().fit(empty_site(), model.settings_)
        self.fallback: PopularityScorer = fallback.at(view)
        self.newest = FreshnessRecommender().fit(empty_site(), model.settings_).at(view)
        self.rest = AnyItem(model, view)
        # what a user said they do not want, never served to them again (a setting)
        self.negative_types = tuple(
            model.settings_.negative_types if negative_types is None else negative_types
        )

    def recommend(
        self,
        user_ids: Sequence[str],
        k: int = 10,
        exclude_seen: bool = True,
        batch_size: int = 512,
        progress: Callable[[int], None] | None = None,
        rules: Rules | None = None,
    ) -> pl.DataFrame:
        """Columns user_id, rank, item_id, score, source; users in input order."""
        rules = rules or Rules(exclude_seen=exclude_seen)
        return self.answer(user_ids, k, rules, batch_size, progress).recs

    def answer(
        self,
        user_ids: Sequence[str],
        k: int = 10,
        rules: Rules | None = None,
        batch_size: int = 512,
        progress: Callable[[int], None] | None = None,
    ) -> Answer:
        """Each user's top-k under `rules`: the model's best eligible items, refilled from
        popularity, the newest and then any eligible item, so a list has k items whenever k
        eligible items exist. Many users without rules go through the model's own batch
        top-k; otherwise serving.ranking ranks the eligible items (the same answer)."""
        rules = rules or Rules()
        users = list(user_ids)
        if rules.plain and len(users) > 1:  # negative feedback is seen: excluded too
            parts = []
            for start in range(0, len(users), batch_size):
                chunk = users[start : start + batch_size]
                parts.append(self._chunk(chunk, k, rules.exclude_seen))
                if progress:
                    progress(len(chunk))
            recs = pl.concat(parts) if parts else pl.DataFrame(schema=SERVED_SCHEMA)
            return Answer(recs, select(self.view.catalogue, rules).removed, {})
        return rank_users(
            self.view, self.sources(), users, k, rules, self.negative_types, batch_size, progress
        )

    def sources(self) -> list[Source]:
        """The scorers a list is filled from, in order (popularity is named per user)."""
        return [
            (MODEL, self.scorer),
            (self.fallback.sources, self.fallback),
            (NEWEST, self.newest),
            (ANY, self.rest),
        ]

    def _chunk(self, users: list[str], k: int, exclude_seen: bool) -> pl.DataFrame:
        recs = self.scorer.recommend(users, k, exclude_seen).with_columns(source=pl.lit(MODEL))
        for name, scorer in self.sources()[1:]:
            short = _short(recs, users, k)
            if not short:
                break
            names = [name] * len(short) if isinstance(name, str) else name(short)
            more = scorer.recommend(short, k, exclude_seen).join(
                pl.DataFrame(
                    {"user_id": short, "source": names},
                    schema={"user_id": pl.String, "source": pl.String},
                ),
                on="user_id",
                how="left",
            )
            recs = _fill(recs, more, k)
        order = pl.DataFrame(
            {"user_id": users, "__o": np.arange(len(users))},
            schema={"user_id": pl.String, "__o": pl.Int64},
        )
        return (
            recs.join(order, on="user_id")
            .sort("__o", "rank")
            .drop("__o")
            .select(list(SERVED_SCHEMA))
        )

    def explain(self, recs: pl.DataFrame, top: int = 5) -> list[list[dict[str, Any]]]:
        """Per row of `recs`: the model's largest contributions (none for fallback rows)."""
        mine = recs.with_row_index("__row").filter(pl.col("source") == MODEL)
        why = self.scorer.explain_pairs(mine["user_id"].to_list(), mine["item_id"].to_list(), top)
        out: list[list[dict[str, Any]]] = [[] for _ in range(recs.height)]
        for row, reasons in zip(mine["__row"].to_list(), why, strict=True):
            out[row] = reasons
        return out


class AnyItem(Scorer):
    """The last refill: every candidate scores 0, so the rest come in id order."""

    def score_users(
        self, user_ids: Sequence[str], histories: pl.DataFrame, item_ids: np.ndarray
    ) -> np.ndarray:
        return np.zeros((len(user_ids), len(item_ids)))


def _short(recs: pl.DataFrame, users: list[str], k: int) -> list[str]:
    """Users with fewer than k rows."""
    counts = recs.group_by("user_id").len()
    have = dict(zip(counts["user_id"].to_list(), counts["len"].to_list(), strict=True))
    return [u for u in users if have.get(u, 0) < k]


def _fill(recs: pl.DataFrame, more: pl.DataFrame, k: int) -> pl.DataFrame:
    """recs, then rows of `more` for items not already in a user's list, up to k per user;
    ranks renumbered 1..n."""
    more = more.join(recs.select("user_id", "item_id"), on=["user_id", "item_id"], how="anti")
    both = pl.concat([recs.with_columns(__p=pl.lit(0)), more.with_columns(__p=pl.lit(1))])
    return (
        both.sort("user_id", "__p", "rank")
        .with_columns(rank=pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over("user_id"))
        .filter(pl.col("rank") <= k)
        .drop("__p")
    )


def empty_site() -> SiteData:
    from feedrank.schema import empty_events

    return SiteData(
        pl.DataFrame(schema={"user_id": pl.String}),
        pl.DataFrame(schema={"item_id": pl.String, "created_at": pl.Datetime("us", "UTC")}),
        empty_events(),
    )


def reason_text(contributions: list[dict[str, Any]], top: int = 3) -> str:
    """'user_share_content_type=0.62 (+0.84); item_age_days=2.1 (-0.30)'."""
    parts = []
    for c in contributions[:top]:
        v = c["value"]
        shown = f"{v:.3g}" if isinstance(v, float) else str(v)
        parts.append(f"{c['feature']}={shown} ({c['contribution']:+.2f})")
    return "; ".join(parts)
