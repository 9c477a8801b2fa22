"""The GLM: known answers, serving invariants, persistence."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from feedrank.datasets.demo import DemoSite
from feedrank.exceptions import FeedrankError
from feedrank.models.glm import GLMRecommender, GLMScorer, fit_logistic, sigmoid
from feedrank.schema import empty_events
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import FrameView


@pytest.fixture(scope="module")
def scorer(fitted_glm: GLMRecommender, small_data: SiteData) -> GLMScorer:
    return fitted_glm.at(FrameView(small_data, Settings()))


def context_part(sc: GLMScorer) -> float:
    lin = sc._linear([], empty_events())
    return float(lin.partial(lin.groups.context(lin.context_row), lin.parts.context)[0])


def test_fit_logistic_recovers_known_coefficients_within_tolerance() -> None:
    """Data simulated from a known logistic model: 12 one-hot and 4 numeric columns.
    Tolerance: every coefficient within 0.08 of the truth (about 4 standard errors at
    n = 120,000), and the reported standard errors are honest (|error| / se < 4)."""
    rng = np.random.default_rng(42)
    n = 120_000
    cat = rng.integers(0, 12, n)
    onehot = sp.csr_matrix((np.ones(n), (np.arange(n), cat)), shape=(n, 12))
    num = rng.normal(size=(n, 4))
    X = sp.hstack([onehot, sp.csr_matrix(num)], format="csr")
    beta = np.concatenate([rng.normal(0, 0.5, 12), [0.8, -0.5, 0.3, 0.0]])
    beta[:12] -= beta[:12].mean()  # identifiable one-hot effects (the intercept takes the mean)
    intercept = -1.5
    y = (rng.random(n) < sigmoid(X @ beta + intercept)).astype(float)
    coef, b0, se = fit_logistic(X, y, alpha=1e-7, l1_ratio=0.0)
    err = np.abs(coef - beta)
    assert err.max() < 0.08
    assert abs(b0 - intercept) < 0.08
    assert np.all(err / se[1:] < 4)


def test_glm_rediscovers_the_demo_sites_position_effects(
    small_site: DemoSite, fitted_glm: GLMRecommender
) -> None:
    table = fitted_glm.coef_table()
    coef = dict(table.select("feature", "coefficient").iter_rows())
    positions = sorted(small_site.truth.position_effect)
    est = np.array([coef[f"position={p}"] - coef["position=1"] for p in positions])
    true = np.array([small_site.truth.position_effect[p] for p in positions])
    assert np.corrcoef(est, true)[0, 1] > 0.9
    assert est[-1] < -0.4  # the last position is clearly penalised, as in the truth
    # The user's taste share for the item's content type is the truth's strongest effect.
    assert (
        coef["user_share_content_type"] > 0
        and table.filter(pl.col("feature") == "user_share_content_type")["p_value"][0] < 1e-4
    )


def _rows(users: list[str], items: list[str], at) -> pl.DataFrame:  # type: ignore[no-untyped-def]
    return pl.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "timestamp": [at] * len(users),
            "position": [1] * len(users),
            "device": [None] * len(users),
        },
        schema={
            "user_id": pl.String,
            "item_id": pl.String,
            "timestamp": pl.Datetime("us", "UTC"),
            "position": pl.Int32,
            "device": pl.String,
        },
    )


@pytest.mark.parametrize("chunk", [None, 37])
def test_factorised_scores_equal_row_wise_predictions(
    scorer: GLMScorer, small_data: SiteData, chunk: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Serving's factorised logit (a Snapshot of the users at the view's time) equals the
    training path (as-of joins at each row's own time) row by row."""
    m, view = scorer.model, scorer.view
    # users with history (a user with none is no signal to the scorer: the service's fallback)
    users = sorted(small_data.events["user_id"].unique().to_list())[:40]
    items = view.candidates()
    scores = scorer.score(users, items)
    rng = np.random.default_rng(0)
    ui, ii = rng.integers(0, len(users), 300), rng.integers(0, len(items), 300)
    # include pairs with history (shown or engaged before), whose pair features are non-zero
    hist = small_data.events.filter(
        pl.col("user_id").is_in(users) & pl.col("item_id").is_in(items.tolist())
    ).head(100)
    u_h = [users.index(u) for u in hist["user_id"]]
    i_h = [int(np.flatnonzero(items == i)[0]) for i in hist["item_id"]]
    ui, ii = np.concatenate([ui, u_h]), np.concatenate([ii, i_h])
    if chunk:  # predict_proba a chunk of rows at a time (memory) gives the same probabilities
        monkeypatch.setattr("feedrank.models.glm.ROWS_CHUNK", chunk)
    p = m.predict_proba(small_data, _rows([users[i] for i in ui], items[ii].tolist(), view.at))
    np.testing.assert_allclose(p, scores[ui, ii], rtol=0, atol=1e-12)


def test_explanation_adds_up_to_the_logit(scorer: GLMScorer, small_data: SiteData) -> None:
    m = scorer.model
    u, i = small_data.users["user_id"][0], scorer.view.candidates()[3]
    contributions = scorer.explain_pairs([u], [i], top=10_000)[0]
    z = m.intercept_ + context_part(scorer) + sum(c["contribution"] for c in contributions)
    assert sigmoid(np.array([z]))[0] == pytest.approx(scorer.score([u], [i])[0, 0], abs=1e-12)
    assert all(
        abs(a["contribution"]) >= abs(b["contribution"])
        for a, b in itertools.pairwise(contributions)
    )


def test_explanations_of_many_pairs_add_up_to_each_logit(
    scorer: GLMScorer, small_data: SiteData
) -> None:
    m = scorer.model
    users = small_data.users["user_id"].to_list()[:6]
    items = list(scorer.view.candidates()[:5])
    pairs_u = [u for u in users for _ in items]
    pairs_i = items * len(users)
    many = scorer.explain_pairs(pairs_u, pairs_i, top=10_000)
    scores = scorer.score(users, items).ravel()
    for reasons, score in zip(many, scores, strict=True):
        z = m.intercept_ + context_part(scorer) + sum(c["contribution"] for c in reasons)
        assert sigmoid(np.array([z]))[0] == pytest.approx(score, abs=1e-12)
    assert scorer.explain_pairs([], []) == []  # e.g. a cold-start user: no model rows to explain
    alone = scorer.explain_pairs([pairs_u[7]], [pairs_i[7]], top=10_000)[0]
    assert [c["feature"] for c in many[7]] == [c["feature"] for c in alone]
    for a, b in zip(many[7], alone, strict=True):  # equal up to float rounding
        assert a["contribution"] == pytest.approx(b["contribution"], abs=1e-12)


def test_batch_recommendations_equal_per_user_and_exclude_seen(
    scorer: GLMScorer, small_data: SiteData
) -> None:
    users = small_data.users["user_id"].to_list()[:25]
    batch = scorer.recommend(users, k=10, batch_size=7)
    single = pl.concat([scorer.recommend([u], k=10) for u in users])
    assert batch.equals(single)
    seen = small_data.seen_pairs()
    assert batch.join(seen, on=["user_id", "item_id"], how="inner").is_empty()
    every = len(scorer.view.candidates())
    with_seen = scorer.recommend(users, k=every, exclude_seen=False)
    assert not with_seen.join(seen, on=["user_id", "item_id"], how="inner").is_empty()


def test_fresh_events_move_scores_without_refitting(
    fitted_glm: GLMRecommender, scorer: GLMScorer, small_data: SiteData
) -> None:
    u = small_data.users["user_id"][0]
    item = scorer.recommend([u], k=1)["item_id"][0]
    click = pl.DataFrame(
        {
            "event_id": ["fresh"],
            "user_id": [u],
            "item_id": [item],
            "type": ["click"],
            "timestamp": [scorer.view.at],
            "value": [1.0],
            "position": [None],
            "device": [None],
            "context": [None],
        },
        schema=small_data.events.schema,
    )
    fresh = SiteData(small_data.users, small_data.items, pl.concat([small_data.events, click]))
    newer = fitted_glm.at(FrameView(fresh, Settings()))
    assert item not in newer.recommend([u], k=50)["item_id"].to_list()
    assert item in scorer.recommend([u], k=1)["item_id"].to_list()  # the old view is unchanged


def test_save_load_round_trip(
    tmp_path: Path, fitted_glm: GLMRecommender, scorer: GLMScorer, small_data: SiteData
) -> None:
    fitted_glm.save(tmp_path / "m")
    loaded = GLMRecommender.load(tmp_path / "m").at(scorer.view)
    users = small_data.users["user_id"].to_list()[:10]
    items = scorer.view.candidates()
    np.testing.assert_array_equal(loaded.score(users, items), scorer.score(users, items))
    assert loaded.model.coef_table().equals(fitted_glm.coef_table())
    assert not list(tmp_path.glob("m/*.pkl"))


def test_fit_rejects_a_single_class(small_data: SiteData) -> None:
    s = Settings()
    from feedrank.features.examples import build_examples

    ex = build_examples(small_data, s).filter(pl.col("label") == 0)
    with pytest.raises(FeedrankError, match="both classes"):
        GLMRecommender().fit(small_data, s, examples=ex)
