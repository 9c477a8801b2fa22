"""The GLM's logit split for the search engine. The Python twin of the painless script,
fed the very params and item fields the engine gets, must equal GLMRecommender.score; this is
the parity provable without a server (the integration suite compares the engine itself)."""

from __future__ import annotations

import copy
import json
from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from feedrank.views.site import SiteData
from feedrank.exceptions import NotFittedError
from feedrank.models.glm import GLMRecommender
from feedrank.store.search_ranking import GLMSplit, evaluate, rank


def _users(model: GLMRecommender, n: int) -> list[str]:
    """Users with and without history, deterministic."""
    ids = model.data_.users["user_id"].to_list()
    return ids[:: max(1, len(ids) // n)][:n]


def test_twin_of_the_script_equals_the_model_score(fitted_glm: GLMRecommender) -> None:
    split = GLMSplit(fitted_glm)
    fields = split.item_fields()
    items = fields["item_id"].to_numpy()
    users = _users(fitted_glm, 40)
    expected = fitted_glm.score(users, items)
    got = np.vstack([evaluate(split.user_params(u), fields) for u in users])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    assert ((got > 0) & (got < 1)).all()  # the engine's scores must not be negative
    # the split is not trivial: users and items differ, and history pairs are present
    assert np.ptp(got, axis=1).min() > 0 and np.ptp(got, axis=0).max() > 0
    assert any(split.user_params(u)["pair"] for u in users)


def test_every_part_of_the_split_is_used(fitted_glm: GLMRecommender) -> None:
    split = GLMSplit(fitted_glm)
    params = split.user_params(_users(fitted_glm, 1)[0])
    assert params["num"] and params["age"] is not None and params["share"]
    cat_fields = {c["field"] for c in params["cat"]}
    assert {f"lv.{a}" for a in split.level_attributes} >= cat_fields
    # item categoricals plus one entry per cross
    assert len(params["cat"]) == len(split.item_categorical) + len(split.crosses)
    fields = split.item_fields()
    assert {p["field"] for p in params["num"]} <= set(fields.columns)
    assert "f.item_age_days" not in fields.columns  # age is computed at request time


def test_params_survive_json_as_sent_to_the_engine(fitted_glm: GLMRecommender) -> None:
    split = GLMSplit(fitted_glm)
    fields = split.item_fields()
    for u in _users(fitted_glm, 5):
        params = split.user_params(u)
        again = json.loads(json.dumps(params))
        assert np.array_equal(evaluate(again, fields), evaluate(params, fields))


def test_engine_ranking_equals_recommend(fitted_glm: GLMRecommender) -> None:
    split = GLMSplit(fitted_glm)
    fields = split.item_fields()
    for u in _users(fitted_glm, 12):
        want = fitted_glm.recommend([u], k=15, exclude_seen=True)
        got = rank(split.user_params(u), fields, split.seen_items(u), k=15)
        assert got["item_id"].to_list() == want["item_id"].to_list()
        np.testing.assert_allclose(got["score"].to_numpy(), want["score"].to_numpy(), atol=1e-9)


def test_age_follows_the_request_time(fitted_glm: GLMRecommender) -> None:
    later = copy.copy(fitted_glm).serve_with(fitted_glm.data_, fitted_glm.at_ + timedelta(days=3))
    split, base = GLMSplit(later), GLMSplit(fitted_glm)
    fields = split.item_fields()
    u = _users(later, 3)[1]
    np.testing.assert_allclose(
        evaluate(split.user_params(u), fields),
        later.score([u], fields["item_id"].to_numpy())[0],
        atol=1e-9,
    )
    assert split.user_params(u)["now_us"] - base.user_params(u)["now_us"] == 3 * 86_400_000_000


def test_a_users_own_data_gives_the_same_params(fitted_glm: GLMRecommender) -> None:
    """The store computes params from the user's profile, events and touched items only
    (SearchStore.user_site); that must equal serving with the whole site."""
    data = fitted_glm.data_
    full = GLMSplit(fitted_glm)
    fields = full.item_fields()
    for u in _users(fitted_glm, 6):
        events = data.events.filter(pl.col("user_id") == u)
        touched = events["item_id"].unique()
        scoped = SiteData(
            data.users.filter(pl.col("user_id") == u),
            data.items.filter(pl.col("item_id").is_in(touched.to_list())),
            events,
        )
        p_full, p_mine = full.user_params(u), full.user_params(u, data=scoped)
        assert p_mine["pair"].keys() == p_full["pair"].keys()
        assert [s["map"].keys() for s in p_mine["share"]] == [
            s["map"].keys() for s in p_full["share"]
        ]
        np.testing.assert_allclose(evaluate(p_mine, fields), evaluate(p_full, fields), atol=1e-12)
        assert full.seen_items(u, data=scoped) == full.seen_items(u)


def test_missing_published_features_count_as_no_history(fitted_glm: GLMRecommender) -> None:
    """An item stored after the last publish has no f.* fields: it is scored as an item with
    no engagement yet, which is what it is."""
    split = GLMSplit(fitted_glm)
    fields = split.item_fields()
    fresh = fields.head(3).with_columns(
        [pl.lit(p["missing"]).alias(p["field"]) for p in split.num_params]
    )
    bare = fields.head(3).drop([p["field"] for p in split.num_params])
    params = split.user_params(_users(fitted_glm, 1)[0])
    np.testing.assert_array_equal(evaluate(params, bare), evaluate(params, fresh))


def test_unfitted_model_is_refused() -> None:
    with pytest.raises(NotFittedError, match="fitted GLMRecommender"):
        GLMSplit(GLMRecommender())


def test_request_time_counts_events_newer_than_the_model(fitted_glm: GLMRecommender) -> None:
    """A split made when the model was published, asked at a later request time with the
    store's newer events, gives the params of a model served at that time."""
    data = fitted_glm.data_
    t = fitted_glm.at_ - timedelta(days=2)
    published = GLMSplit(copy.copy(fitted_glm).serve_with(data.until(t), t))
    now = GLMSplit(fitted_glm)
    fields = now.item_fields()
    moved = 0
    for u in _users(fitted_glm, 8):
        late = published.user_params(u, data=data, at=fitted_glm.at_)
        want = now.user_params(u)
        np.testing.assert_allclose(evaluate(late, fields), evaluate(want, fields), atol=1e-12)
        assert published.seen_items(u, data=data, at=fitted_glm.at_) == now.seen_items(u)
        moved += not np.allclose(evaluate(published.user_params(u), fields), evaluate(want, fields))
    assert moved > 0  # the newer events did change some users' scores
