"""Known answers of the next-item model: a Markov chain's successors recovered, explanations
naming the item that led to a suggestion, session gaps, same-instant events."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from feedrank.datasets.sequences import item_id, sequential_site
from feedrank.exceptions import ConfigError
from feedrank.models import make
from feedrank.models.matrix import interactions
from feedrank.models.transition import TransitionRecommender, _cosine, _row_normalised
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import FrameView

EVERY_RATING = Settings(rating_threshold=1.0)  # every step of the chain counts


@pytest.fixture(scope="module")
def chain() -> tuple[SiteData, np.ndarray]:
    site = sequential_site(n_users=300, n_items=30, length=8, follow=0.9, seed=3)
    return site.data, site.successor


def test_the_chain_successor_is_each_items_likeliest_next(
    chain: tuple[SiteData, np.ndarray],
) -> None:
    data, successor = chain
    model = TransitionRecommender().fit(data, EVERY_RATING)
    sim = model.at(FrameView(data, EVERY_RATING)).similar_items(list(item_id(np.arange(30))), k=1)
    got = dict(sim.select("item_id", "similar_item_id").iter_rows())
    want = dict(zip(item_id(np.arange(30)), item_id(successor), strict=True))
    # Items nobody reached have no observed transitions (similarity speaks for them).
    reached = set(data.events["item_id"].to_list())
    agree = [got.get(i) == want[i] for i in want if i in reached]
    assert np.mean(agree) >= 0.95, (sum(agree), len(agree))


def test_a_user_is_sent_to_the_successor_of_their_last_item(
    chain: tuple[SiteData, np.ndarray],
) -> None:
    data, successor = chain
    model = make("transition", n_recent=1).fit(data, EVERY_RATING)
    sc = model.at(FrameView(data, EVERY_RATING))
    users = data.users["user_id"].to_list()
    last = data.events.group_by("user_id").agg(pl.col("item_id").last())
    truth = dict(
        zip(
            last["user_id"],
            item_id(successor[[int(i[1:]) for i in last["item_id"]]]),
            strict=True,
        )
    )
    top = sc.recommend(users, k=1, exclude_seen=False)
    hits = [truth[u] == i for u, i in top.select("user_id", "item_id").iter_rows()]
    assert np.mean(hits) >= 0.95
    # The explanation names the last item as what led there.
    u, i = top.row(0)[0], top.row(0)[2]
    why = sc.explain_pairs([u], [i])[0]
    assert why[0]["feature"] == f"because of {last.filter(pl.col('user_id') == u)['item_id'][0]}"
    assert sum(c["contribution"] for c in why) == pytest.approx(top.row(0)[3], rel=1e-5)


def test_no_transition_spans_a_session_gap(chain: tuple[SiteData, np.ndarray]) -> None:
    """Steps are an hour apart: with 30-minute sessions every user's steps are sessions of
    their own, so no transition is counted and P is the row-normalised similarity."""
    data, _ = chain
    model = TransitionRecommender(session_gap_hours=0.5, max_next=30).fit(data, EVERY_RATING)
    inter = interactions(data, EVERY_RATING)
    want = _row_normalised(_cosine(inter.matrix, 50)).toarray()
    np.testing.assert_allclose(model.next_.toarray(), want, rtol=1e-6, atol=1e-7)


def test_events_at_the_same_instant_lead_both_ways(chain: tuple[SiteData, np.ndarray]) -> None:
    data, _ = chain
    t = data.events["timestamp"][0]
    same = SiteData(data.users, data.items, data.events.with_columns(timestamp=pl.lit(t)))
    p = TransitionRecommender(max_next=30).fit(same, EVERY_RATING).next_.toarray()
    # P's rows are scaled symmetric counts (plus symmetric similarity): a symmetric support.
    assert ((p > 0) == (p.T > 0)).all()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"window": 0}, "window must be an integer >= 1; got 0"),
        ({"step_decay": 0.0}, r"step_decay must be in \(0, 1\]; got 0.0"),
        ({"smoothing": 0}, "smoothing must be > 0; got 0"),
        ({"session_gap_hours": -1}, "session_gap_hours must be > 0 or None"),
        ({"steps": "all"}, r"steps must be one of \['engaged', 'seen'\]; got 'all'"),
    ],
)
def test_bad_parameters_name_themselves(
    chain: tuple[SiteData, np.ndarray], params: dict[str, float], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        TransitionRecommender(**params).fit(chain[0], EVERY_RATING)  # type: ignore[arg-type]


def test_timestamps_only_order_the_steps(chain: tuple[SiteData, np.ndarray]) -> None:
    """Shifting every event by a day changes nothing but the window."""
    data, _ = chain
    later = SiteData(
        data.users,
        data.items,
        data.events.with_columns(pl.col("timestamp") + timedelta(days=1)),
    )
    a = TransitionRecommender().fit(data, EVERY_RATING).next_
    b = TransitionRecommender().fit(later, EVERY_RATING).next_
    assert (a != b).nnz == 0


def test_a_low_rating_is_a_step_when_steps_are_seen(chain: tuple[SiteData, np.ndarray]) -> None:
    """Under a 3.5 threshold, low ratings are no engagement: only steps="seen" keeps them in
    the sequence, and so recovers the chain through them."""
    data, successor = chain
    settings = Settings()
    got = {}
    for steps in ("engaged", "seen"):
        p = TransitionRecommender(steps=steps, max_next=30).fit(data, settings).next_.toarray()
        got[steps] = np.mean(p.argmax(axis=1) == successor)
    assert got["seen"] >= 0.95 > got["engaged"]
