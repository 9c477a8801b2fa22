"""Model 2 (two towers, context terms, position debiasing) on a synthetic site whose logging
policy puts one content type on top: the learned position effects must follow the true ones,
and holding position at the reference must rank closer to the true relevance than the same
model without position terms. Trained with torch; served (and loaded) without it."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr
from typer.testing import CliRunner

from feedrank.cli.main import app
from feedrank.datasets.demo import DemoSite, age_band, generate_site, position_effect
from feedrank.exceptions import MissingExtraError
from feedrank.features.history import T
from feedrank.models.bilinear import sigmoid
from feedrank.models.twotower import TwoTowerRecommender, TwoTowerScorer, unit_rows
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import FrameView

SLATE = 8
PROMOTED = "podcast"  # the logging policy's favourite: shown first whatever the user likes


def biased_site(site: DemoSite, seed: int = 0) -> SiteData:
    """The demo site's impressions re-shown by a biased policy (promoted content type first,
    the rest in random order) and their clicks redrawn from the true model with the new
    positions: position now correlates with an item attribute, as on a real site."""
    rng = np.random.default_rng(seed)
    imp = site.impression_truth().with_columns(
        __r=pl.Series(rng.random(site.impression_truth().height)),
        __promoted=(pl.col("content_type") == PROMOTED),
    )
    imp = imp.sort(
        "user_id", T, pl.col("__promoted"), "__r", descending=[False, False, True, False]
    )
    imp = imp.with_columns(new_pos=pl.int_range(pl.len()).over("user_id", T).cast(pl.Int32) + 1)
    effects = {p: position_effect(p) for p in range(1, SLATE + 1)}
    shift = pl.col("new_pos").replace_strict(effects, return_dtype=pl.Float64) - pl.col(
        "position"
    ).replace_strict(effects, return_dtype=pl.Float64)
    z = imp.select(pl.col("z") + shift).to_series().to_numpy()
    imp = imp.with_columns(clicked=pl.Series(rng.random(len(z)) < sigmoid(z)))
    devices = site.events.filter(pl.col("type") == "impression").select("event_id", "device")
    shown = imp.join(devices, on="event_id").select(
        "event_id", "user_id", "item_id", pl.lit("impression").alias("type"), T,
        pl.lit(1.0).alias("value"), pl.col("new_pos").alias("position"), "device", "clicked",
    )  # fmt: skip
    clicks = shown.filter(pl.col("clicked")).with_columns(
        pl.col("event_id") + "c", type=pl.lit("click"), timestamp=pl.col(T) + timedelta(seconds=5)
    )
    events = (
        pl.concat([shown, clicks]).drop("clicked").with_columns(context=pl.lit(None, pl.String))
    )
    return SiteData(site.users, site.items, events.sort(T))


def true_relevance(site: DemoSite, users: list[str], items: pl.DataFrame) -> np.ndarray:
    """The true logit of every (user, item) at the end of the site, position held at 1."""
    u = site.users.filter(pl.col("user_id").is_in(users)).with_columns(age_band(pl.col("age")))
    pairs = u.join(items, how="cross").join(site.truth.user_taste, on="user_id")
    taste = pairs.select(
        pl.coalesce(
            pl.when(pl.col("content_type") == c).then(pl.col(c))
            for c in ("article", "video", "image", "podcast")
        )
    ).to_series()
    age = (site.end - pairs["created_at"]).dt.total_seconds() / 86400
    z = site.truth.logit(
        gender=pairs["gender"], content_type=pairs["content_type"],
        age_band=pairs["age_band"].cast(pl.String), lang=pairs["lang"], taste=taste,
        position=1, item_age_days=age, author=pairs["author"],
    )  # fmt: skip
    order = {v: i for i, v in enumerate(users)}
    rows = np.array([order[x] for x in pairs["user_id"].to_list()])
    out = np.empty((len(users), items.height))
    cols = np.tile(np.arange(items.height), len(users))
    out[rows, cols] = z
    return out


def with_history(view: FrameView) -> list[str]:
    """Users who engaged before the serving time (the others have a zero user tower)."""
    ev = view.histories(view.active_users()).filter(pl.col("type") == "click")
    return ev["user_id"].unique().sort().to_list()


@pytest.fixture(scope="module")
def view(data: SiteData) -> FrameView:
    return FrameView(data, Settings())


@pytest.fixture(scope="module")
def site() -> DemoSite:
    return generate_site(n_users=500, n_items=100, days=14, seed=5, slate_size=SLATE)


@pytest.fixture(scope="module")
def data(site: DemoSite) -> SiteData:
    return biased_site(site)


@pytest.fixture(scope="module")
def models(data: SiteData) -> dict[str, TwoTowerRecommender]:
    pytest.importorskip("torch", reason="the twotower model trains with the `neural` extra")
    params = {"reduction": "none", "max_iter": 100}
    return {
        "debiased": TwoTowerRecommender(**params).fit(data, Settings()),
        "no_position": TwoTowerRecommender(use_position=False, **params).fit(data, Settings()),
    }


def test_learned_position_effects_follow_the_true_ones(
    models: dict[str, TwoTowerRecommender],
) -> None:
    learned = models["debiased"].position_effects()
    got = np.array([learned[p] for p in range(1, SLATE + 1)])
    want = np.array([position_effect(p) for p in range(1, SLATE + 1)])
    assert np.corrcoef(got, want)[0, 1] > 0.9
    # omitted user x item terms attenuate logistic effects a little: a tolerance, not equality
    assert np.abs(got - want).max() < 0.35
    assert got[7] < got[3] < got[1] < 0.0
    assert all(v == 0.0 for v in models["no_position"].position_effects().values())


def test_debiased_ranking_agrees_better_with_true_relevance(
    site: DemoSite, models: dict[str, TwoTowerRecommender], view: FrameView
) -> None:
    users = with_history(view)[:150]
    items = site.items.filter(pl.col("created_at") < site.end)
    truth = true_relevance(site, users, items)
    agreement = {}
    for name, m in models.items():
        S = m.at(view).score(users, items["item_id"].to_list())
        agreement[name] = np.mean([spearmanr(S[u], truth[u]).statistic for u in range(len(users))])
    assert agreement["debiased"] > agreement["no_position"] + 0.02, agreement


def test_towers_are_unit_norm_and_explain_adds_up(
    models: dict[str, TwoTowerRecommender], data: SiteData, view: FrameView
) -> None:
    sc = models["debiased"].at(view)
    assert isinstance(sc, TwoTowerScorer)
    users = with_history(view)[:5]
    H = sc.user_towers(users, view.histories(users))
    np.testing.assert_allclose(np.linalg.norm(H, axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(sc.items()[2], axis=1), 1.0, atol=1e-9)
    item = data.items["item_id"][0]
    parts = sc.explain_pairs([users[0]], [item], top=10)[0]
    assert [p["feature"] for p in parts] == [
        "dot product h_u.h_i", "position", "hour", "weekday", "device", "intercept",
    ]  # fmt: skip
    logit = sum(p["contribution"] for p in parts)
    assert sigmoid(np.array([logit]))[0] == pytest.approx(sc.score([users[0]], [item])[0, 0])


def test_debiased_rows_hold_the_position_at_the_reference(
    models: dict[str, TwoTowerRecommender], data: SiteData
) -> None:
    m = models["debiased"]
    rows = data.events.filter(pl.col("type") == "impression").tail(50)
    at_8 = rows.with_columns(position=pl.lit(8, pl.Int32))
    p8, debiased = m.predict_proba(data, at_8), m.predict_proba(data, at_8, debias=True)
    assert (p8 < debiased).all()
    np.testing.assert_allclose(debiased, m.predict_proba(data, rows, debias=True))


def test_a_saved_model_serves_without_torch(
    models: dict[str, TwoTowerRecommender],
    data: SiteData,
    view: FrameView,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = models["debiased"]
    path = m.save(tmp_path / "tt")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    loaded = TwoTowerRecommender.load(path).at(view)
    users, items = data.users["user_id"].to_list()[:4], data.items["item_id"].to_list()
    np.testing.assert_allclose(loaded.score(users, items), m.at(view).score(users, items))
    with pytest.raises(MissingExtraError, match=r"feedrank\[neural\]"):
        TwoTowerRecommender().fit(data, Settings())


def test_unit_rows_keeps_zero_rows() -> None:
    out = unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def test_cli_trains_and_explains_twotower(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the twotower model trains with the `neural` extra")
    site = generate_site(n_users=150, n_items=60, days=6, seed=2)
    runner = CliRunner()
    db = tmp_path / "site.db"

    def run(*args: str) -> str:
        res = runner.invoke(app, ["--store", f"sqlite:///{db}", *args], env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output + str(res.exception)
        return res.output

    site.users.write_csv(tmp_path / "u.csv")
    site.items.write_csv(tmp_path / "i.csv")
    site.events.write_parquet(tmp_path / "e.parquet")
    for kind, name in (("users", "u.csv"), ("items", "i.csv"), ("interactions", "e.parquet")):
        run("import", kind, str(tmp_path / name))
    out = run("train", "--model", "twotower", "--param", "dim=6", "--param", "max_iter=50")
    assert "saved twotower/" in out
    pairs = tmp_path / "pairs.csv"
    pl.DataFrame(
        {"user_id": ["u00001"], "item_id": ["p00001"], "position": [3], "device": ["mobile"]}
    ).write_csv(pairs)
    probs = pl.read_csv(run("predict", "--pairs", str(pairs)).encode())["probability"]
    assert 0 < probs[0] < 1
    out = run("recommend", "u00001", "--k", "3", "--explain", "--format", "json")
    assert "dot product h_u.h_i" in out and '"position"' in out
