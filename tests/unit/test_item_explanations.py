"""Item-to-item models explain a recommendation by the history items behind it, exactly: the
contributions of every history item sum to the score, largest first."""

from __future__ import annotations

import numpy as np
import pytest

from feedrank.datasets.demo import generate_site
from feedrank.models import make
from feedrank.settings import Settings
from feedrank.views.view import FrameView


@pytest.mark.parametrize("kind", ["ease", "itemknn"])
def test_history_contributions_add_up_to_the_score(kind: str) -> None:
    data = generate_site(n_users=150, n_items=60, days=8, seed=2).site_data()
    view = FrameView(data, Settings())
    scorer = make(kind).fit(data, Settings()).at(view)
    users = sorted(data.engaged_pairs(Settings())["user_id"].unique().to_list())[:8]
    recs = scorer.recommend(users, k=3)
    assert recs.height > 0
    reasons = scorer.explain_pairs(recs["user_id"].to_list(), recs["item_id"].to_list(), top=10_000)
    for (score, item), why in zip(recs.select("score", "item_id").rows(), reasons, strict=True):
        assert why, item
        total = sum(r["contribution"] for r in why)
        assert total == pytest.approx(score, rel=1e-5, abs=1e-6)
        sizes = [abs(r["contribution"]) for r in why]
        assert sizes == sorted(sizes, reverse=True)
        assert all(r["feature"].startswith("because of ") for r in why)
        assert item not in {r["feature"].removeprefix("because of ") for r in why}


def test_factor_models_give_no_item_reasons() -> None:
    data = generate_site(n_users=80, n_items=40, days=6, seed=2).site_data()
    scorer = (
        make("als", factors=4, iterations=3).fit(data, Settings()).at(FrameView(data, Settings()))
    )
    users = sorted(data.engaged_pairs(Settings())["user_id"].unique().to_list())[:2]
    recs = scorer.recommend(users, k=2)
    assert scorer.explain_pairs(recs["user_id"].to_list(), recs["item_id"].to_list()) == [
        [] for _ in range(recs.height)
    ]
    assert np.isfinite(recs["score"].to_numpy()).all()
