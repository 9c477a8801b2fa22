"""The GLM's logit split for the search engine. The Python twin of the painless script
(feedrank.store.search_ranking), fed the very params and item fields the engine gets
(feedrank.models.glm_export.GLMExport of a GLM serving a view), must equal the GLM scorer's
scores; this is the parity provable without a server (the integration suite compares the
engine itself)."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from feedrank.exceptions import NotFittedError
from feedrank.io import import_frame
from feedrank.models.glm import GLMRecommender, GLMScorer
from feedrank.models.glm_export import GLMExport
from feedrank.settings import Settings
from feedrank.store.search_ranking import evaluate, rank
from feedrank.store.sqlite import SQLiteStore
from feedrank.views.catalogue import Catalogue
from feedrank.views.site import SiteData
from feedrank.views.view import FrameView, StoreView, serving_time


def _users(data: SiteData, n: int) -> list[str]:
    """Users with history, deterministic (one without any is no signal to the scorer: the
    service serves its fallback, and the engine is not asked)."""
    ids = sorted(data.events["user_id"].unique().to_list())
    return ids[:: max(1, len(ids) // n)][:n]


def _scorer(glm: GLMRecommender, data: SiteData, at=None) -> GLMScorer:  # type: ignore[no-untyped-def]
    return glm.at(FrameView(data, glm.settings_, at))


@pytest.fixture(scope="module")
def export(small_data: SiteData, fitted_glm: GLMRecommender) -> GLMExport:
    return GLMExport(_scorer(fitted_glm, small_data))


def test_twin_of_the_script_equals_the_model_score(small_data: SiteData, export: GLMExport) -> None:
    fields = export.item_fields()
    items = fields["item_id"].to_numpy()
    users = _users(small_data, 40)
    expected = export.scorer.score(users, items)
    got = np.vstack([evaluate(export.user_params(u), fields) for u in users])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    assert ((got > 0) & (got < 1)).all()  # the engine's scores must not be negative
    # the split is not trivial: users and items differ, and history pairs are present
    assert np.ptp(got, axis=1).min() > 0 and np.ptp(got, axis=0).max() > 0
    assert any(export.user_params(u)["pair"] for u in users)


def test_every_part_of_the_split_is_used(small_data: SiteData, export: GLMExport) -> None:
    params = export.user_params(_users(small_data, 1)[0])
    assert params["num"] and params["age"] is not None and params["share"]
    cat_fields = {c["field"] for c in params["cat"]}
    assert {f"lv.{a}" for a in export.level_attributes} >= cat_fields
    # item categoricals plus one entry per cross
    assert len(params["cat"]) == len(export.item_categorical) + len(export.crosses)
    fields = export.item_fields()
    assert {p["field"] for p in params["num"]} <= set(fields.columns)
    assert "f.item_age_days" not in fields.columns  # age is computed at request time


def test_params_survive_json_as_sent_to_the_engine(small_data: SiteData, export: GLMExport) -> None:
    fields = export.item_fields()
    for u in _users(small_data, 5):
        params = export.user_params(u)
        again = json.loads(json.dumps(params))
        assert np.array_equal(evaluate(again, fields), evaluate(params, fields))


def test_engine_ranking_equals_recommend(small_data: SiteData, export: GLMExport) -> None:
    fields = export.item_fields()
    for u in _users(small_data, 12):
        want = export.scorer.recommend([u], k=15, exclude_seen=True)
        got = rank(export.user_params(u), fields, export.seen_items(u), k=15)
        assert got["item_id"].to_list() == want["item_id"].to_list()
        np.testing.assert_allclose(got["score"].to_numpy(), want["score"].to_numpy(), atol=1e-9)


def test_age_follows_the_request_time(
    small_data: SiteData, fitted_glm: GLMRecommender, export: GLMExport
) -> None:
    now = serving_time(small_data)
    later = GLMExport(_scorer(fitted_glm, small_data, now + timedelta(days=3)))
    fields = later.item_fields()
    u = _users(small_data, 3)[1]
    np.testing.assert_allclose(
        evaluate(later.user_params(u), fields),
        later.scorer.score([u], fields["item_id"].to_numpy())[0],
        atol=1e-9,
    )
    assert later.user_params(u)["now_us"] - export.user_params(u)["now_us"] == 3 * 86_400_000_000


def test_a_users_own_data_gives_the_same_params(
    small_data: SiteData, fitted_glm: GLMRecommender, export: GLMExport
) -> None:
    """A store serves one user from their profile, events and touched items only; that must
    give the params of serving with the whole site."""
    data, at = small_data, export.scorer.view.at
    fields = export.item_fields()
    for u in _users(data, 6):
        events = data.events.filter(pl.col("user_id") == u)
        touched = events["item_id"].unique()
        scoped = SiteData(
            data.users.filter(pl.col("user_id") == u),
            data.items.filter(pl.col("item_id").is_in(touched.to_list())),
            events,
        )
        mine = GLMExport(_scorer(fitted_glm, scoped, at))
        p_full, p_mine = export.user_params(u), mine.user_params(u)
        assert p_mine["pair"].keys() == p_full["pair"].keys()
        assert [s["map"].keys() for s in p_mine["share"]] == [
            s["map"].keys() for s in p_full["share"]
        ]
        np.testing.assert_allclose(evaluate(p_mine, fields), evaluate(p_full, fields), atol=1e-12)
        assert mine.seen_items(u) == export.seen_items(u)


def test_missing_published_features_count_as_no_history(
    small_data: SiteData, export: GLMExport
) -> None:
    """An item stored after the last publish has no f.* fields: it is scored as an item with
    no engagement yet, which is what it is."""
    fields = export.item_fields()
    fresh = fields.head(3).with_columns(
        [pl.lit(p["missing"]).alias(p["field"]) for p in export.num_params]
    )
    bare = fields.head(3).drop([p["field"] for p in export.num_params])
    params = export.user_params(_users(small_data, 1)[0])
    np.testing.assert_array_equal(evaluate(params, bare), evaluate(params, fresh))


def test_unfitted_model_is_refused(small_data: SiteData) -> None:
    with pytest.raises(NotFittedError, match="GLMRecommender is not fitted"):
        GLMExport(GLMRecommender().at(FrameView(small_data, Settings())))


def test_request_time_counts_events_newer_than_the_published_items(
    small_data: SiteData, fitted_glm: GLMRecommender, mem_store: SQLiteStore, export: GLMExport
) -> None:
    """Item fields published from a catalogue two days old, params asked from the store at a
    later request time: the user's newer events count, as when serving at that time."""
    for kind, frame in (
        ("users", small_data.users),
        ("items", small_data.items),
        ("interactions", small_data.events),
    ):
        import_frame(mem_store, kind, frame, strict=True)  # type: ignore[arg-type]
    now = export.scorer.view.at
    t = now - timedelta(days=2)
    published = Catalogue.from_events(small_data.items, small_data.events, t)
    at_request = GLMExport(fitted_glm.at(StoreView(mem_store, Settings(), published, now)))
    at_publish = GLMExport(_scorer(fitted_glm, small_data, t))
    fields = export.item_fields()
    moved = 0
    for u in _users(small_data, 8):
        late, want = at_request.user_params(u), export.user_params(u)
        np.testing.assert_allclose(evaluate(late, fields), evaluate(want, fields), atol=1e-12)
        assert late["now_us"] == want["now_us"]
        assert at_request.seen_items(u) == export.seen_items(u)
        moved += not np.allclose(
            evaluate(at_publish.user_params(u), fields), evaluate(want, fields)
        )
    assert moved > 0  # the newer events did change some users' scores
