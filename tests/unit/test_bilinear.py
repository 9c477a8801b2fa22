"""Model 1 (bilinear logistic with an identity prior) and the vectors it reads: known answers,
uniqueness of the MAP, point-in-time user vectors, serving paths that agree, the CLI."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.optimize import check_grad
from typer.testing import CliRunner

from feedrank.cli.main import app
from feedrank.datasets.demo import DemoSite, generate_site
from feedrank.exceptions import ConfigError
from feedrank.features.examples import build_examples
from feedrank.features.history import T
from feedrank.models import MODELS
from feedrank.models.bilinear import BilinearRecommender, fit_bilinear, sigmoid
from feedrank.models.vectors import ItemEmbedder, reduce_dim, user_vectors_asof
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import FrameView


def simulate(n: int, W: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    d = W.shape[0]
    X, Y = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    z = np.einsum("nd,de,ne->n", X, W, Y)
    return X, Y, (rng.random(n) < sigmoid(z)).astype(float)


def test_known_w_is_recovered() -> None:
    rng = np.random.default_rng(1)
    W_true = np.eye(4) + rng.normal(0, 0.4, (4, 4))
    X, Y, c = simulate(40_000, W_true)
    fit = fit_bilinear(X, Y, c, prior_sd=10.0)  # a weak prior: the data speak
    assert fit.converged
    assert np.max(np.abs(fit.W - W_true)) < 0.12


def test_two_starting_points_reach_the_same_mode() -> None:
    X, Y, c = simulate(3_000, np.eye(5) * 0.5, seed=2)
    a = fit_bilinear(X, Y, c, prior_sd=1.0)
    b = fit_bilinear(X, Y, c, prior_sd=1.0, W0=np.random.default_rng(3).normal(0, 3, (5, 5)))
    assert np.max(np.abs(a.W - b.W)) < 1e-4
    assert a.objective == pytest.approx(b.objective, rel=1e-8)


def test_no_data_gives_the_prior_mean() -> None:
    empty = np.zeros((0, 6))
    fit = fit_bilinear(empty, empty, np.zeros(0), W0=np.full((6, 6), 2.0))
    np.testing.assert_allclose(fit.W, np.eye(6), atol=1e-6)


def test_the_prior_pulls_toward_the_identity() -> None:
    X, Y, c = simulate(500, np.zeros((3, 3)), seed=4)
    weak = fit_bilinear(X, Y, c, prior_sd=100.0).W
    strong = fit_bilinear(X, Y, c, prior_sd=0.01).W
    assert np.abs(strong - np.eye(3)).max() < np.abs(weak - np.eye(3)).max()
    assert np.abs(strong - np.eye(3)).max() < 0.05


def test_analytic_gradient_matches_finite_differences() -> None:
    X, Y, c = simulate(200, np.eye(3), seed=5)
    d = 3

    def objective(w: np.ndarray) -> float:
        W = w.reshape(d, d)
        z = np.einsum("nd,de,ne->n", X, W, Y)
        return float(np.sum(np.logaddexp(0, z) - c * z) + 0.5 * np.sum((W - np.eye(d)) ** 2))

    def gradient(w: np.ndarray) -> np.ndarray:
        W = w.reshape(d, d)
        z = np.einsum("nd,de,ne->n", X, W, Y)
        return (X.T @ (Y * (sigmoid(z) - c)[:, None]) + (W - np.eye(d))).ravel()

    w0 = np.random.default_rng(6).normal(size=d * d)
    assert check_grad(objective, gradient, w0) < 1e-4
    # the fitted mode is where that gradient vanishes
    W = fit_bilinear(X, Y, c).W
    assert np.abs(gradient(W.ravel())).max() < 1e-3


# -- vectors ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def site() -> DemoSite:
    return generate_site(n_users=200, n_items=80, days=8, seed=11)


@pytest.fixture(scope="module")
def data(site: DemoSite) -> SiteData:
    return site.site_data()


@pytest.mark.parametrize("source", ["metadata", "text", "cf"])
def test_item_vectors_have_unit_length_and_the_asked_dimension(data: SiteData, source: str) -> None:
    emb = ItemEmbedder(source=source, dim=6, source_dim=20).fit(data, Settings())
    Y = emb.transform(data.items)
    assert Y.shape == (data.items.height, 6)
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), 1.0, atol=1e-9)


def test_random_projection_keeps_distances_roughly() -> None:
    Z = np.random.default_rng(0).normal(size=(50, 300))
    M, c = reduce_dim(Z, 150, "random")
    assert M.shape == (300, 150) and not c.any()
    d_in = np.linalg.norm(Z[0] - Z[1])
    d_out = np.linalg.norm((Z[0] - Z[1]) @ M)
    assert 0.7 < d_out / d_in < 1.3


def test_bad_vector_source_names_the_allowed_values() -> None:
    with pytest.raises(
        ConfigError, match=r"vectors must be one of \['auto', 'metadata', 'text', 'cf'\]"
    ):
        ItemEmbedder(source="images")


def test_user_vectors_see_only_engagements_strictly_before(data: SiteData) -> None:
    settings = Settings()
    emb = ItemEmbedder(dim=5).fit(data, settings)
    ids = data.items["item_id"].to_list()
    Y = emb.transform(data.items)
    clicks = data.events.filter(pl.col("type") == "click").sort(T)
    user, t = clicks["user_id"][10], clicks[T][10]
    keys = pl.DataFrame({"user_id": [user, user], T: [t, t + timedelta(microseconds=1)]})
    x = user_vectors_asof(keys, data, settings, ids, Y)
    # the same answer from data cut strictly before t: nothing at or after t leaks in
    x_cut = user_vectors_asof(keys[:1], data.until(t), settings, ids, Y)
    np.testing.assert_allclose(x[0], x_cut[0])
    assert not np.allclose(x[0], x[1])  # one microsecond later the click at t counts
    # and it is the weighted mean of the items engaged before
    eng = data.engagements(settings).filter((pl.col("user_id") == user) & (pl.col(T) <= t))
    w = eng["type"].replace_strict(settings.type_weights, return_dtype=pl.Float64).to_numpy()
    rows = Y[[ids.index(i) for i in eng["item_id"].to_list()]]
    np.testing.assert_allclose(x[1], (w[:, None] * rows).sum(0) / w.sum())


# -- the recommender ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(data: SiteData) -> BilinearRecommender:
    return BilinearRecommender(dim=8).fit(data, Settings())


@pytest.fixture(scope="module")
def view(data: SiteData) -> FrameView:
    return FrameView(data, Settings())


def test_scores_agree_with_row_predictions_at_the_serving_time(
    fitted: BilinearRecommender, view: FrameView, data: SiteData
) -> None:
    users = sorted(data.engaged_pairs(Settings())["user_id"].unique().to_list())[:5]
    items = data.items["item_id"].to_list()[:7]
    S = fitted.at(view).score(users, items)
    rows = pl.DataFrame(
        {
            "user_id": np.repeat(users, len(items)),
            "item_id": np.tile(items, len(users)),
            T: [view.at] * (len(users) * len(items)),
        }
    )
    np.testing.assert_allclose(S.ravel(), fitted.predict_proba(data, rows), rtol=1e-10)


def test_explanation_adds_up_to_the_logit(
    fitted: BilinearRecommender, view: FrameView, data: SiteData
) -> None:
    user, item = data.users["user_id"][0], data.items["item_id"][3]
    sc = fitted.at(view)
    parts = sc.explain_pairs([user], [item], top=10)[0]
    assert {p["feature"] for p in parts} >= {"dot product x.y", "item bias", "intercept"}
    logit = sum(p["contribution"] for p in parts)
    assert sigmoid(np.array([logit]))[0] == pytest.approx(sc.score([user], [item])[0, 0])


def test_save_and_load_give_the_same_scores(
    fitted: BilinearRecommender, view: FrameView, data: SiteData, tmp_path: Path
) -> None:
    loaded = BilinearRecommender.load(fitted.save(tmp_path / "m")).at(view)
    users, items = data.users["user_id"].to_list()[:4], data.items["item_id"].to_list()
    np.testing.assert_allclose(loaded.score(users, items), fitted.at(view).score(users, items))


def test_normalised_serving_is_a_dot_product_with_unit_item_vectors(
    view: FrameView, data: SiteData
) -> None:
    m = BilinearRecommender(dim=8, normalize=True).fit(data, Settings())
    sc = m.at(view)
    items = data.items["item_id"].to_list()
    V = m.index_vectors(m.item_table(data.items)[1])
    np.testing.assert_allclose(np.linalg.norm(V, axis=1), 1.0, atol=1e-9)
    users = data.users["user_id"].to_list()[:6]
    X = sc.user_vectors(users, view.histories(users))
    S = sc.score(users, items)
    # same ranking as the plain dot product x . v (b > 0: more aligned, more likely)
    assert m.calibration_[1] > 0
    np.testing.assert_array_equal(np.argsort(-S, axis=1), np.argsort(-(X @ V.T), axis=1))


def test_bilinear_beats_chance_on_held_out_time(site: DemoSite, data: SiteData) -> None:
    s = Settings()
    cut = site.end - timedelta(days=2)
    train = data.until(cut)
    m = BilinearRecommender(dim=8).fit(train, s)
    test = build_examples(data, s, start=cut)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(test["label"].to_numpy(), m.predict_proba(data, test)) > 0.55


# -- the CLI ------------------------------------------------------------------------------------
def test_cli_trains_predicts_recommends_and_explains(site: DemoSite, tmp_path: Path) -> None:
    assert "bilinear" in MODELS and "twotower" in MODELS
    runner = CliRunner()
    db = tmp_path / "site.db"

    def run(*args: str) -> str:
        res = runner.invoke(app, ["--store", f"sqlite:///{db}", *args], env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output + str(res.exception)
        return res.output

    for kind, frame, name in (
        ("users", site.users, "u.csv"),
        ("items", site.items, "i.csv"),
        ("interactions", site.events, "e.parquet"),
    ):
        path = tmp_path / name
        frame.write_parquet(path) if name.endswith("parquet") else frame.write_csv(path)
        run("import", kind, str(path))
    assert "saved bilinear/" in run("train", "--model", "bilinear", "--param", "dim=6")
    pairs = tmp_path / "pairs.csv"
    pl.DataFrame({"user_id": ["u00001", "u00002"], "item_id": ["p00001", "p00002"]}).write_csv(
        pairs
    )
    out = run("predict", "--pairs", str(pairs))
    probs = pl.read_csv(out.encode())["probability"].to_numpy()
    assert ((probs > 0) & (probs < 1)).all()
    out = run("recommend", "u00001", "--k", "3", "--explain", "--format", "json")
    assert "dot product x.y" in out and "item bias" in out
