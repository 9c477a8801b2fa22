"""The recommender conformance suite. Every model's test class subclasses `RecommenderContract`
and says how to build an unfitted model for small data:

    class TestMyModel(RecommenderContract):
        def make_model(self) -> Recommender:
            return MyModel(some_param=3)

The mixin fits it on a small synthetic site (the `fitted` fixture) and checks what "a feedrank
recommender" means: batch equals per-user, the fast path equals the generic one, seen items are
excluded only when asked, scores are finite and shaped, save/load gives identical scores, and a
checkerboard's held-out item comes first. Set `checkerboard_skip` to a reason where a model
cannot solve the checkerboard by design, and `has_similar` where it has item similarity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import pytest

from feedrank.settings import Settings
from feedrank.datasets.demo import generate_site
from feedrank.views.site import SiteData
from feedrank.exceptions import FeedrankError
from feedrank.models.base import Recommender
from feedrank.schema import EVENT_COLUMNS

T0 = datetime(2025, 6, 1, tzinfo=UTC)
BLOCKS = {
    "a": ("garden", "roses tulips compost pruning garden flowers"),
    "b": ("kitchen", "bread pasta sauce oven kitchen recipes"),
}


@cache
def contract_site() -> SiteData:
    return generate_site(n_users=150, n_items=60, days=8, seed=5).site_data()


@cache
def checkerboard(users_per_block: int = 12, items_per_block: int = 8) -> SiteData:
    """Two blocks of users, each clicking every item of its own block but one: user j of a
    block holds out item j mod items_per_block. Items carry their block in content_type and
    title, so content models can solve it too. The answer: each user's held-out item first."""
    items, events, users = [], [], []
    for b, (ctype, words) in BLOCKS.items():
        for i in range(items_per_block):
            items.append(
                {
                    "item_id": f"i{b}{i}",
                    "created_at": T0 - timedelta(days=30),
                    "content_type": ctype,
                    "lang": "en",
                    "title": f"{words} part {i}",
                }
            )
        for j in range(users_per_block):
            u = f"u{b}{j:02d}"
            users.append({"user_id": u, "age": 30 + j, "gender": "female" if j % 2 else "male"})
            for i in range(items_per_block):
                if i == j % items_per_block:
                    continue
                events.append(
                    {
                        "event_id": None,
                        "user_id": u,
                        "item_id": f"i{b}{i}",
                        "type": "click",
                        "timestamp": T0 + timedelta(hours=len(events)),
                        "value": 1.0,
                        "position": 1,
                        "device": None,
                        "context": None,
                    }
                )
    return SiteData(
        pl.DataFrame(users),
        pl.DataFrame(items).with_columns(pl.col("created_at").cast(pl.Datetime("us", "UTC"))),
        pl.DataFrame(events, schema=EVENT_COLUMNS).sort("timestamp"),
    )


def held_out(user_id: str, items_per_block: int = 8) -> str:
    return f"i{user_id[1]}{int(user_id[2:]) % items_per_block}"


def engaged(model: Recommender, user_id: str) -> set[str]:
    ev = model.data_.events.filter(
        (pl.col("user_id") == user_id)
        & pl.col("type").is_in(model.settings_.engagement_types)
        & (pl.col("timestamp") < model.at_)
    )
    return set(ev["item_id"].to_list())


def assert_same_recs(a: pl.DataFrame, b: pl.DataFrame) -> None:
    """Same users, ranks and scores; the same items except among scores tied to float32
    rounding (a block of users and a single user may go through different BLAS kernels)."""
    assert a.select("user_id", "rank").equals(b.select("user_id", "rank"))
    np.testing.assert_allclose(a["score"].to_numpy(), b["score"].to_numpy(), rtol=1e-6, atol=1e-9)
    for (u,), ga in a.group_by(["user_id"]):
        gb = b.filter(pl.col("user_id") == u)
        cut = ga["score"].min()
        above = pl.col("score") > cut + 1e-6 * max(1.0, abs(cut))  # type: ignore[operator]
        assert set(ga.filter(above)["item_id"]) == set(gb.filter(above)["item_id"]), u


class RecommenderContract:
    checkerboard_skip: ClassVar[str | None] = None
    has_similar: ClassVar[bool] = False

    def make_model(self) -> Recommender:
        raise NotImplementedError

    def checkerboard_model(self) -> Recommender:
        return self.make_model()

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls) -> Recommender:
        return cls().make_model().fit(contract_site(), Settings())

    @pytest.fixture(scope="class")
    @classmethod
    def warm_users(cls, fitted: Recommender) -> list[str]:
        ev = fitted.data_.events.filter(pl.col("type").is_in(fitted.settings_.engagement_types))
        return sorted(ev["user_id"].unique().to_list())[:15]

    # -- the contract ------------------------------------------------------------------------------
    def test_fit_sets_fitted_state(self, fitted: Recommender) -> None:
        assert fitted.is_fitted and fitted.kind
        assert fitted.at_ > fitted.data_.time_span[1]  # type: ignore[operator]

    def test_batch_equals_per_user(self, fitted: Recommender, warm_users: list[str]) -> None:
        batch = fitted.recommend(warm_users, k=7)
        one_by_one = pl.concat([fitted.recommend([u], k=7) for u in warm_users])
        assert_same_recs(batch, one_by_one)
        small_batches = fitted.recommend(warm_users, k=7, batch_size=4)
        assert_same_recs(batch, small_batches)

    def test_recommend_equals_the_generic_path(
        self, fitted: Recommender, warm_users: list[str]
    ) -> None:
        # The base class's recommend: score() over every candidate, then seen_mask.
        for exclude in (True, False):
            fast = fitted.recommend(warm_users, k=10, exclude_seen=exclude)
            generic = Recommender.recommend(fitted, warm_users, k=10, exclude_seen=exclude)
            assert_same_recs(fast, generic)

    def test_seen_items_excluded_only_when_asked(
        self, fitted: Recommender, warm_users: list[str]
    ) -> None:
        n = len(fitted.item_ids_)
        recs = fitted.recommend(warm_users, k=n, exclude_seen=True)
        kept = fitted.recommend(warm_users, k=n, exclude_seen=False)
        some_seen = False
        for u in warm_users:
            seen = engaged(fitted, u)
            assert not seen & set(recs.filter(pl.col("user_id") == u)["item_id"]), u
            got = set(kept.filter(pl.col("user_id") == u)["item_id"])
            assert seen <= got, u  # every score is finite, so all n items are listed
            some_seen |= bool(seen)
        assert some_seen

    def test_scores_shape_and_finite(self, fitted: Recommender, warm_users: list[str]) -> None:
        users = [*warm_users, "no-such-user"]
        items = fitted.item_ids_
        s = fitted.score(users, items)
        assert s.shape == (len(users), len(items))
        assert np.isfinite(s).all()
        recs = fitted.recommend(warm_users[:3], k=5)
        assert recs.columns == ["user_id", "rank", "item_id", "score"]
        assert recs.group_by("user_id").len()["len"].max() <= 5  # type: ignore[operator]
        for (_u,), g in recs.group_by(["user_id"]):
            assert g["rank"].to_list() == list(range(1, g.height + 1))
            assert (np.diff(g["score"].to_numpy()) <= 1e-12).all()

    def test_save_load_round_trip(
        self, fitted: Recommender, warm_users: list[str], tmp_path: Path
    ) -> None:
        path = fitted.save(tmp_path / "model")
        assert {p.name for p in path.iterdir()} >= {"meta.json", "arrays.npz"}
        loaded = type(fitted).load(path).serve_with(fitted.data_, fitted.at_)
        items = fitted.item_ids_
        np.testing.assert_array_equal(
            loaded.score(warm_users, items), fitted.score(warm_users, items)
        )
        assert_same_recs(loaded.recommend(warm_users, k=5), fitted.recommend(warm_users, k=5))

    def test_checkerboard_held_out_item_first(self) -> None:
        if self.checkerboard_skip:
            pytest.skip(self.checkerboard_skip)
        data = checkerboard()
        model = self.checkerboard_model().fit(data, Settings())
        users = data.users["user_id"].to_list()
        recs = model.recommend(users, k=len(model.item_ids_), exclude_seen=True)
        first = dict(recs.filter(pl.col("rank") == 1).select("user_id", "item_id").iter_rows())
        assert first == {u: held_out(u) for u in users}
        # and the held-out item strictly beats every item of the other block
        s = model.score(users, model.item_ids_)
        items = list(model.item_ids_)
        for r, u in enumerate(users):
            other = [items.index(i) for i in items if i[1] != u[1]]
            assert s[r, items.index(held_out(u))] > s[r, other].max(), u

    def test_similar_items(self, fitted: Recommender) -> None:
        item = fitted.data_.events.filter(pl.col("type").is_in(fitted.settings_.engagement_types))[
            "item_id"
        ].mode()[0]
        if not self.has_similar:
            with pytest.raises(FeedrankError, match="similar"):
                fitted.similar_items([item], k=5)
            return
        sim = fitted.similar_items([item], k=5)
        assert sim.columns == ["item_id", "rank", "similar_item_id", "score"]
        assert 0 < sim.height <= 5 and set(sim["item_id"]) == {item}
        assert item not in set(sim["similar_item_id"])
        assert (np.diff(sim["score"].to_numpy()) <= 1e-12).all()
        assert (sim["score"] > 0).all()
