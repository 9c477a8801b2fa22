"""Tuning never looks at the test window: validation is carved from the training part, and the
search starts from the defaults."""

from __future__ import annotations

import polars as pl
import pytest

from feedrank.datasets.sequences import sequential_site
from feedrank.evaluation.splits import make_split
from feedrank.models import make
from feedrank.pipeline.tune import grid_points, tune, validation_split
from feedrank.settings import Settings

SETTINGS = Settings(rating_threshold=1.0)
DATA = sequential_site(n_users=120, n_items=25, length=6, seed=1).data


@pytest.mark.parametrize("kind", ["loo", "last", "temporal"])
def test_validation_is_carved_from_the_training_part(kind: str) -> None:
    test = make_split(DATA, SETTINGS, kind, test_days=0.05 if kind == "temporal" else None)
    val = validation_split(test.train, SETTINGS, kind, seed=0)
    assert val.data is test.train  # everything validation sees is training data
    pairs = ["user_id", "item_id"]
    assert val.data.events.join(test.test, on=pairs).is_empty()
    if kind == "temporal":
        assert val.at < test.at
    else:
        assert val.test.join(test.test, on=pairs).is_empty()


def test_the_search_starts_from_the_defaults_and_never_repeats() -> None:
    points = grid_points("transition", 6, seed=0, fixed={"max_next": 50})
    defaults = make("transition").get_params()
    assert {k: defaults[k] for k in points[0] if k != "max_next"} == {
        k: v for k, v in points[0].items() if k != "max_next"
    }
    assert all(p["max_next"] == 50 for p in points)
    assert len({tuple(sorted(p.items())) for p in points}) == 6
    assert grid_points("transition", 6, seed=0, fixed={}) == grid_points("transition", 6, 0, {})


def test_tune_reports_every_trial_and_chooses_the_best() -> None:
    result = tune(DATA, SETTINGS, "transition", trials=3, split="loo")
    assert result.trials.height == 3 and result.trials["chosen"].sum() == 1
    best = result.trials.filter(pl.col("chosen"))
    assert best["NDCG@10"][0] == result.trials["NDCG@10"].max()
    assert "seed 1000" in result.validation and "seed 0" in result.test
