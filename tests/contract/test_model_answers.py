"""The interaction matrix, known answers of the collaborative and content models (against
implicit and the closed forms), fold-in, fresh events, and cold start through the service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from feedrank.exceptions import ConfigError, NotFoundError
from feedrank.models.base import Scorer
from feedrank.models.content import ContentRecommender
from feedrank.models.ease import EASERecommender
from feedrank.models.factorization import ALSRecommender, BPRRecommender
from feedrank.models.knn import ItemKNNRecommender, UserKNNRecommender, Weighting, pruned_similarity
from feedrank.models.matrix import IdMap, interactions, sparse_top_k
from feedrank.models.popularity import IN_SEGMENT, OVERALL, PopularityRecommender
from feedrank.schema import EVENT_COLUMNS
from feedrank.serving.service import MODEL, NEWEST, RecommendationService
from feedrank.settings import AttributeWeights, Settings
from feedrank.views.site import SiteData
from feedrank.views.view import FrameView

from .recommender_contract import T0, assert_same_recs, checkerboard, held_out

implicit_nn = pytest.importorskip("implicit.nearest_neighbours")
pytestmark = [
    pytest.mark.filterwarnings("ignore:OpenBLAS is configured"),
    pytest.mark.filterwarnings("ignore:Method expects CSR input"),
]


def view(data: SiteData, at: datetime | None = None) -> FrameView:
    return FrameView(data, Settings(), at)


def events(rows: list[tuple[str, str, str, datetime, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "event_id": None,
                "user_id": u,
                "item_id": i,
                "type": t,
                "timestamp": ts,
                "value": v,
                "position": None,
                "device": None,
                "context": None,
            }
            for u, i, t, ts, v in rows
        ],
        schema=EVENT_COLUMNS,
    ).sort("timestamp")


def random_site(
    n_users: int = 60, n_items: int = 25, seed: int = 0
) -> tuple[SiteData, sp.csr_matrix]:
    """A site whose confidence matrix is a known random CSR (ids sort like their indices)."""
    rng = np.random.default_rng(seed)
    x = sp.random(n_users, n_items, density=0.25, format="coo", random_state=rng)
    x.data = np.round(1 + 4 * x.data).astype(np.float32)
    ev = events(
        [
            (f"u{r:03d}", f"i{c:03d}", "click", T0 + timedelta(minutes=k), float(v))
            for k, (r, c, v) in enumerate(zip(x.row, x.col, x.data, strict=True))
        ]
    )
    items = pl.DataFrame(
        {"item_id": [f"i{c:03d}" for c in range(n_items)], "created_at": [T0] * n_items}
    ).with_columns(pl.col("created_at").cast(pl.Datetime("us", "UTC")))
    users = pl.DataFrame({"user_id": [f"u{r:03d}" for r in range(n_users)]})
    return SiteData(users, items, ev), x.tocsr()


# -- the matrix and ids ------------------------------------------------------------------------------
def test_matrix_weights_are_type_times_attribute_times_value_before_at() -> None:
    at = T0 + timedelta(days=1)
    ev = events(
        [
            ("0042", "f1", "click", T0, 1.0),
            ("0042", "f1", "like", T0 + timedelta(hours=1), 1.0),  # like weight 2
            ("0042", "f2", "click", T0, 3.0),  # value 3, pricing x3
            ("0042", "f2", "impression", T0, 1.0),  # weight 0: not an interaction
            ("7", "f1", "click", at, 1.0),  # at the serving time: not before it
        ]
    )
    items = pl.DataFrame(
        {"item_id": ["f1", "f2"], "created_at": [T0, T0], "asset": ["guide", "pricing"]}
    ).with_columns(pl.col("created_at").cast(pl.Datetime("us", "UTC")))
    settings = Settings(attribute_weights=AttributeWeights("asset", {"pricing": 3.0}))
    data = SiteData(pl.DataFrame({"user_id": ["0042"]}), items, ev).until(at)
    inter = interactions(data, settings)
    assert list(inter.users.ids) == ["0042"] and list(inter.items.ids) == ["f1", "f2"]
    np.testing.assert_allclose(inter.matrix.toarray(), [[3.0, 9.0]])


def test_id_map_never_leaks_indices() -> None:
    m = IdMap(["b", "0042", "a", "b"])
    assert list(m.ids) == ["0042", "a", "b"]
    assert m.index(["a", "zzz", "0042"]).tolist() == [1, -1, 0]
    kept = IdMap(["b", "a", "b"], keep_order=True)
    assert list(kept.ids) == ["b", "a"] and kept.index(["a"]).tolist() == [1]
    assert IdMap(m.to_array()) == m


# -- known answers against implicit and closed forms ----------------------------------------------
@pytest.mark.parametrize(
    ("weighting", "peer"),
    [
        ("none", lambda: implicit_nn.CosineRecommender(K=6)),
        ("tfidf", lambda: implicit_nn.TFIDFRecommender(K=6)),
        ("bm25", lambda: implicit_nn.BM25Recommender(K=6, K1=1.2, B=0.75)),
    ],
)
def test_item_similarity_equals_implicits(weighting: str, peer) -> None:  # type: ignore[no-untyped-def]
    data, x = random_site()
    model = ItemKNNRecommender(k_neighbours=6, weighting=weighting).fit(data, Settings())
    ref = peer()
    ref.fit(x, show_progress=False)
    np.testing.assert_allclose(
        model.similarity_.toarray(), ref.similarity.toarray(), rtol=1e-5, atol=1e-6
    )
    # and scoring is the user's row times the similarity, as implicit's scorer does
    ids, scores = ref.recommend(3, x[3], N=5)
    recs = model.at(view(data)).recommend(["u003"], k=5)
    positive = scores > 0
    assert recs["item_id"].to_list()[: positive.sum()] == [f"i{i:03d}" for i in ids[positive]]


def test_full_neighbourhood_is_plain_cosine() -> None:
    x = sp.random(40, 15, density=0.3, format="csr", random_state=1)
    w = Weighting.fit(x.T.tocsr(), "none", 1.2, 0.75).transform(x.T.tocsr())
    dense = x.toarray()
    unit = dense / np.linalg.norm(dense, axis=0, keepdims=True).clip(1e-12)
    np.testing.assert_allclose(
        pruned_similarity(w, 15, block=4).toarray(), unit.T @ unit, atol=1e-12
    )


def test_als_equals_implicit_on_the_same_matrix() -> None:
    from implicit.cpu.als import AlternatingLeastSquares

    data, x = random_site(seed=2)
    model = ALSRecommender(factors=6, regularization=0.1, alpha=2.0, iterations=4, random_state=7)
    model.fit(data, Settings())
    ref = AlternatingLeastSquares(
        factors=6, regularization=0.1, alpha=2.0, iterations=4, random_state=7
    )
    ref.fit(x, show_progress=False)
    np.testing.assert_allclose(model.item_factors_, ref.item_factors, rtol=1e-4, atol=1e-5)
    users = [f"u{r:03d}" for r in range(10)]
    ids, _ = ref.recommend(np.arange(10), x[:10], N=5)
    recs = model.at(view(data)).recommend(users, k=5)
    assert recs["item_id"].to_list() == [f"i{i:03d}" for i in ids.ravel()]


def test_ease_is_the_closed_form() -> None:
    data, x = random_site(seed=3)
    model = EASERecommender(l2=5.0).fit(data, Settings())
    b = (x > 0).astype(np.float64).toarray()
    p = np.linalg.inv(b.T @ b + 5.0 * np.eye(b.shape[1]))
    expected = -p / np.diag(p)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(model.weights_, expected, rtol=1e-4, atol=1e-6)
    v = view(data)
    np.testing.assert_allclose(
        model.at(v).score(["u005"], v.candidates())[0], b[5] @ expected, rtol=1e-4, atol=1e-6
    )


def test_ease_keeps_the_most_engaged_items_of_a_large_catalogue() -> None:
    """Above max_items, EASE is the closed form on the max_items items with the most engaged
    users; the others get no signal."""
    data, x = random_site()
    model = EASERecommender(l2=5.0, max_items=10).fit(data, Settings())
    b = (x > 0).astype(np.float64).toarray()
    keep = np.sort(np.argsort(-b.sum(axis=0), kind="stable")[:10])
    assert model.kept_items_ == (10, 25)
    assert list(model.items_.ids) == [f"i{c:03d}" for c in keep]
    p = np.linalg.inv(b[:, keep].T @ b[:, keep] + 5.0 * np.eye(10))
    expected = -p / np.diag(p)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(model.weights_, expected, rtol=1e-4, atol=1e-6)
    v = view(data)
    s = model.at(v).score_users(["u005"], v.histories(["u005"]), v.candidates())[0]
    dropped = [i for i in range(25) if i not in set(keep)]
    assert np.isnan(s[dropped]).all() and np.isfinite(s[keep]).any()
    with pytest.raises(ConfigError, match="max_items must be an integer >= 1; got 0"):
        EASERecommender(max_items=0).fit(data, Settings())


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (ItemKNNRecommender(weighting="cosine"), "weighting must be one of"),
        (UserKNNRecommender(k_neighbours=0), "k_neighbours must be >= 1; got 0"),
        (ALSRecommender(factors=0), "factors must be > 0; got 0"),
        (BPRRecommender(learning_rate=-1), "learning_rate must be > 0"),
        (ContentRecommender(metadata_weight=2), r"metadata_weight must be in \[0, 1\]; got 2"),
        (ContentRecommender(text_columns=["nope"]), "text_columns must be item columns"),
    ],
)
def test_bad_parameters_are_named(model, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=message):
        model.fit(checkerboard(), Settings())


# -- serving: fresh events, users unknown at fit -----------------------------------------------------
def test_fresh_engagement_moves_recommendations_without_refit() -> None:
    data = checkerboard()
    model = ItemKNNRecommender(k_neighbours=20).fit(data, Settings())
    user, item = "ua00", held_out("ua00")
    assert model.at(view(data)).recommend([user], k=1)["item_id"].to_list() == [item]
    later = T0 + timedelta(days=60)
    fresh = SiteData(
        data.users,
        data.items,
        pl.concat([data.events, events([(user, item, "click", later, 1.0)])]),
    )
    assert item not in model.at(view(fresh)).recommend([user], k=20)["item_id"].to_list()


@pytest.mark.parametrize(
    "make",
    [
        lambda: ALSRecommender(factors=8, regularization=0.05, iterations=10, random_state=1),
        lambda: BPRRecommender(factors=8, learning_rate=0.05, iterations=200, random_state=1),
        lambda: UserKNNRecommender(k_neighbours=10),
    ],
)
def test_users_unknown_at_fit_are_folded_in(make) -> None:  # type: ignore[no-untyped-def]
    data = checkerboard()
    newcomers = ["ua00", "ub03"]
    train = SiteData(
        data.users, data.items, data.events.filter(~pl.col("user_id").is_in(newcomers))
    )
    model = make().fit(train, Settings())
    recs = model.at(view(data)).recommend(newcomers, k=1)
    assert dict(recs.select("user_id", "item_id").iter_rows()) == {
        u: held_out(u) for u in newcomers
    }


def test_similar_items_stay_in_the_block() -> None:
    data = checkerboard()
    for model in (
        ItemKNNRecommender(k_neighbours=20),
        EASERecommender(l2=5.0),
        ContentRecommender(),
        ALSRecommender(factors=8, regularization=0.05, iterations=10, random_state=1),
    ):
        sim = model.fit(data, Settings()).at(view(data)).similar_items(["ia1", "ib2"], k=5)
        assert sim.height == 10, model.kind
        for item, other in sim.select("item_id", "similar_item_id").iter_rows():
            assert item[1] == other[1] and item != other, model.kind
    with pytest.raises(NotFoundError, match="no-such-item"):
        ItemKNNRecommender().fit(data, Settings()).at(view(data)).similar_items(["no-such-item"])


# -- cold start ----------------------------------------------------------------------------------
def test_a_new_item_reaches_users_through_content_similarity() -> None:
    data = checkerboard()
    fit_at = data.time_span[1]
    model = ContentRecommender().fit(data, Settings())
    # After the fit, a new gardening post nobody has touched yet.
    new = pl.DataFrame(
        {
            "item_id": ["ia-new"],
            "created_at": [fit_at + timedelta(hours=1)],  # type: ignore[operator]
            "content_type": ["garden"],
            "lang": ["en"],
            "title": ["pruning roses and tulips in spring"],
        }
    ).with_columns(pl.col("created_at").cast(pl.Datetime("us", "UTC")))
    later = SiteData(data.users, pl.concat([data.items, new]), data.events)
    v = view(later, fit_at + timedelta(hours=2))  # type: ignore[operator]
    sc = model.at(v)
    garden = [u for u in later.users["user_id"] if u.startswith("ua")]
    kitchen = [u for u in later.users["user_id"] if u.startswith("ub")]
    recs = sc.recommend(garden + kitchen, k=2)
    for u in garden:  # the held-out item (same text and type) and the new one lead
        assert set(recs.filter(pl.col("user_id") == u)["item_id"]) == {held_out(u), "ia-new"}
    # kitchen readers share nothing with it (one language only: no metadata level in common)
    assert (sc.score(kitchen, ["ia-new"]) == 0.0).all()
    assert (sc.score(garden, ["ia-new"]) > 0.5).all()
    # a model of interactions alone has no signal for it: never recommended
    als = ALSRecommender(factors=8, iterations=5).fit(data, Settings()).at(v)
    assert np.isnan(als.score_users(garden[:1], v.histories(garden[:1]), np.array(["ia-new"])))[
        0, 0
    ]
    assert "ia-new" not in als.recommend(garden, k=8)["item_id"].to_list()


def test_a_new_user_gets_segment_popularity_from_the_service() -> None:
    data = checkerboard()
    newcomer = pl.DataFrame({"user_id": ["newbie"], "age": [31], "gender": ["female"]})
    data = SiteData(pl.concat([data.users, newcomer]), data.items, data.events)
    model = ItemKNNRecommender(k_neighbours=20).fit(data, Settings())
    fallback = PopularityRecommender(segment_by=["age_band", "gender"], min_segment_weight=1.0)
    service = RecommendationService(model, view(data), fallback.fit(data, Settings()))
    recs = service.recommend(["ua01", "newbie"], k=3)
    # ua01's one unseen garden item is the model's; the kitchen has no path from its history
    mine = recs.filter(pl.col("user_id") == "ua01")
    assert mine["source"].to_list() == [MODEL, IN_SEGMENT, IN_SEGMENT]
    assert mine["item_id"][0] == held_out("ua01")
    assert set(recs.filter(pl.col("user_id") == "newbie")["source"]) == {IN_SEGMENT}
    assert recs.filter(pl.col("user_id") == "newbie").height == 3


def test_without_a_users_file_cold_start_is_overall_popularity_then_the_newest() -> None:
    """No profiles: no segment can be claimed. A score of 0 is never a model answer: lists the
    model cannot fill are filled by popularity (items someone engaged with), then the newest
    items, each row saying where it came from."""
    data = checkerboard()
    fresh = pl.DataFrame(
        {"item_id": ["brand-new"], "created_at": [T0 + timedelta(days=40)], "content_type": ["x"]}
    ).with_columns(pl.col("created_at").cast(pl.Datetime("us", "UTC")))
    nobody = SiteData(
        pl.DataFrame(schema={"user_id": pl.String}),
        pl.concat([data.items, fresh], how="diagonal_relaxed"),
        data.events,
    )
    model = ItemKNNRecommender(k_neighbours=20).fit(nobody, Settings())
    fallback = PopularityRecommender(segment_by=["age_band", "gender"]).fit(nobody, Settings())
    service = RecommendationService(model, view(nobody, T0 + timedelta(days=41)), fallback)
    recs = service.recommend(["stranger", "ua00"], k=17)
    stranger = recs.filter(pl.col("user_id") == "stranger")
    assert stranger["source"].to_list() == [OVERALL] * 16 + [NEWEST]
    assert stranger["item_id"][-1] == "brand-new" and (stranger["score"] > 0).all()
    mine = recs.filter(pl.col("user_id") == "ua00")
    assert mine.height == 10  # 17 items, 7 seen
    model_rows = mine.filter(pl.col("source") == MODEL)
    assert model_rows.height and (model_rows["score"] > 0).all()
    assert set(mine["source"]) <= {MODEL, OVERALL, NEWEST}


def test_serving_time_is_respected() -> None:
    data = checkerboard()
    early = datetime(2025, 6, 1, 5, tzinfo=UTC)  # only the first five clicks happened
    v = view(data, early)
    assert v.histories(v.active_users()).height == 5
    model = EASERecommender(l2=5.0).fit(data, Settings())
    rows = model.at(v).rows(v.active_users(), v.histories(v.active_users()))  # type: ignore[attr-defined]
    assert rows.matrix.sum() == pytest.approx(5.0)


def test_a_viewed_item_is_signal_and_seen() -> None:
    # A view weighs (1) and counts as an engagement by default: it feeds the matrix, and the
    # viewed item is one the user knows, so it leaves their list; the fast path and the
    # generic one agree on it.
    data = checkerboard()
    user, item = "ua00", held_out("ua00")
    seen = events([(user, item, "view", T0 + timedelta(days=20), 1.0)])
    data = SiteData(data.users, data.items, pl.concat([data.events, seen]).sort("timestamp"))
    model = ItemKNNRecommender(k_neighbours=20).fit(data, Settings())
    v = view(data)
    sc = model.at(v)
    assert sc.rows([user], v.histories([user])).matrix.nnz == 8  # type: ignore[attr-defined]
    fast = sc.recommend([user, "ua01"], k=3)
    generic = Scorer.recommend(sc, [user, "ua01"], k=3)
    assert_same_recs(fast, generic)
    assert item not in fast.filter(pl.col("user_id") == user)["item_id"].to_list()


def test_sparse_top_k_keeps_each_rows_largest_stored_entries() -> None:
    m = sp.random(40, 30, density=0.3, format="csr", random_state=4)
    m.data -= 0.5  # negatives too: the order comes from the float's bits
    top = sparse_top_k(m, 4)
    dense = m.toarray()
    for r in range(40):
        stored = dense[r][dense[r] != 0]
        expected = np.sort(stored)[::-1][:4]
        got = top.data[top.indptr[r] : top.indptr[r + 1]]
        np.testing.assert_allclose(got, expected)  # best first
        cols = top.indices[top.indptr[r] : top.indptr[r + 1]]
        np.testing.assert_allclose(dense[r, cols], got)


def test_sparse_top_k_of_empty_matrices() -> None:
    for shape in ((0, 5), (3, 5)):
        top = sparse_top_k(sp.csr_matrix(shape, dtype=np.float32), 2)
        assert top.shape == shape and top.nnz == 0


def test_item_knn_similarity_equals_the_scipy_pruned_product() -> None:
    """The fit uses implicit's all_pairs_knn; it must equal the plain pruned SciPy product."""
    import numpy as np
    import scipy.sparse as sp

    from feedrank.models.knn import Weighting, pruned_similarity

    rng = np.random.default_rng(1)
    m = sp.csr_matrix(
        (rng.random(4000) + 0.5, (rng.integers(0, 600, 4000), rng.integers(0, 150, 4000))),
        shape=(600, 150),
    )
    m.sum_duplicates()
    docs = m.T.tocsr()
    for scheme in ("none", "bm25", "tfidf"):
        weighted = Weighting.fit(docs, scheme, 1.2, 0.75).transform(docs)
        ours = pruned_similarity(weighted, 20).toarray()
        from implicit.nearest_neighbours import all_pairs_knn

        theirs = all_pairs_knn(weighted.T.tocsr(), 20, num_threads=0, show_progress=False).toarray()
        np.testing.assert_allclose(
            np.sort(ours, axis=1)[:, -20:], np.sort(theirs, axis=1)[:, -20:], rtol=1e-6
        )
