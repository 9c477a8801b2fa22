"""Per-user fresh views: score one user against their events as they are in the store now,
without retraining and without rebuilding the whole site's history.

Every user-scoped feature (type counts, hour share, attribute shares, pair history) is computed
from that user's own events only, so a view holding just those events gives the same user
features as the full data. Item features (engagements, CTR, exposure) need every user's events:
they are taken from the model as it was loaded (refreshed at each reload). A test checks that a
fresh view of an unchanged user scores exactly like the full model."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import TypeGuard

import numpy as np
import polars as pl

from feedrank.data.site import SiteData
from feedrank.features.groups import FeatureGroups
from feedrank.features.history import History
from feedrank.models.base import Recommender
from feedrank.models.glm import GLMRecommender
from feedrank.models.linear import LinearScorer


class _PinnedItems(LinearScorer):
    """A scorer whose item part (the expensive, all-users half) is the loaded model's."""

    def __init__(
        self, base: LinearScorer, groups: FeatureGroups, at: datetime, items: np.ndarray
    ) -> None:
        super().__init__(groups, base.encoder, base.coef, base.intercept, at)
        self._pinned_items = items
        self._pinned_part = base.item_part(items)

    def item_part(self, item_ids: np.ndarray) -> np.ndarray:
        if item_ids is self._pinned_items or np.array_equal(item_ids, self._pinned_items):
            return self._pinned_part
        return super().item_part(item_ids)


def supports_fresh_view(model: Recommender) -> TypeGuard[GLMRecommender]:
    return isinstance(model, GLMRecommender) and hasattr(model, "scorer_")


def serving_time(model: Recommender, events: pl.DataFrame) -> datetime:
    """The loaded model's serving time, moved past the user's newest event."""
    at = model.at_
    if not events.is_empty():
        newest = events["timestamp"].max()
        if isinstance(newest, datetime) and newest >= at:
            at = newest + timedelta(microseconds=1)
    return at


def fresh_view(
    model: GLMRecommender, profile: pl.DataFrame, events: pl.DataFrame
) -> GLMRecommender:
    """A shallow copy of a served GLM whose user features come from `events` (this user's, as
    stored now) and `profile` (their user row); coefficients and item features are shared."""
    view = SiteData(profile, model.data_.items, events)
    history = History(view, model.settings_, model.spec_.share_attributes)
    # Item popularity is a whole-site quantity: reuse the loaded one rather than a one-user view.
    history.item_counts = model.groups_.history.item_counts
    groups = FeatureGroups(model.spec_, view, history)
    at = serving_time(model, events)
    out = copy.copy(model)
    out.data_, out.at_, out.groups_ = view, at, groups
    out.scorer_ = _PinnedItems(model.scorer_, groups, at, model.item_ids_)
    return out
