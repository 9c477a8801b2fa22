"""Tuning never looks at the test window: validation is carved from the training part, and the
search starts from the defaults."""

from __future__ import annotations

import polars as pl
import pytest

from feedrank.datasets.sequences import sequential_site
from feedrank.evaluation.splits import make_split
from feedrank.models import make
from feedrank.pipeline.tune import coordinate_search, tune, validation_split
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


def test_the_search_starts_from_the_defaults_moves_one_parameter_and_never_repeats() -> None:
    """A score that prefers n_recent=10 and then window=1: the search finds both, one
    coordinate at a time, holding a fixed parameter."""

    def score(p: dict[str, object]) -> tuple[float, float]:
        return (float(p["n_recent"] == 10) + float(p["window"] == 1), 0.0)

    tried = coordinate_search("transition", {"max_next": 50}, score, 100, lambda: False)
    points = [p for p, _ in tried]
    defaults = make("transition").get_params()
    assert {k: defaults[k] for k in points[0]} == {**points[0], "max_next": 200}
    assert all(p["max_next"] == 50 for p in points)
    assert len({tuple(sorted(p.items())) for p in points}) == len(points)
    best = max(tried, key=lambda t: t[1])[0]
    assert best["n_recent"] == 10 and best["window"] == 1
    assert sum(points[0][k] != points[1][k] for k in points[0]) == 1  # one coordinate moved
    assert len(coordinate_search("transition", {}, score, 5, lambda: False)) == 5


def test_tune_reports_every_trial_and_chooses_the_best() -> None:
    result = tune(DATA, SETTINGS, "transition", trials=3, split="loo")
    assert result.trials.height == 3 and result.trials["chosen"].sum() == 1
    best = result.trials.filter(pl.col("chosen"))
    assert best["NDCG@10"][0] == result.trials["NDCG@10"].max()
    assert "seed 1000" in result.validation and "seed 0" in result.test


def test_a_point_the_data_cannot_train_is_recorded_and_skipped() -> None:
    """The GLM's affinity over `author` on a catalogue without authors: that trial says why it
    could not be trained and is never chosen."""
    result = tune(
        DATA, SETTINGS, "glm", trials=4, split="loo", fixed={"alpha": 1e-3, "l1_ratio": 0.0}
    )
    failed = result.trials.filter(pl.col("note").is_not_null())
    assert failed.height == 2 and not failed["chosen"].any()
    assert failed["note"].str.contains("affinity must name item attributes").all()
    assert result.params["affinity"] == []
