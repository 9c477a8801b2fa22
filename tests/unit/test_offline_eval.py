"""Offline evaluation: splits, beyond-accuracy metrics by hand, segments, served CTR."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from feedrank.evaluation.offline import (
    SMOOTHING,
    beyond_accuracy,
    evaluate,
    popularity_probabilities,
    sampled_metrics,
    user_segments,
)
from feedrank.evaluation.online import served_ctr
from feedrank.evaluation.splits import last_n_split, make_split, temporal_split
from feedrank.exceptions import FeedrankError
from feedrank.models.base import Recommender, Scorer
from feedrank.models.glm import GLMRecommender
from feedrank.models.popularity import PopularityRecommender
from feedrank.schema import EVENT_COLUMNS
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import View

T0 = datetime(2026, 2, 1, tzinfo=UTC)


def _events(
    rows: list[tuple[str, str, str, datetime]], context: list[str | None] | None = None
) -> pl.DataFrame:
    ev = pl.DataFrame(
        rows, schema=["user_id", "item_id", "type", "timestamp"], orient="row"
    ).with_columns(
        event_id=pl.lit(None, pl.String),
        value=pl.lit(1.0),
        position=pl.lit(1, pl.Int32),
        device=pl.lit(None, pl.String),
        context=pl.Series(context or [None] * len(rows), dtype=pl.String),
    )
    return ev.select([pl.col(c).cast(t) for c, t in EVENT_COLUMNS.items()]).sort("timestamp")


def _site(events: pl.DataFrame, items: dict[str, str]) -> SiteData:
    it = pl.DataFrame(
        {
            "item_id": list(items),
            "created_at": [T0 - timedelta(days=30)] * len(items),
            "content_type": list(items.values()),
        }
    )
    users = pl.DataFrame({"user_id": events["user_id"].unique().sort(), "gender": "f"})
    return SiteData(users, it, events)


def test_beyond_accuracy_by_hand() -> None:
    items = {"a": "video", "b": "video", "c": "article", "d": "image"}
    ev = _events(
        [
            ("u1", "a", "click", T0),
            ("u2", "a", "click", T0),
            ("u2", "b", "click", T0),
            ("u3", "c", "click", T0),
        ]
    )
    data = _site(ev, items)
    recs = pl.DataFrame(
        {"user_id": ["u1", "u1", "u2", "u2"], "rank": [1, 2, 1, 2], "item_id": ["a", "c", "a", "b"]}
    )
    got = beyond_accuracy(recs, data, Settings(), k=2, n_candidates=4)
    assert got["coverage"] == pytest.approx(3 / 4)  # a, b, c of four items
    # self-information: a 2 of 4 engagements -> 1 bit; c and b 1 of 4 -> 2 bits; mean of a, c, a, b
    assert got["novelty"] == pytest.approx((1 + 2 + 1 + 2) / 4)
    # u1: a (video) vs c (article) -> distance 1; u2: a, b both video -> 0
    assert got["intra_list_diversity"] == pytest.approx(0.5)
    # the only pair of lists {a, c} vs {a, b}: Jaccard 1/3
    assert got["personalisation"] == pytest.approx(1 - 1 / 3)


def test_temporal_split_never_tests_on_what_was_seen(small_data: SiteData) -> None:
    s = Settings()
    last = small_data.time_span[1]
    assert last is not None
    cut = last - timedelta(days=3)
    split = temporal_split(small_data, s, cut)
    assert split.train.events["timestamp"].max() < cut  # type: ignore[operator]
    assert split.at == cut and split.view(s).at == cut
    # judged only on new engagements: nothing the user knew before the cut
    seen = split.train.seen_pairs()
    assert split.test.join(seen, on=["user_id", "item_id"]).is_empty()
    later = small_data.engagements(s).filter(pl.col("timestamp") >= cut)
    assert split.test.join(later, on=["user_id", "item_id"], how="anti").is_empty()
    assert "temporal" in split.description and cut.isoformat() in split.description
    # labelled examples after the cut judge probabilities
    assert split.examples is not None
    assert (split.examples["timestamp"] >= cut).all()


def test_last_n_hides_each_users_latest_items(small_data: SiteData) -> None:
    s = Settings()
    split = last_n_split(small_data, s, n=2)
    assert (split.test.group_by("user_id").len()["len"] == 2).all()
    assert split.train.events.join(split.test, on=["user_id", "item_id"]).is_empty()
    first = (
        small_data.engagements(s).group_by("user_id", "item_id").agg(t=pl.col("timestamp").min())
    )
    kept = (
        first.join(split.test, on=["user_id", "item_id"], how="anti")
        .group_by("user_id")
        .agg(kept=pl.col("t").max())
    )
    hidden = (
        first.join(split.test, on=["user_id", "item_id"])
        .group_by("user_id")
        .agg(hidden=pl.col("t").min())
    )
    both = kept.join(hidden, on="user_id")
    assert (both["hidden"] >= both["kept"]).all()


def test_glm_beats_popularity_where_taste_matters(small_data: SiteData) -> None:
    split = make_split(small_data, Settings(), "temporal", test_days=3)
    result = evaluate(
        {"glm": GLMRecommender(), "popularity": PopularityRecommender()}, split, Settings(), k=10
    )
    table = {r["model"]: r for r in result.table().to_dicts()}
    assert table["glm"]["NDCG@10"] > table["popularity"]["NDCG@10"]
    assert table["glm"]["personalisation"] > table["popularity"]["personalisation"]
    # both judged on the same held-out examples, with probabilities
    assert table["glm"]["roc_auc"] > table["popularity"]["roc_auc"] > 0.5
    segs = user_segments(split, Settings(), ["tenure", "activity", "gender", "content_type"])
    by_seg = result.by_segment(segs)
    assert set(by_seg["segment"].unique()) == {"tenure", "activity", "gender", "content_type"}
    # each segment partitions the evaluated users
    users = result.per_user["glm"].height
    per = by_seg.filter(pl.col("model") == "glm").group_by("segment").agg(pl.col("users").sum())
    assert (per["users"] == users).all()


def test_unknown_segment_is_named(small_data: SiteData) -> None:
    split = make_split(small_data, Settings(), "last")
    with pytest.raises(FeedrankError, match="--segment-by must be"):
        user_segments(split, Settings(), ["shoe_size"])


def test_served_ctr_by_model_and_position() -> None:
    ctx_a, ctx_b = json.dumps({"model": "glm"}), json.dumps({"model": "popularity"})
    m = timedelta(minutes=1)
    ev = _events(
        [
            ("u1", "a", "impression", T0),
            ("u1", "a", "click", T0 + m),
            ("u2", "b", "impression", T0),
            ("u3", "a", "impression", T0),
            ("u3", "c", "impression", T0),
        ],
        [ctx_a, None, ctx_a, ctx_b, ctx_b],
    )
    got = served_ctr(ev, Settings()).to_dicts()
    assert [(r["model"], r["impressions"], r["clicks"]) for r in got] == [
        ("glm", 2, 1),
        ("popularity", 2, 0),
    ]
    assert got[0]["ctr"] == 0.5 and got[0]["engagement_value"] == 1.0
    assert got[1]["engagement_value"] is None  # no engagement followed


class _Oracle(Recommender):
    """Scores each user's held-out items 1 and every other item 0: a known answer for the
    protocols (a model, not a stand-in for the code under test)."""

    kind = "oracle"

    def __init__(self, favourite: dict[str, set[str]] | None = None) -> None:
        self.favourite = favourite or {}

    def fit(self, data: SiteData, settings: Settings | None = None) -> _Oracle:
        self._fitted_on(data, settings)
        return self

    def at(self, view: View) -> Scorer:
        return _OracleScorer(self, view)


class _OracleScorer(Scorer):
    model: _Oracle

    def score_users(self, user_ids, histories, item_ids):  # type: ignore[no-untyped-def]
        fav = self.model.favourite
        return np.array(
            [[1.0 if i in fav.get(u, set()) else 0.0 for i in item_ids] for u in user_ids]
        )


def test_sampled_protocol_known_answers(small_data: SiteData) -> None:
    s = Settings()
    split = make_split(small_data, s, "last")
    held: dict[str, set[str]] = {}
    for u, i in split.test.iter_rows():
        held.setdefault(u, set()).add(i)
    view = split.view(s)
    oracle = _Oracle(held).fit(split.train, s).at(view)
    got = sampled_metrics(oracle, split, s, n_negatives=50, k=10)
    assert got["sampled HR@10"] == 1.0 and got["sampled MRR"] == 1.0
    # every score ties: ties count against the held-out item
    flat = _Oracle({}).fit(split.train, s).at(view)
    worst = sampled_metrics(flat, split, s, n_negatives=50, k=10)
    assert worst["sampled HR@10"] == 0.0 and worst["sampled MRR"] == pytest.approx(1 / 51)


def test_full_ranking_known_answers_and_labels_follow_k(small_data: SiteData) -> None:
    s = Settings()
    split = make_split(small_data, s, "last", n=2)
    held: dict[str, set[str]] = {}
    for u, i in split.test.iter_rows():
        held.setdefault(u, set()).add(i)
    result = evaluate({"oracle": _Oracle(held), "flat": _Oracle()}, split, s, k=5)
    table = {r["model"]: r for r in result.table().to_dicts()}
    # metric names carry the k asked for
    assert {"HR@5", "precision@5", "recall@5", "NDCG@5", "MAP@5", "MRR"} <= set(table["oracle"])
    assert not any(c.endswith("@10") for c in table["oracle"])
    # both held-out items of every user on top: the list is perfect
    for name in ("HR@5", "recall@5", "NDCG@5", "MAP@5", "MRR"):
        assert table["oracle"][name] == pytest.approx(1.0), name
    assert table["oracle"]["precision@5"] == pytest.approx(2 / 5)
    # all-zero scores are a signal tie: the first five items by catalogue order, the same for all
    assert table["flat"]["personalisation"] < table["oracle"]["personalisation"]
    assert result.split is split and result.k == 5


def test_popularity_probability_is_the_smoothed_positive_rate_in_training() -> None:
    # Changed on purpose: popularity's probability baseline was its smoothed CTR feature; it is
    # each item's positive rate among the training examples, smoothed towards the overall rate.
    m = timedelta(minutes=1)
    ev = _events(
        [
            ("u1", "a", "impression", T0),
            ("u1", "a", "click", T0 + m),
            ("u2", "a", "impression", T0),
            ("u3", "a", "impression", T0),
            ("u4", "a", "impression", T0),
            ("u1", "b", "impression", T0),
            ("u2", "b", "impression", T0),
        ]
    )
    data = _site(ev, {"a": "video", "b": "video", "c": "article"})
    rows = pl.DataFrame({"item_id": ["a", "b", "c", "a"]})
    got = popularity_probabilities(data, Settings(), rows)
    prior = 1 / 6  # one positive among six impressions
    assert SMOOTHING == 10.0
    expected = [
        (1 + SMOOTHING * prior) / (4 + SMOOTHING),  # a: 1 of 4
        (0 + SMOOTHING * prior) / (2 + SMOOTHING),  # b: 0 of 2
        prior,  # c: never shown
        (1 + SMOOTHING * prior) / (4 + SMOOTHING),
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
