"""The model registry's champion, and retraining with a champion and a challenger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from feedrank.exceptions import FeedrankError, NotFoundError
from feedrank.models.glm import GLMRecommender
from feedrank.models.popularity import PopularityRecommender
from feedrank.pipeline.registry import Registry
from feedrank.pipeline.retrain import RetrainPolicy, retrain
from feedrank.settings import Settings
from feedrank.views.site import SiteData


def test_champion_promote_rollback_and_default_resolution(
    tmp_path: Path, small_data: SiteData
) -> None:
    reg = Registry(tmp_path)
    pop = reg.save(PopularityRecommender().fit(small_data, Settings()))
    pop2 = reg.save(PopularityRecommender(half_life_days=3).fit(small_data, Settings()))
    assert reg.champion() is None
    assert reg.resolve(None).version == pop2.version  # no champion: the newest
    reg.promote(f"popularity/{pop.version}")
    assert reg.resolve(None).version == pop.version  # the champion, though not the newest
    third = reg.save(PopularityRecommender().fit(small_data, Settings()))
    assert third.meta["parent"] == f"popularity/{pop.version}"  # trained while pop was champion
    reg.promote(f"popularity/{third.version}")
    assert reg.rollback().version == pop.version
    with pytest.raises(NotFoundError, match="no earlier champion"):
        reg.rollback()
    assert [h["model"] for h in reg.champion_history()] == [f"popularity/{pop.version}"]


def test_retrain_promotes_a_first_champion_then_refuses_a_worse_one(
    tmp_path: Path, small_data: SiteData
) -> None:
    reg = Registry(tmp_path)
    first = retrain(small_data, Settings(), reg, RetrainPolicy(test_days=3, max_gap=0.3))
    assert first.promoted and first.reasons == ["first champion"]
    assert reg.champion() is not None and reg.champion().version == first.challenger.version  # type: ignore[union-attr]
    # A heavily penalised challenger is clearly worse on the same window and on the benchmark.
    worse = retrain(
        small_data, Settings(), reg, RetrainPolicy(test_days=3, max_gap=0.3, params={"alpha": 0.5})
    )
    assert not worse.promoted
    assert any("worse than the champion on the held-out window" in r for r in worse.reasons)
    assert reg.champion().version == first.challenger.version  # type: ignore[union-attr]
    m = worse.metrics["held-out window"]
    assert m["challenger"]["roc_auc"] < m["champion"]["roc_auc"]
    # Both were judged on the same examples, and the benchmark was frozen at the first retrain.
    assert m["challenger"]["examples"] == m["champion"]["examples"]
    assert (tmp_path / "benchmark.parquet").exists()


def test_retrain_refuses_an_overfitting_challenger_with_the_reason(
    tmp_path: Path, small_data: SiteData
) -> None:
    # On the small site the GLM's train AUC exceeds its validation AUC by more than 0.05.
    decision = retrain(
        small_data, Settings(), Registry(tmp_path), RetrainPolicy(test_days=3, max_gap=0.05)
    )
    assert not decision.promoted
    assert any(r.startswith("train/validation AUC gap") for r in decision.reasons)


def test_unpenalised_glm_on_one_hots_says_why_it_fails(small_data: SiteData) -> None:
    with pytest.raises(FeedrankError, match="alpha > 0"):
        GLMRecommender(alpha=0.0).fit(small_data, Settings())


def test_models_cli(tmp_path: Path, small_data: SiteData) -> None:
    from feedrank.cli.main import app

    reg = Registry(tmp_path / "m")
    a = reg.save(PopularityRecommender().fit(small_data, Settings()))
    runner = CliRunner()
    base = ["--store", f"sqlite:///{tmp_path}/x.db", "--models-dir", str(tmp_path / "m")]
    out = runner.invoke(app, [*base, "models", "promote", f"popularity/{a.version}"])
    assert out.exit_code == 0 and "champion" in out.output
    listed = json.loads(runner.invoke(app, [*base, "models", "list", "--json"]).output)
    assert listed[0]["champion"] is True
    shown = json.loads(runner.invoke(app, [*base, "models", "show", "popularity"]).output)
    assert shown["kind"] == "popularity"
    bad = runner.invoke(app, [*base, "retrain", "--every", "soon"])
    assert bad.exit_code == 2 and "--every" in bad.output
