"""Training with an honest evaluation: fit on events before a cut, measure on the examples
after it (features of each still strictly point in time), beside a popularity baseline.

- With a held-out window (test_from / test_days) the returned model is the one fitted before
  the cut, so it can be judged on that window.
- Without one, metrics come from an internal split (the last 20% of example time) and the
  returned model is refitted on everything."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from feedrank.config import Settings
from feedrank.data.site import SiteData
from feedrank.evaluation.metrics import classification_metrics
from feedrank.exceptions import FeedrankError
from feedrank.features.examples import build_examples
from feedrank.features.history import T
from feedrank.models.glm import GLMRecommender

VALIDATION_SHARE = 0.2


@dataclass
class TrainResult:
    model: GLMRecommender
    split: dict[str, Any]
    metrics: dict[str, dict[str, float]]  # model name -> metric -> value
    extra: dict[str, Any] = field(default_factory=dict)

    def metrics_frame(self) -> pl.DataFrame:
        names = list(self.metrics)
        keys = list(next(iter(self.metrics.values())))
        return pl.DataFrame(
            {"metric": keys, **{n: [self.metrics[n][k] for k in keys] for n in names}}
        )


def _cut(data: SiteData, test_from: datetime | None, test_days: float | None) -> datetime | None:
    if test_from is not None:
        return test_from
    if test_days is not None:
        last = data.time_span[1]
        if last is None:
            raise FeedrankError("the store has no events to split")
        return last - timedelta(days=test_days)
    return None


def split_examples(
    data: SiteData, settings: Settings, cut: datetime
) -> tuple[SiteData, pl.DataFrame, pl.DataFrame]:
    """Training data and examples before `cut`, evaluation examples at or after it."""
    train = data.until(cut)
    window = timedelta(seconds=settings.label_window_seconds)
    # Examples whose label window crosses the cut would be labelled with unseen events: drop them.
    train_ex = build_examples(train, settings, end=cut - window)
    test_ex = build_examples(data, settings, start=cut)
    if train_ex.is_empty() or test_ex.is_empty():
        raise FeedrankError(
            f"the split at {cut.isoformat()} leaves {train_ex.height} training and {test_ex.height} "
            "test examples; both must be non-empty (choose another --test-from / --test-days)"
        )
    return train, train_ex, test_ex


def evaluate_split(
    data: SiteData, settings: Settings, cut: datetime, params: dict[str, Any]
) -> tuple[GLMRecommender, dict[str, Any], dict[str, dict[str, float]]]:
    """Fit on events before `cut`, measure on examples at or after it."""
    train, train_ex, test_ex = split_examples(data, settings, cut)
    model = GLMRecommender(**params).fit(train, settings, examples=train_ex)
    model.serve_with(data)  # features of test rows read the events before each row
    p = model.predict_rows(test_ex)
    baseline = model.groups_.item(test_ex.select("item_id", T))["item_ctr"].to_numpy()
    y = test_ex["label"].to_numpy()
    metrics = {
        "glm": classification_metrics(y, p),
        "popularity": classification_metrics(y, baseline),
    }
    split = {
        "cut": cut.isoformat(),
        "train_examples": train_ex.height,
        "test_examples": test_ex.height,
        "train_window": [str(train.time_span[0]), cut.isoformat()],
        "test_window": [cut.isoformat(), str(data.time_span[1])],
    }
    return model, split, metrics


def train_glm(
    data: SiteData,
    settings: Settings,
    test_from: datetime | None = None,
    test_days: float | None = None,
    **params: Any,
) -> TrainResult:
    cut = _cut(data, test_from, test_days)
    if cut is not None:
        model, split, metrics = evaluate_split(data, settings, cut, params)
        split["kind"] = "held-out window (model fitted before it)"
        return TrainResult(model, split, metrics)
    examples = build_examples(data, settings)
    if examples.is_empty():
        raise FeedrankError("no training examples: import interactions first")
    times = examples[T].dt.epoch("us").to_numpy()
    inner_cut_us = int(np.quantile(times, 1 - VALIDATION_SHARE))
    inner_cut = pl.Series([inner_cut_us]).cast(pl.Datetime("us", "UTC"))[0]
    _, split, metrics = evaluate_split(data, settings, inner_cut, params)
    split["kind"] = (
        "internal time-based validation (last 20% of example time); final model refitted on all events"
    )
    model = GLMRecommender(**params).fit(data, settings, examples=examples)
    return TrainResult(model, split, metrics)
