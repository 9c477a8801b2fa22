"""A fitted model as a ranking policy: greedy and Plackett-Luce position probabilities against
exact answers."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from feedrank.evaluation.policy import position_probabilities
from feedrank.models.base import Scorer
from feedrank.models.popularity import PopularityRecommender
from feedrank.schema import EVENT_COLUMNS
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import FrameView

T0 = datetime(2026, 3, 1, tzinfo=UTC)
CLICKS = {"a": 1, "b": 2, "c": 3, "d": 6}  # engagements per item by other users


def _site() -> SiteData:
    rows = [
        (f"u{item}{n}", item, "click", T0 + timedelta(minutes=n))
        for item, count in CLICKS.items()
        for n in range(count)
    ]
    rows.append(("target", "", "login", T0))  # a user with no engagement: nothing seen
    ev = pl.DataFrame(
        rows, schema=["user_id", "item_id", "type", "timestamp"], orient="row"
    ).with_columns(
        event_id=pl.lit(None, pl.String),
        value=pl.lit(1.0),
        position=pl.lit(None, pl.Int32),
        device=pl.lit(None, pl.String),
        context=pl.lit(None, pl.String),
    )
    events = ev.select([pl.col(c).cast(t) for c, t in EVENT_COLUMNS.items()]).sort("timestamp")
    items = pl.DataFrame({"item_id": list(CLICKS), "created_at": [T0 - timedelta(days=1)] * 4})
    users = pl.DataFrame({"user_id": events["user_id"].unique().sort()})
    return SiteData(users, items, events)


def _popularity(site: SiteData) -> Scorer:
    """Popularity fitted on the site, serving it as of just after its last event."""
    return PopularityRecommender().fit(site, Settings()).at(FrameView(site, Settings()))


def _every_cell(user: str, k: int) -> pl.DataFrame:
    return pl.DataFrame(
        [(user, i, p) for i in CLICKS for p in range(1, k + 1)],
        schema=["user_id", "item_id", "position"],
        orient="row",
    )


def _exact_plackett_luce(weights: dict[str, float], k: int) -> dict[tuple[str, int], float]:
    """P(item at position) by enumerating every ordered prefix of length k."""
    out = dict.fromkeys(((i, p) for i in weights for p in range(1, k + 1)), 0.0)
    for prefix in itertools.permutations(weights, k):
        prob, left = 1.0, sum(weights.values())
        for item in prefix:
            prob *= weights[item] / left
            left -= weights[item]
        for p, item in enumerate(prefix, start=1):
            out[(item, p)] += prob
    return out


def test_greedy_is_one_exactly_where_the_model_ranks_the_item() -> None:
    scorer = _popularity(_site())
    cells = _every_cell("target", 3)
    p = position_probabilities(scorer, cells)
    got = {(i, pos) for (_, i, pos), v in zip(cells.iter_rows(), p, strict=True) if v == 1.0}
    assert got == {("d", 1), ("c", 2), ("b", 3)}
    assert set(p) == {0.0, 1.0}


def test_softmax_marginals_match_exact_plackett_luce() -> None:
    scorer = _popularity(_site())
    scores = np.array(list(CLICKS.values()), dtype=float)
    z = (scores - scores.mean()) / scores.std()
    temperature = 0.7
    exact = _exact_plackett_luce(dict(zip(CLICKS, np.exp(z / temperature), strict=True)), 3)
    cells = _every_cell("target", 3)
    p = position_probabilities(scorer, cells, temperature=temperature, n_sim=40_000, seed=1)
    for (_, item, pos), got in zip(cells.iter_rows(), p, strict=True):
        assert got == pytest.approx(exact[(item, pos)], abs=0.012), (item, pos)
    # every position holds exactly one item
    per_position = cells.with_columns(p=p).group_by("position").agg(pl.col("p").sum())
    assert np.allclose(per_position["p"].to_numpy(), 1.0)


def test_low_temperature_becomes_greedy_and_seen_items_are_never_shown() -> None:
    site = _site()
    scorer = _popularity(site)
    cells = _every_cell("ud0", 3)  # ud0 engaged with d: the policy cannot show it again
    greedy = position_probabilities(scorer, cells)
    cold = position_probabilities(scorer, cells, temperature=0.01, n_sim=500)
    assert np.array_equal(greedy, cold)
    shows_d = cells.with_columns(p=cold).filter(pl.col("item_id") == "d")["p"]
    assert shows_d.sum() == 0.0


def test_unknown_items_and_bad_temperature() -> None:
    scorer = _popularity(_site())
    cells = pl.DataFrame({"user_id": ["target"], "item_id": ["zz"], "position": [1]})
    assert position_probabilities(scorer, cells, temperature=1.0, n_sim=200)[0] == 0.0
    with pytest.raises(ValueError, match="temperature must be > 0"):
        position_probabilities(scorer, cells, temperature=0.0)
