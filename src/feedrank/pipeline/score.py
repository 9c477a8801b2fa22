"""Batch scoring: top-K for every user of a store, written as one new generation and activated
atomically. Users are read a batch at a time through a StoreView (their histories by index), so
memory follows the batch and the answer, not the event table."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import polars as pl

from feedrank.models.base import Recommender
from feedrank.models.popularity import PopularityRecommender
from feedrank.serving.service import RecommendationService
from feedrank.store.base import Store
from feedrank.views.view import StoreView, store_catalogue


def every_user(store: Store) -> list[str]:
    """Users with events or a profile, sorted."""
    ids = set(store.user_counts()["user_id"].unique().to_list())
    ids |= set(store.users()["user_id"].to_list())
    return sorted(ids)


def serving(
    store: Store,
    model: Recommender,
    fallback: PopularityRecommender | None = None,
    negative_types: Sequence[str] | None = None,
) -> RecommendationService:
    """The service of a fitted model over the store as it is now, with the model's settings
    (and the negative-feedback types given, else the model's)."""
    view = StoreView(store, model.settings_, store_catalogue(store))
    return RecommendationService(model, view, fallback, negative_types)


def score_all(
    store: Store,
    model: Recommender,
    label: str,
    fallback: PopularityRecommender | None = None,
    k: int = 100,
    exclude_seen: bool = True,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, pl.DataFrame]:
    """The new generation's id and its rows."""
    service = serving(store, model, fallback)
    users = every_user(store)
    recs = service.recommend(users, k, exclude_seen, progress=progress)
    return store.write_generation(recs, label), recs
