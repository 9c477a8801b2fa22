"""The per-user fresh view against known answers: the full model served on all the data."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl

from feedrank.api.fresh import fresh_view
from feedrank.views.site import SiteData
from feedrank.features.history import T
from feedrank.models.glm import GLMRecommender
from feedrank.pipeline.registry import Registry
from feedrank.store import open_store

from .sitebuild import DB, MODELS


def _served(site: Path) -> tuple[GLMRecommender, SiteData]:
    data = open_store(f"sqlite:///{site / DB}").load()
    model, _ = Registry(site / MODELS).load("glm")
    assert isinstance(model, GLMRecommender)
    return model.serve_with(data), data


def _busiest_user(data: SiteData) -> str:
    return str(data.events.group_by("user_id").len().sort("len", descending=True)["user_id"][0])


def test_fresh_view_of_unchanged_user_scores_like_the_full_model(site_template: Path) -> None:
    model, data = _served(site_template)
    u = _busiest_user(data)
    view = fresh_view(
        model, data.users.filter(pl.col("user_id") == u), data.events.filter(pl.col("user_id") == u)
    )
    items = model.item_ids_
    np.testing.assert_allclose(view.score([u], items), model.score([u], items), rtol=0, atol=1e-12)
    full = model.recommend([u], 10)
    mine = view.recommend([u], 10)
    assert mine["item_id"].to_list() == full["item_id"].to_list()


def test_fresh_events_move_user_features_like_a_full_reload(site_template: Path) -> None:
    model, data = _served(site_template)
    u = _busiest_user(data)
    item = str(model.recommend([u], 1)["item_id"][0])
    like = pl.DataFrame(
        {
            "event_id": ["fresh-1"],
            "user_id": [u],
            "item_id": [item],
            "type": ["like"],
            "timestamp": [model.at_ - timedelta(seconds=1)],
            "value": [1.0],
            "position": [None],
            "device": [None],
            "context": [None],
        },
        schema=data.events.schema,
    )
    events = pl.concat([data.events, like]).sort(T)
    reloaded = GLMRecommender.load(_model_path(site_template)).serve_with(
        SiteData(data.users, data.items, events), model.at_
    )
    mine = fresh_view(
        model, data.users.filter(pl.col("user_id") == u), events.filter(pl.col("user_id") == u)
    )
    keys = pl.DataFrame({"user_id": [u], T: [model.at_]})
    before = model.groups_.user(keys)
    after = mine.groups_.user(keys)
    assert after["user_n_like"][0] == before["user_n_like"][0] + 1
    assert after.equals(reloaded.groups_.user(keys))
    # The liked item is gone from the user's recommendations at once.
    assert item not in mine.recommend([u], 10)["item_id"].to_list()


def _model_path(site: Path) -> Path:
    return Registry(site / MODELS).resolve("glm").path
