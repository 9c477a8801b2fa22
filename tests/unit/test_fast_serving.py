"""The cheap serving paths give the answers of the plain ones.

- The GLM's live logit (item terms kept per catalogue, a request gathering them by position)
  equals the full design matrix times the coefficients, row by row, for many users, for the
  whole catalogue, a tenth of it (a filter), 100 items (a re-rank) and items the catalogue does
  not serve; explanations add up to it.
- Rule selections kept across catalogues while the items and what may be served stay the
  same, and only then; a refresh computes the recently used ones for a new catalogue."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from feedrank.features.groups import FeatureGroups
from feedrank.features.history import T
from feedrank.models.glm import GLMRecommender, GLMScorer
from feedrank.models.linear import CONTEXT_COLUMNS
from feedrank.serving.rules import Rules, _select, rewarm, select, selection_ready
from feedrank.settings import Settings
from feedrank.views.catalogue import Catalogue, just_after
from feedrank.views.site import SiteData
from feedrank.views.view import FrameView, View

RTOL = 1e-9  # the same float64 terms summed in another order


def design_logits(sc: GLMScorer, users: list[str], items: np.ndarray) -> np.ndarray:
    """Every (user, item) row's features at the view's time, encoded whole (the training
    design) and multiplied by the coefficients: no split by scope, nothing kept."""
    m = sc.model
    hist = sc.view.histories(users)
    groups = FeatureGroups(m.spec_, sc._snapshot(users, hist))
    n = len(users) * len(items)
    rows = pl.DataFrame(
        {
            "user_id": np.repeat(np.asarray(users, dtype=object), len(items)),
            "item_id": np.tile(items, len(users)),
            T: [sc.view.at] * n,
            "position": [1] * n,
            "device": [None] * n,
        },
        schema={
            "user_id": pl.String,
            "item_id": pl.String,
            T: pl.Datetime("us", "UTC"),
            "position": pl.Int32,
            "device": pl.String,
        },
    )
    assert sc.view.at == sc.view.catalogue.as_of  # items are served as of the catalogue's time
    z = m.encoder_.transform(groups.rows(rows)) @ m.coef_ + m.intercept_
    return np.asarray(z).reshape(len(users), len(items))


@pytest.fixture(scope="module")
def scorer(fitted_glm: GLMRecommender, small_data: SiteData) -> GLMScorer:
    return fitted_glm.at(FrameView(small_data, Settings())).prepare()


@pytest.fixture(scope="module")
def users(small_data: SiteData) -> list[str]:
    return sorted(small_data.events["user_id"].unique().to_list())[:60]


@pytest.mark.parametrize("which", ["all", "tenth", "hundred", "outside"])
def test_live_logits_equal_the_full_design(scorer: GLMScorer, users: list[str], which: str) -> None:
    cand = scorer.view.candidates()
    rng = np.random.default_rng(5)
    items = {
        "all": cand,
        "tenth": cand[::10],  # a rule selection's shape: sorted, a subset
        "hundred": np.sort(rng.choice(cand, 100, replace=False)),  # a re-rank
        "outside": np.array(["no-such-item", *cand[:3]], dtype=object),
    }[which]
    hist = scorer.view.histories(users)
    fast = scorer.ranking_scores(users, hist, items)
    slow = design_logits(scorer, users, items)
    np.testing.assert_allclose(fast, slow, rtol=RTOL, atol=1e-12)
    # the same positions again (kept by identity) and from an equal array: the same answer
    again = scorer.ranking_scores(users, hist, items)
    copy = scorer.ranking_scores(users, hist, items.copy())
    assert np.array_equal(fast, again) and np.array_equal(fast, copy)


def test_one_user_at_a_time_equals_the_block(scorer: GLMScorer, users: list[str]) -> None:
    items = scorer.view.candidates()[::3]
    block = scorer.ranking_scores(users, scorer.view.histories(users), items)
    for r, u in enumerate(users[:10]):
        one = scorer.ranking_scores([u], scorer.view.histories([u]), items)[0]
        np.testing.assert_allclose(one, block[r], rtol=RTOL, atol=1e-12)


def test_affinity_terms_serve_as_training_computes_them(
    small_data: SiteData, users: list[str]
) -> None:
    """A GLM with a user x author affinity term: the live logit (the term per author level,
    kept with the items) equals training's path (predict_proba, features as of the view's time)."""
    m = GLMRecommender(affinity=["author"], affinity_rank=2).fit(small_data, Settings())
    sc = m.at(FrameView(small_data, Settings())).prepare()
    items = sc.view.candidates()[::7]
    fast = sc.ranking_scores(users[:20], sc.view.histories(users[:20]), items)
    rows = pl.DataFrame(
        {
            "user_id": np.repeat(np.asarray(users[:20], dtype=object), len(items)),
            "item_id": np.tile(items, 20),
        }
    ).with_columns(
        pl.lit(sc.view.at).cast(pl.Datetime("us", "UTC")).alias(T),
        position=pl.lit(1, pl.Int32),  # the context serving assumes
        device=pl.lit(None, pl.String),
    )
    p = m.predict_proba(small_data, rows)
    slow = np.log(p / (1 - p)).reshape(20, len(items))
    np.testing.assert_allclose(fast, slow, rtol=1e-7, atol=1e-7)  # through a sigmoid and back


class _OtherProfiles(View):
    """`base` with every user's gender changed: the same catalogue, other profiles."""

    def __init__(self, base: View) -> None:
        self.base, self.settings, self.catalogue, self.at = (
            base,
            base.settings,
            base.catalogue,
            base.at,
        )

    def histories(self, user_ids: Sequence[str]) -> pl.DataFrame:
        return self.base.histories(user_ids)

    def profiles(self, user_ids: Sequence[str]) -> pl.DataFrame:
        return self.base.profiles(user_ids).with_columns(gender=pl.lit("another"))

    def active_users(self) -> list[str]:
        return self.base.active_users()


def test_a_users_kept_terms_follow_their_history_and_profile(
    scorer: GLMScorer, users: list[str]
) -> None:
    u, items = users[1], scorer.view.candidates()[::5]
    hist = scorer.view.histories([u])
    first = scorer.ranking_scores([u], hist, items)
    assert np.array_equal(first, scorer.ranking_scores([u], hist, items))  # kept: the same
    np.testing.assert_allclose(first, design_logits(scorer, [u], items), rtol=RTOL)
    shorter = hist.head(hist.height - 1)  # another history: scored again
    again = scorer.ranking_scores([u], shorter, items)
    side = scorer._item_side()
    fresh = scorer._linear([u], shorter).user_terms([u], side).logits(side, side.positions(items))
    assert np.array_equal(again, fresh) and not np.array_equal(again, first)
    other = scorer.model.at(_OtherProfiles(scorer.view))  # another profile: scored again
    moved = other.ranking_scores([u], hist, items)
    assert not np.array_equal(moved, first)
    np.testing.assert_allclose(moved, design_logits(other, [u], items), rtol=RTOL)


def test_explanations_add_up_to_the_live_logit(scorer: GLMScorer, users: list[str]) -> None:
    m = scorer.model
    lin = scorer._linear([], scorer.view.histories([]))
    context = float(lin.partial(lin.groups.context(lin.context_row), lin.parts.context)[0])
    items = scorer.view.candidates()[::7]
    z = scorer.ranking_scores(users[:8], scorer.view.histories(users[:8]), items)
    pairs_u = [u for u in users[:8] for _ in items]
    why = scorer.explain_pairs(pairs_u, list(items) * 8, top=10_000)
    total = np.array([sum(c["contribution"] for c in w) for w in why]).reshape(z.shape)
    assert not any(c["feature"] in CONTEXT_COLUMNS for w in why for c in w)
    np.testing.assert_allclose(m.intercept_ + context + total, z, rtol=RTOL, atol=1e-12)


def test_serving_leaves_the_fitted_model_unchanged(scorer: GLMScorer, users: list[str]) -> None:
    m = scorer.model
    before = {k: v.copy() for k, v in m.dump()[1].items()}
    scorer.ranking_scores(users, scorer.view.histories(users), scorer.view.candidates()[::2])
    after = m.dump()[1]
    assert all(before[k].tobytes() == after[k].tobytes() for k in before)


# -- rule selections across catalogues -------------------------------------------------------
def _catalogue(small_data: SiteData) -> Catalogue:
    return FrameView(small_data, Settings()).catalogue


def _event(catalogue: Catalogue, item: str, after: timedelta) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": ["u-new"],
            "item_id": [item],
            "type": ["view"],
            "timestamp": [catalogue.as_of + after],
            "value": [1.0],
        },
        schema={
            "user_id": pl.String,
            "item_id": pl.String,
            "type": pl.String,
            "timestamp": pl.Datetime("us", "UTC"),
            "value": pl.Float64,
        },
    )


def test_selections_carry_over_while_the_items_stay_the_same(small_data: SiteData) -> None:
    old = _catalogue(small_data)
    rules = Rules.parse(filter=["content_type=video"], boost=["lang=go:2"])
    sel = select(old, rules)
    item = old.candidates()[0]
    ev = _event(old, item, timedelta(seconds=1))
    new = old.apply(ev, ev.clear(), just_after(ev["timestamp"][0]))
    assert new.version != old.version and selection_ready(new, rules)
    assert select(new, rules) is sel  # the same object: not computed again
    fresh = _select(new, rules.filters, rules.boosts)
    assert np.array_equal(fresh.items, sel.items) and fresh.removed == sel.removed
    # an age filter reads the catalogue's time: computed per catalogue
    aged = Rules.parse(filter=["age<3d"])
    select(old, aged)
    assert not selection_ready(new, aged)


def test_selections_are_computed_again_when_items_change(small_data: SiteData) -> None:
    old = _catalogue(small_data)
    rules = Rules.parse(filter=["content_type=video"])
    select(old, rules)
    # an upserted item
    first = old.items.head(1).with_columns(hidden=pl.lit(True))
    upserted = old.apply(_event(old, "x", timedelta(0)).clear(), first, old.as_of)
    assert not selection_ready(upserted, rules)
    assert first["item_id"][0] not in select(upserted, rules).items.tolist()
    # an item of an event the catalogue did not know
    ev = _event(old, "brand-new", timedelta(seconds=1))
    unknown = old.apply(ev, ev.clear(), just_after(ev["timestamp"][0]))
    assert not selection_ready(unknown, rules)
    # time moving past an item's creation (it comes into service)
    created = old.items.filter(pl.col("created_at") > old.as_of)
    later = old.items.with_columns(
        created_at=pl.when(pl.col("item_id") == old.candidates()[0])
        .then(pl.lit(old.as_of + timedelta(hours=1)))
        .otherwise(pl.col("created_at"))
    )
    assert created.is_empty()
    base = Catalogue(later, old.counts, old.as_of)
    select(base, rules)
    ev = _event(base, base.candidates()[1], timedelta(hours=2))
    moved = base.apply(ev, ev.clear(), just_after(ev["timestamp"][0]))
    assert not selection_ready(moved, rules)
    assert len(moved.candidates()) == len(base.candidates()) + 1


def test_a_refresh_computes_the_recent_rule_sets_for_the_new_catalogue(
    small_data: SiteData,
) -> None:
    old = _catalogue(small_data)
    used = [Rules.parse(filter=[f"content_type={t}"]) for t in ("video", "article")]
    for r in used:
        select(old, r)
    first = old.items.head(1)
    new = old.apply(_event(old, "x", timedelta(0)).clear(), first, old.as_of)
    assert not any(selection_ready(new, r) for r in used)
    assert rewarm(old, new) == 2
    assert all(selection_ready(new, r) for r in used)
    assert rewarm(old, new) == 0


def test_users_warmed_in_a_block_score_as_if_scored_alone(
    fitted_glm: GLMRecommender, small_data: SiteData, users: list[str]
) -> None:
    warm = fitted_glm.at(FrameView(small_data, Settings())).prepare()
    assert warm.prepare_users(users) == len(users)
    side = warm._item_side()
    kept = len(side.kept_users(10_000))
    cold = fitted_glm.at(FrameView(small_data, Settings())).prepare()  # its own catalogue
    items = warm.view.candidates()[::4]
    for u in users[::6]:
        a = warm.ranking_scores([u], warm.view.histories([u]), items)
        b = cold.ranking_scores([u], cold.view.histories([u]), items)
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-12)
    assert len(side.kept_users(10_000)) == kept  # served from what was kept: nothing added
    assert set(warm.kept_users(5)) <= set(users)


@pytest.mark.parametrize("kind", ["glm", "itemknn", "popularity"])
def test_capped_lists_cut_short_equal_the_oracle(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under max_per a source's first items are listed first (serving.ranking.CAPPED_FIRST):
    with one item at first, nearly every page is listed again with every item, and some are
    not, and the answers are still the exhaustive oracle's (tests/unit/test_rules.py)."""
    import random

    from test_rules import oracle, random_rules, service, site

    monkeypatch.setattr("feedrank.serving.ranking.CAPPED_FIRST", 1)
    monkeypatch.setattr("feedrank.serving.ranking.CAPPED_MIN", 1)
    svc = service(kind)
    rng = random.Random(17)
    users = [*sorted(site().events["user_id"].unique().to_list())[:6], "nobody"]
    items = svc.view.catalogue.items
    for trial in range(10):
        rules = random_rules(rng, items)
        rules = Rules(
            rules.filters, rules.exclude, rules.include, rules.boosts,
            (("author", rng.randint(1, 2)),), rules.offset, rules.exclude_seen,
        )  # fmt: skip
        k = rng.choice([1, 3, 5])
        ans = svc.answer(users, k, rules)
        for u in users:
            got = ans.recs.filter(pl.col("user_id") == u)["item_id"].to_list()
            assert got == oracle(svc, u, k, rules), (kind, trial, u, rules)
