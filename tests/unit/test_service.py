"""Popularity, the cold-start fallback, and the training split."""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.models.glm import GLMRecommender
from feedrank.models.popularity import IN_SEGMENT, OVERALL, PopularityRecommender
from feedrank.serving.service import MODEL, RecommendationService
from feedrank.pipeline.train import train_glm


def test_popularity_ranks_by_engagement_weight(small_data: SiteData) -> None:
    s = Settings()
    pop = PopularityRecommender().fit(small_data, s)
    users = small_data.users["user_id"].to_list()[:3]
    recs = pop.recommend(users, k=5, exclude_seen=False)
    ev = small_data.events.filter(pl.col("type").is_in(s.engagement_types))
    w = (
        ev.with_columns(w=pl.col("type").replace_strict(s.type_weights, return_dtype=pl.Float64))
        .group_by("item_id")
        .agg(pl.col("w").sum())
    )
    best = w.sort(["w", "item_id"], descending=[True, False])["item_id"][0]
    assert recs.filter(pl.col("rank") == 1)["item_id"].to_list() == [best] * 3


def test_cold_users_get_segment_popularity_marked(
    small_data: SiteData, fitted_glm: GLMRecommender
) -> None:
    newcomer = pl.DataFrame(
        {"user_id": ["newbie"], "age": [30.0], "gender": ["female"], "country": ["US"]}
    )
    users = pl.concat(
        [small_data.users, newcomer.select(small_data.users.columns)], how="vertical_relaxed"
    )
    data = SiteData(users, small_data.items, small_data.events)
    model = fitted_glm
    try:
        model.serve_with(data)
        service = RecommendationService(model)
        warm = small_data.events.filter(pl.col("type") == "click")["user_id"][0]
        recs = service.recommend(["newbie", warm, "stranger"], k=5)
        sources = dict(recs.group_by("user_id").agg(pl.col("source").first()).iter_rows())
        assert sources == {"newbie": IN_SEGMENT, warm: MODEL, "stranger": OVERALL}
        assert recs["user_id"].unique(maintain_order=True).to_list() == ["newbie", warm, "stranger"]
        seg = PopularityRecommender(segment_by=("age_band", "gender")).fit(data, model.settings_)
        expected = seg.recommend(["newbie"], k=5)["item_id"].to_list()
        assert recs.filter(pl.col("user_id") == "newbie")["item_id"].to_list() == expected
    finally:
        model.serve_with(small_data)


def test_held_out_model_is_fitted_before_the_window(small_data: SiteData) -> None:
    s = Settings()
    result = train_glm(small_data, s, test_days=3)
    last = small_data.time_span[1]
    assert last is not None
    cut = last - timedelta(days=3)
    assert result.split["cut"] == cut.isoformat()
    # Fitted on examples ending a label window before the cut: a refit on that data agrees.
    assert result.model.n_examples_ == result.split["train_examples"]
    assert set(result.metrics) == {"glm", "popularity"}
    assert result.metrics["glm"]["roc_auc"] > result.metrics["popularity"]["roc_auc"]
