"""Training with an honest evaluation, the same way for every model: fit on a split's training
data, judge on its held-out part beside popularity (ranking metrics at k for all; AUC, log loss
and calibration where the model predicts probabilities), and keep the fallback the service
needs for users the model knows nothing about.

- With a held-out window (test_from / test_days) or a --split other than temporal, the model
  returned is the one fitted on the split's training data, so it is the one judged.
- Without one, metrics come from an internal split (the last 20% of event time; a seeded
  leave-one-out when the events carry no time spread) and the returned model is refitted on
  everything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from feedrank.evaluation.offline import Evaluation, evaluate, user_segments
from feedrank.evaluation.splits import Split, loo_split, make_split, temporal_split
from feedrank.exceptions import FeedrankError
from feedrank.models import make
from feedrank.models.base import Recommender
from feedrank.models.popularity import PopularityRecommender
from feedrank.serving.service import fallback_model
from feedrank.settings import Settings
from feedrank.views.site import SiteData

VALIDATION_SHARE = 0.2
SEGMENTS = ("gender", "age_band", "country")  # user attributes the diagnostics segment by


@dataclass
class TrainResult:
    model: Recommender
    fallback: PopularityRecommender  # fitted on the same data as `model`
    evaluation: Evaluation
    split: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def metrics_frame(self) -> pl.DataFrame:
        return self.evaluation.table()

    def metrics(self) -> dict[str, dict[str, Any]]:
        """model -> metric -> value (what the registry keeps)."""
        table = self.metrics_frame()
        return {
            row["model"]: {k: v for k, v in row.items() if k != "model" and v is not None}
            for row in table.to_dicts()
        }

    def diagnostics(self, settings: Settings) -> dict[str, Any]:
        """What the dashboard shows beside the metrics (kept in the registry's meta): the
        held-out metrics per user segment (new vs long-term, age band, gender, country: those
        the users have) and the reliability curve of each model that predicts probabilities."""
        ev = self.evaluation
        users = ev.split.train.users
        wanted = ["tenure"] + [
            s
            for s in SEGMENTS
            if s in users.columns or (s == "age_band" and ("age" in users.columns))
        ]
        try:
            table = ev.by_segment(user_segments(ev.split, settings, wanted))
        except FeedrankError:
            table = pl.DataFrame()
        # One key of its own: a model's saved meta has keys of its own (bilinear: "calibration").
        return {
            "diagnostics": {
                "segments": _finite(table.to_dicts()),
                "calibration": ev.calibration,
            }
        }


def require_engagements(data: SiteData, settings: Settings) -> None:
    """Training on data where nothing counts as an engagement would serve popularity to
    everyone in silence: say so, naming the types found and the setting to change."""
    if data.events.is_empty():
        raise FeedrankError(
            "the store has no events: import them first (`feedrank import interactions FILE`)"
        )
    if data.engagements(settings).is_empty():
        types = data.events.group_by("type").len().sort("len", descending=True)
        found = ", ".join(f"{t} ({n})" for t, n in types.iter_rows())
        raise FeedrankError(
            f"no stored event counts as an engagement under the settings; types found: {found}. "
            "Give them a weight > 0 (type_weights) and list them in engagement_types, or lower "
            "rating_threshold, in a settings file: `feedrank settings import FILE.toml`"
        )


def internal_split(data: SiteData, settings: Settings, seed: int = 0) -> Split:
    """The last 20% of event time held out; a seeded leave-one-out when time has no spread."""
    times = data.events["timestamp"].dt.epoch("us").to_numpy()
    cut_us = int(np.quantile(times, 1 - VALIDATION_SHARE))
    if cut_us <= int(times.min()):
        return loo_split(data, settings, seed)
    cut: datetime = pl.Series([cut_us]).cast(pl.Datetime("us", "UTC"))[0]
    try:
        return temporal_split(data, settings, cut)
    except FeedrankError:
        return loo_split(data, settings, seed)


def train(
    data: SiteData,
    settings: Settings,
    kind: str = "glm",
    params: dict[str, Any] | None = None,
    *,
    split: str = "temporal",
    test_days: float | None = None,
    test_from: datetime | None = None,
    k: int = 10,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> TrainResult:
    require_engagements(data, settings)
    params = params or {}
    make(kind, **params)  # unknown kinds and parameters fail before any work
    held_out = test_days is not None or test_from is not None or split != "temporal"
    sp = (
        make_split(data, settings, split, test_days, test_from, seed=seed)
        if held_out
        else internal_split(data, settings, seed)
    )
    models: dict[str, Recommender] = {kind: make(kind, **params)}
    if kind != "popularity":
        models["popularity"] = make("popularity")
    ev = evaluate(models, sp, settings, k, progress)
    info: dict[str, Any] = {
        "kind": sp.kind,
        "description": sp.description,
        "at": sp.at.isoformat(),
        "k": k,
        "test_users": len(sp.users),
        "test_examples": sp.examples.height if sp.examples is not None else 0,
    }
    if held_out:
        model, fit_data = ev.models[kind], sp.train
        info["model"] = "fitted on the training part of the split (the one judged)"
    else:
        if progress:
            progress(f"{kind} (refit on all events)")
        model, fit_data = make(kind, **params).fit(data, settings), data
        info["model"] = "judged on an internal split, then refitted on all events"
    return TrainResult(model, fallback_model(fit_data, settings), ev, info)


def _finite(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """NaN is not JSON: an undefined metric is stored as null."""
    return [
        {k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in rows
    ]
