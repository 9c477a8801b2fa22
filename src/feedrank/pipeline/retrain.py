"""Retraining with a champion and a challenger (seed 002: set the benchmark beforehand, test
the primary model against alternatives in parallel, watch for overfitting when retraining).

A challenger is fitted on the events before a held-out window; champion and challenger are
scored on that same window and on a benchmark set frozen beforehand (the held-out window of the
first retrain, kept as a file). The challenger is promoted only when it is not worse than the
champion beyond a tolerance on both, and refused, with the reason, when it overfits: a
train/validation gap beyond a threshold, or validation getting worse as training data grows."""

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
from feedrank.features.history import T
from feedrank.models.glm import GLMRecommender
from feedrank.pipeline.registry import ModelRecord, Registry
from feedrank.pipeline.train import split_examples

BENCHMARK_FILE = "benchmark.parquet"


@dataclass
class RetrainPolicy:
    test_days: float = 7.0
    tolerance: float = (
        0.005  # how much worse (AUC lower / log loss higher) still counts as "not worse"
    )
    max_gap: float = 0.05  # train AUC - validation AUC beyond this is overfitting
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Decision:
    promoted: bool
    reasons: list[str]
    challenger: ModelRecord
    champion: ModelRecord | None
    metrics: dict[str, dict[str, dict[str, float]]]  # evaluation set -> model -> metric -> value
    split: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "promoted": self.promoted,
            "reasons": self.reasons,
            "challenger": f"{self.challenger.name}/{self.challenger.version}",
            "champion": f"{self.champion.name}/{self.champion.version}" if self.champion else None,
            "metrics": self.metrics,
            "split": self.split,
        }


def _probabilities(model: Any, data: SiteData, rows: pl.DataFrame) -> np.ndarray:
    if not hasattr(model, "predict_rows"):
        raise FeedrankError(f"retrain compares probabilities; a '{model.kind}' model has none")
    model.serve_with(data)
    return np.asarray(model.predict_rows(rows))


def _not_worse(new: dict[str, float], old: dict[str, float], tol: float) -> bool:
    return new["roc_auc"] >= old["roc_auc"] - tol and new["log_loss"] <= old["log_loss"] + tol


def _overfitting(
    data: SiteData,
    settings: Settings,
    train_ex: pl.DataFrame,
    test_ex: pl.DataFrame,
    challenger: GLMRecommender,
    policy: RetrainPolicy,
    cut: datetime,
) -> list[str]:
    """Reasons the challenger overfits, if any."""
    reasons = []
    train_part = data.until(cut)
    y_train, y_test = train_ex["label"].to_numpy(), test_ex["label"].to_numpy()
    fit_auc = classification_metrics(y_train, _probabilities(challenger, train_part, train_ex))[
        "roc_auc"
    ]
    val = classification_metrics(y_test, _probabilities(challenger, data, test_ex))
    if fit_auc - val["roc_auc"] > policy.max_gap:
        reasons.append(
            f"train/validation AUC gap {fit_auc - val['roc_auc']:.3f} exceeds {policy.max_gap}"
        )
    # Learning curve: the same model fitted on the later half of the training window.
    half_start = train_ex[T].quantile(0.5, interpolation="nearest")
    half = GLMRecommender(**policy.params).fit(
        train_part, settings, examples=train_ex.filter(pl.col(T) >= half_start)
    )
    half_val = classification_metrics(y_test, _probabilities(half, data, test_ex))
    if val["log_loss"] > half_val["log_loss"] + policy.tolerance:
        reasons.append(
            f"validation log loss worsens as data grows ({half_val['log_loss']:.4f} with half the "
            f"training window, {val['log_loss']:.4f} with all of it)"
        )
    return reasons


def retrain(
    data: SiteData, settings: Settings, registry: Registry, policy: RetrainPolicy
) -> Decision:
    last = data.time_span[1]
    if last is None:
        raise FeedrankError("the store has no events to retrain on")
    cut = last - timedelta(days=policy.test_days)
    train_part, train_ex, test_ex = split_examples(data, settings, cut)
    challenger = GLMRecommender(**policy.params).fit(train_part, settings, examples=train_ex)
    champion_rec = registry.champion() or (registry.resolve(None) if registry.list() else None)
    champion = (
        registry.load(f"{champion_rec.name}/{champion_rec.version}")[0] if champion_rec else None
    )

    bench_path = registry.root / BENCHMARK_FILE
    if not bench_path.exists():
        registry.root.mkdir(parents=True, exist_ok=True)
        test_ex.write_parquet(bench_path)  # frozen now; every later retrain is judged on it too
    bench = pl.read_parquet(bench_path)
    bench_in_sample = bool(
        bench.filter(pl.col(T) < cut).height
    )  # the challenger trained on part of it

    sets = {"held-out window": test_ex, "benchmark": bench}
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    for name, rows in sets.items():
        y = rows["label"].to_numpy()
        metrics[name] = {
            "challenger": classification_metrics(y, _probabilities(challenger, data, rows))
        }
        if champion is not None:
            metrics[name]["champion"] = classification_metrics(
                y, _probabilities(champion, data, rows)
            )

    reasons = _overfitting(data, settings, train_ex, test_ex, challenger, policy, cut)
    if champion is not None:
        for name in sets:
            if name == "benchmark" and bench_in_sample:
                continue
            if not _not_worse(
                metrics[name]["challenger"], metrics[name]["champion"], policy.tolerance
            ):
                reasons.append(
                    f"worse than the champion on the {name} beyond tolerance {policy.tolerance}"
                )
    split = {
        "cut": cut.isoformat(),
        "train_examples": train_ex.height,
        "test_examples": test_ex.height,
        "benchmark_examples": bench.height,
        "benchmark_in_sample_for_challenger": bench_in_sample,
    }
    rec = registry.save(
        challenger.serve_with(data),
        "glm",
        {
            "split": split,
            "metrics": metrics,
            "retrain_reasons": reasons,
            "data_window": [str(data.time_span[0]), str(last)],
        },
    )
    promoted = not reasons
    if promoted:
        why = (
            "not worse than the champion within tolerance, no overfitting"
            if champion
            else "first champion"
        )
        registry.promote(f"{rec.name}/{rec.version}", f"retrain: {why}")
        reasons = [why]
    return Decision(promoted, reasons, rec, champion_rec, metrics, split)
