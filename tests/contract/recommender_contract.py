"""The recommender conformance suite. Every model's test class subclasses `RecommenderContract`
and says how to build an unfitted model for small data:

    class TestMyModel(RecommenderContract):
        def make_model(self) -> Recommender:
            return MyModel(some_param=3)

The mixin fits it on a small synthetic site (the `fitted` fixture) and checks what "a feedrank
recommender" means: batch equals per-user equals the store-backed view a server uses, the fast
path equals the generic one, seen items are excluded only when asked, save/load gives identical
scores, serving leaves the fitted parameters byte-identical, two threads on one loaded model
agree, a view at time t answers as if nothing after t had happened, and a checkerboard's
held-out item comes first. Set `checkerboard_skip` to a reason where a model cannot solve the
checkerboard by design, and `has_similar` where it has item similarity."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pytest

from feedrank.datasets.demo import generate_site
from feedrank.exceptions import FeedrankError
from feedrank.io import import_frame
from feedrank.models.base import Recommender, Scorer
from feedrank.schema import EVENT_COLUMNS
from feedrank.settings import Settings
from feedrank.store.sqlite import SQLiteStore
from feedrank.views.site import SiteData
from feedrank.views.view import FrameView, StoreView, store_catalogue

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


def known(view: FrameView, user_id: str) -> set[str]:
    """The items the user already knows (any event but an impression)."""
    h = view.histories([user_id]).filter(Settings.seen_expr())
    return set(h["item_id"].to_list())


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


def dumped(model: Recommender, with_ids: bool = True) -> bytes:
    """The fitted parameters, byte for byte (without the fits' random names, with_ids=False)."""
    meta, arrays = model.dump()
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return (
        repr(sorted((meta if with_ids else _without_ids(meta)).items())).encode() + buf.getvalue()
    )


def _without_ids(meta: Any) -> Any:
    if isinstance(meta, dict):
        return {k: _without_ids(v) for k, v in meta.items() if k != "fit_id"}
    if isinstance(meta, list):
        return [_without_ids(v) for v in meta]
    return meta


def stored(data: SiteData, path: Path) -> SQLiteStore:
    store = SQLiteStore(str(path))
    for kind, frame in (
        ("users", data.users),
        ("items", data.items),
        ("interactions", data.events),
    ):
        report = import_frame(store, kind, frame, strict=True)  # type: ignore[arg-type]
        assert report.bad == 0
    return store


class RecommenderContract:
    checkerboard_skip: ClassVar[str | None] = None
    has_similar: ClassVar[bool] = False
    # Models whose scores are never "no signal" (every candidate listed when k is large).
    dense: ClassVar[bool] = False
    # Models that answer a user who has never engaged (popularity, freshness: by design; the
    # GLM: from the user's own impressions and visits). The others must say "no signal".
    answers_the_unengaged: ClassVar[bool] = False

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
    def view(cls) -> FrameView:
        return FrameView(contract_site(), Settings())

    @pytest.fixture(scope="class")
    @classmethod
    def scorer(cls, fitted: Recommender, view: FrameView) -> Scorer:
        return fitted.at(view)

    @pytest.fixture(scope="class")
    @classmethod
    def warm_users(cls) -> list[str]:
        return sorted(contract_site().engaged_pairs(Settings())["user_id"].unique().to_list())[:15]

    # -- the contract ------------------------------------------------------------------------------
    def test_fit_records_settings_window_and_id(self, fitted: Recommender) -> None:
        assert fitted.is_fitted and fitted.kind
        lo, hi = contract_site().time_span
        assert fitted.window_ == (lo.isoformat(), hi.isoformat())  # type: ignore[union-attr]
        assert fitted.settings_ == Settings() and len(fitted.fit_id_) == 32

    def test_the_same_data_fits_the_same_model(self, fitted: Recommender) -> None:
        """Bit for bit, whatever the machine's load: seeds fixed, no reduction whose order
        depends on thread timing."""
        again = self.make_model().fit(contract_site(), Settings())
        assert again.fit_id_ != fitted.fit_id_  # each fit is named apart (caches key on it)
        assert dumped(again, with_ids=False) == dumped(fitted, with_ids=False)

    def test_batch_equals_per_user(self, scorer: Scorer, warm_users: list[str]) -> None:
        batch = scorer.recommend(warm_users, k=7)
        one_by_one = pl.concat([scorer.recommend([u], k=7) for u in warm_users])
        assert_same_recs(batch, one_by_one)
        small_batches = scorer.recommend(warm_users, k=7, batch_size=4)
        assert_same_recs(batch, small_batches)

    def test_recommend_equals_the_generic_path(self, scorer: Scorer, warm_users: list[str]) -> None:
        # The base class's recommend: score_users over every candidate, then the seen mask.
        for exclude in (True, False):
            fast = scorer.recommend(warm_users, k=10, exclude_seen=exclude)
            generic = Scorer.recommend(scorer, warm_users, k=10, exclude_seen=exclude)
            assert_same_recs(fast, generic)

    def test_store_view_equals_frame_view(
        self, fitted: Recommender, scorer: Scorer, warm_users: list[str], tmp_path: Path
    ) -> None:
        """What a server or a batch job reads (a store, a user at a time) gives the answers
        offline evaluation reads from frames."""
        store = stored(contract_site(), tmp_path / "s.db")
        frame_view = scorer.view
        cat = store_catalogue(store)
        assert cat.as_of == frame_view.at  # the data's clock: just after the newest event
        store_view = StoreView(store, Settings(), cat)
        assert_same_recs(
            fitted.at(store_view).recommend(warm_users, k=7), scorer.recommend(warm_users, k=7)
        )
        for u in warm_users[:3]:
            one = StoreView.for_user(store, Settings(), cat, u)
            assert_same_recs(fitted.at(one).recommend([u], k=7), scorer.recommend([u], k=7))
        store.close()

    def test_seen_items_excluded_only_when_asked(
        self, scorer: Scorer, view: FrameView, warm_users: list[str]
    ) -> None:
        n = len(view.candidates())
        recs = scorer.recommend(warm_users, k=n, exclude_seen=True)
        kept = scorer.recommend(warm_users, k=n, exclude_seen=False)
        some_seen = False
        for u in warm_users:
            seen = known(view, u)
            assert not seen & set(recs.filter(pl.col("user_id") == u)["item_id"]), u
            if self.dense:
                assert seen <= set(kept.filter(pl.col("user_id") == u)["item_id"]), u
            some_seen |= bool(seen)
        assert some_seen

    def test_scores_shape_and_no_signal(
        self, scorer: Scorer, view: FrameView, warm_users: list[str]
    ) -> None:
        users = [*warm_users, "no-such-user"]
        items = view.candidates()
        s = scorer.score(users, items)
        assert s.shape == (len(users), len(items))
        assert np.isfinite(s).all()  # no signal scores 0 here; recommend leaves it out
        recs = scorer.recommend(warm_users[:3], k=5)
        assert recs.columns == ["user_id", "rank", "item_id", "score"]
        assert recs.group_by("user_id").len()["len"].max() <= 5  # type: ignore[operator]
        for (_u,), g in recs.group_by(["user_id"]):
            assert g["rank"].to_list() == list(range(1, g.height + 1))
            assert (np.diff(g["score"].to_numpy()) <= 1e-12).all()

    def test_a_user_who_never_engaged_gets_no_model_answer(self, fitted: Recommender) -> None:
        """Only impressions and a login: nothing says what the user likes, so scores would be
        item terms alone (popularity by another name). Such a user must be left to the
        service's fallbacks, which say what they are."""
        if self.answers_the_unengaged:
            pytest.skip(f"{fitted.kind} answers every user by design")
        site = contract_site()
        items = site.items["item_id"].to_list()[:4]
        t = site.time_span[1] - timedelta(hours=1)  # type: ignore[operator]
        rows = [
            {"user_id": "lurker", "item_id": i, "type": "impression", "timestamp": t, "position": p}
            for p, i in enumerate(items, 1)
        ] + [{"user_id": "lurker", "item_id": "", "type": "login", "timestamp": t}]
        extra = pl.DataFrame(rows).with_columns(
            pl.col("timestamp").cast(EVENT_COLUMNS["timestamp"])
        )
        events = pl.concat([site.events, extra], how="diagonal_relaxed").select(
            [pl.col(c).cast(dt) for c, dt in EVENT_COLUMNS.items()]
        )
        view = FrameView(SiteData(site.users, site.items, events.sort("timestamp")), Settings())
        sc = fitted.at(view)
        assert sc.recommend(["lurker"], k=5).is_empty()
        scores = sc.score_users(["lurker"], view.histories(["lurker"]), view.candidates())
        assert np.isnan(scores).all()

    def test_serving_leaves_the_fitted_parameters_unchanged(
        self, fitted: Recommender, warm_users: list[str], tmp_path: Path
    ) -> None:
        before = dumped(fitted)
        later = FrameView(contract_site(), Settings(), contract_site().time_span[1])  # type: ignore[arg-type]
        for view in (FrameView(contract_site(), Settings()), later):
            sc = fitted.at(view)
            sc.prepare()
            sc.recommend([*warm_users, "new-user"], k=5)
            sc.score(warm_users, view.candidates())
            sc.explain_pairs(warm_users[:2], list(view.candidates()[:2]))
        assert dumped(fitted) == before

    def test_save_load_round_trip(
        self, fitted: Recommender, scorer: Scorer, warm_users: list[str], tmp_path: Path
    ) -> None:
        path = fitted.save(tmp_path / "model")
        assert {p.name for p in path.iterdir()} >= {"meta.json", "arrays.npz"}
        loaded = type(fitted).load(path)
        assert dumped(loaded) == dumped(fitted)
        items = scorer.view.candidates()
        again = loaded.at(scorer.view)
        np.testing.assert_array_equal(
            again.score(warm_users, items), scorer.score(warm_users, items)
        )
        assert_same_recs(again.recommend(warm_users, k=5), scorer.recommend(warm_users, k=5))

    def test_two_threads_on_one_loaded_model_agree(
        self, fitted: Recommender, warm_users: list[str], tmp_path: Path
    ) -> None:
        loaded = type(fitted).load(fitted.save(tmp_path / "model"))
        view = FrameView(contract_site(), Settings())
        with ThreadPoolExecutor(2) as pool:
            a, b = pool.map(lambda _: loaded.at(view).recommend(warm_users, k=6), range(2))
        assert_same_recs(a, b)
        assert_same_recs(a, fitted.at(view).recommend(warm_users, k=6))

    def test_a_view_at_t_ignores_what_came_after(
        self, fitted: Recommender, warm_users: list[str]
    ) -> None:
        """Point in time: serving the whole site as of t equals serving the site cut at t."""
        data = contract_site()
        lo, hi = data.time_span
        t = lo + (hi - lo) * 0.6  # type: ignore[operator]
        whole = fitted.at(FrameView(data, Settings(), t)).recommend(warm_users, k=6)
        cut = data.until(t)
        alone = fitted.at(FrameView(SiteData(cut.users, data.items, cut.events), Settings(), t))
        assert_same_recs(whole, alone.recommend(warm_users, k=6))
        later = fitted.at(FrameView(data, Settings())).recommend(warm_users, k=6)
        assert not whole.equals(later)  # and time did move the answer

    def test_checkerboard_held_out_item_first(self) -> None:
        if self.checkerboard_skip:
            pytest.skip(self.checkerboard_skip)
        data = checkerboard()
        model = self.checkerboard_model().fit(data, Settings())
        view = FrameView(data, Settings())
        sc = model.at(view)
        users = data.users["user_id"].to_list()
        items = view.candidates()
        recs = sc.recommend(users, k=len(items), exclude_seen=True)
        first = dict(recs.filter(pl.col("rank") == 1).select("user_id", "item_id").iter_rows())
        assert first == {u: held_out(u) for u in users}
        # and the held-out item strictly beats every item of the other block
        s = sc.score(users, items)
        listed = list(items)
        for r, u in enumerate(users):
            other = [listed.index(i) for i in listed if i[1] != u[1]]
            assert s[r, listed.index(held_out(u))] > s[r, other].max(), u

    def test_similar_items(self, scorer: Scorer) -> None:
        item = contract_site().engagements(Settings())["item_id"].mode()[0]
        if not self.has_similar:
            with pytest.raises(FeedrankError, match="similar"):
                scorer.similar_items([item], k=5)
            return
        sim = scorer.similar_items([item], k=5)
        assert sim.columns == ["item_id", "rank", "similar_item_id", "score"]
        assert 0 < sim.height <= 5 and set(sim["item_id"]) == {item}
        assert item not in set(sim["similar_item_id"])
        assert (np.diff(sim["score"].to_numpy()) <= 1e-12).all()
        assert (sim["score"] > 0).all()
