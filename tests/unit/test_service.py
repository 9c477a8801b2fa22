"""Popularity, the cold-start fallback, and the training split."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

from feedrank.features.examples import build_examples
from feedrank.models import make
from feedrank.models.glm import GLMRecommender
from feedrank.models.popularity import IN_SEGMENT, OVERALL, PopularityRecommender
from feedrank.pipeline.train import train
from feedrank.serving.service import MODEL, RecommendationService, fallback_model
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import FrameView


def test_popularity_ranks_by_engagement_weight(small_data: SiteData) -> None:
    s = Settings()
    pop = PopularityRecommender().fit(small_data, s)
    users = small_data.users["user_id"].to_list()[:3]
    recs = pop.at(FrameView(small_data, s)).recommend(users, k=5, exclude_seen=False)
    ev = small_data.engagements(s)
    w = (
        ev.with_columns(w=pl.col("type").replace_strict(s.type_weights, return_dtype=pl.Float64))
        .group_by("item_id")
        .agg(pl.col("w").sum())
    )
    best = w.sort(["w", "item_id"], descending=[True, False])["item_id"][0]
    assert recs.filter(pl.col("rank") == 1)["item_id"].to_list() == [best] * 3


def _with_newcomer(small_data: SiteData) -> SiteData:
    newcomer = pl.DataFrame(
        {"user_id": ["newbie"], "age": [30.0], "gender": ["female"], "country": ["US"]}
    )
    users = pl.concat(
        [small_data.users, newcomer.select(small_data.users.columns)], how="vertical_relaxed"
    )
    return SiteData(users, small_data.items, small_data.events)


@pytest.mark.parametrize(
    "kind",
    [
        "glm",
        "itemknn",
    ],
)
def test_cold_users_get_segment_popularity_marked(
    small_data: SiteData, fitted_glm: GLMRecommender, kind: str
) -> None:
    data = _with_newcomer(small_data)  # a profile, no events
    s = Settings()
    model = fitted_glm if kind == "glm" else make(kind).fit(small_data, s)
    view = FrameView(data, s)
    fallback = fallback_model(data, s)  # popularity by age band x gender
    service = RecommendationService(model, view, fallback)
    warm = small_data.events.filter(pl.col("type") == "click")["user_id"][0]
    recs = service.recommend(["newbie", warm, "stranger"], k=5)
    sources = dict(recs.group_by("user_id").agg(pl.col("source").first()).iter_rows())
    assert sources == {"newbie": IN_SEGMENT, warm: MODEL, "stranger": OVERALL}
    assert recs["user_id"].unique(maintain_order=True).to_list() == ["newbie", warm, "stranger"]
    assert recs.group_by("user_id").len()["len"].to_list() == [5, 5, 5]
    seg = PopularityRecommender(segment_by=("age_band", "gender")).fit(data, model.settings_)
    expected = seg.at(view).recommend(["newbie"], k=5)["item_id"].to_list()
    assert recs.filter(pl.col("user_id") == "newbie")["item_id"].to_list() == expected


def test_held_out_model_is_fitted_before_the_window(small_data: SiteData) -> None:
    s = Settings()
    result = train(small_data, s, "glm", test_days=3)
    last = small_data.time_span[1]
    assert last is not None
    cut = last - timedelta(days=3)
    assert result.split["at"] == cut.isoformat()
    assert result.split["kind"] == "temporal" and cut.isoformat() in result.split["description"]
    model = result.model
    assert isinstance(model, GLMRecommender)
    assert datetime.fromisoformat(model.window_[1]) < cut  # type: ignore[arg-type]
    # Fitted on examples ending a label window before the cut: a refit on that data agrees.
    assert model.n_examples_ == build_examples(small_data.until(cut), s).height
    metrics = result.metrics()
    assert set(metrics) == {"glm", "popularity"}
    assert metrics["glm"]["roc_auc"] > metrics["popularity"]["roc_auc"]
    assert result.split["test_examples"] > 0
    # the fallback is fitted on the same data as the model
    assert result.fallback.window_ == model.window_
