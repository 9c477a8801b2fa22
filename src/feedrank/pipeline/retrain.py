"""Retraining with a champion and a challenger, for any model family (seed 002: set the
benchmark beforehand, test the primary model against alternatives in parallel, watch for
overfitting when retraining).

A challenger is fitted on the events before a held-out window; champion and challenger are
judged on that same window and on a benchmark frozen beforehand (the held-out window of the
first retrain, kept as files beside the models). The yardstick is AUC and log loss when both
models predict probabilities and the window has labelled examples, else NDCG and HR at k. The
challenger is promoted only when it is not worse than the champion beyond a tolerance on both
sets, and refused, with the reason, when it overfits: a train/validation AUC gap beyond a
threshold (probability models), or held-out quality that gets worse as the training window
grows (every model: the same family fitted on the later half of the window is compared)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from feedrank.evaluation.metrics import classification_metrics
from feedrank.evaluation.offline import mean_metric, rank_users
from feedrank.evaluation.splits import Split, temporal_split
from feedrank.features.examples import build_examples
from feedrank.features.history import T
from feedrank.models import make
from feedrank.models.base import Recommender
from feedrank.pipeline.registry import ModelRecord, Registry
from feedrank.pipeline.train import require_engagements
from feedrank.serving.service import fallback_model
from feedrank.settings import Settings
from feedrank.views.site import SiteData

BENCHMARK_PAIRS = "benchmark.parquet"
BENCHMARK_EXAMPLES = "benchmark_examples.parquet"
BENCHMARK_META = "benchmark.json"


@dataclass
class RetrainPolicy:
    test_days: float = 7.0
    tolerance: float = 0.005  # how much worse still counts as "not worse"
    max_gap: float = 0.05  # train AUC - validation AUC beyond this is overfitting
    kind: str | None = None  # the challenger's family (default: the champion's, else glm)
    params: dict[str, Any] = field(default_factory=dict)
    k: int = 10


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


def judge(model: Recommender, split: Split, settings: Settings, k: int) -> dict[str, float]:
    """Ranking metrics at k on the split's held-out engagements, and probability metrics on its
    labelled examples when the model gives probabilities."""
    per_user = rank_users(model.at(split.view(settings)), split, k).per_user
    out = {c: mean_metric(per_user[c].to_numpy()) for c in (f"HR@{k}", f"NDCG@{k}", "MRR")}
    if model.probabilistic and split.examples is not None:
        y = split.examples["label"].to_numpy()
        out.update(classification_metrics(y, model.predict_proba(split.data, split.examples)))
    return out


def _yardstick(new: dict[str, float], old: dict[str, float], k: int) -> list[tuple[str, bool]]:
    """(metric, higher is better) pairs both models have: probabilities first."""
    if "roc_auc" in new and "roc_auc" in old:
        return [("roc_auc", True), ("log_loss", False)]
    return [(f"NDCG@{k}", True), (f"HR@{k}", True)]


def _not_worse(new: dict[str, float], old: dict[str, float], tol: float, k: int) -> bool:
    return all(
        (new[m] >= old[m] - tol) if up else (new[m] <= old[m] + tol)
        for m, up in _yardstick(new, old, k)
    )


def _benchmark(registry: Registry, data: SiteData, settings: Settings, split: Split) -> Split:
    """The benchmark split: frozen at the first retrain (its held-out pairs, examples and cut),
    read back at every later one."""
    root = registry.root
    meta_path = root / BENCHMARK_META
    if not meta_path.exists():
        root.mkdir(parents=True, exist_ok=True)
        split.test.write_parquet(root / BENCHMARK_PAIRS)
        if split.examples is not None:
            split.examples.write_parquet(root / BENCHMARK_EXAMPLES)
        meta_path.write_text(json.dumps({"cut": split.at.isoformat()}))
    cut = datetime.fromisoformat(json.loads(meta_path.read_text())["cut"])
    examples = (
        pl.read_parquet(root / BENCHMARK_EXAMPLES) if (root / BENCHMARK_EXAMPLES).exists() else None
    )
    test = pl.read_parquet(root / BENCHMARK_PAIRS)
    return Split(
        "benchmark",
        data,
        data.until(cut),
        test,
        cut,
        f"benchmark frozen at the first retrain: {test.height} held-out engagements after {cut.isoformat()}",
        examples,
    )


def _overfitting(
    kind: str,
    policy: RetrainPolicy,
    settings: Settings,
    split: Split,
    challenger: Recommender,
    held: dict[str, float],
) -> list[str]:
    reasons = []
    if challenger.probabilistic and "roc_auc" in held:
        train_ex = build_examples(split.train, settings)
        if train_ex.height and train_ex["label"].n_unique() == 2:
            p = challenger.predict_proba(split.train, train_ex)
            fit_auc = classification_metrics(train_ex["label"].to_numpy(), p)["roc_auc"]
            if fit_auc - held["roc_auc"] > policy.max_gap:
                reasons.append(
                    f"train/validation AUC gap {fit_auc - held['roc_auc']:.3f} exceeds {policy.max_gap}"
                )
    # Learning curve: the same family fitted on the later half of the training window.
    times = split.train.events[T]
    mid = times.quantile(0.5, interpolation="nearest")
    later = split.train.events.filter(pl.col(T) >= mid)
    half_data = SiteData(split.train.users, split.train.items, later, split.train.end)
    if half_data.engagements(settings).height:
        half = make(kind, **policy.params).fit(half_data, settings)
        half_held = judge(half, split, settings, policy.k)
        for metric, up in _yardstick(held, half_held, policy.k):
            worse = (
                held[metric] < half_held[metric] - policy.tolerance
                if up
                else held[metric] > half_held[metric] + policy.tolerance
            )
            if worse:
                reasons.append(
                    f"held-out {metric} gets worse as the training window grows "
                    f"({half_held[metric]:.4f} with its later half, {held[metric]:.4f} with all of it)"
                )
                break
    return reasons


def retrain(
    data: SiteData, settings: Settings, registry: Registry, policy: RetrainPolicy
) -> Decision:
    require_engagements(data, settings)
    last = data.time_span[1]
    assert last is not None
    champion_rec = registry.champion() or (registry.resolve(None) if registry.list() else None)
    kind = policy.kind or (champion_rec.kind if champion_rec else "glm")
    cut = last - timedelta(days=policy.test_days)
    split = temporal_split(data, settings, cut)
    challenger = make(kind, **policy.params).fit(split.train, settings)
    champion = (
        registry.load(f"{champion_rec.name}/{champion_rec.version}")[0] if champion_rec else None
    )
    notes = []
    end = champion.window_[1] if champion is not None else None
    if champion is not None and end is not None and datetime.fromisoformat(end) >= cut:
        # The saved champion has seen the held-out window: its configuration, refitted before
        # the cut, is what competes.
        champion = make(champion.kind, **champion.get_params()).fit(split.train, settings)
        notes.append(
            "the champion's configuration was refitted before the cut (the saved one saw the window)"
        )
    bench = _benchmark(registry, data, settings, split)
    # A challenger fitted on the benchmark's window has seen its answers: not a judge then.
    bench_in_sample = bench.at < cut

    sets = {"held-out window": split, "benchmark": bench}
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    for name, sp in sets.items():
        metrics[name] = {"challenger": judge(challenger, sp, settings, policy.k)}
        if champion is not None:
            metrics[name]["champion"] = judge(champion, sp, settings, policy.k)

    held = metrics["held-out window"]["challenger"]
    reasons = _overfitting(kind, policy, settings, split, challenger, held)
    if champion is not None:
        for name in sets:
            if name == "benchmark" and bench_in_sample:
                continue
            if not _not_worse(
                metrics[name]["challenger"], metrics[name]["champion"], policy.tolerance, policy.k
            ):
                reasons.append(
                    f"worse than the champion on the {name} beyond tolerance {policy.tolerance}"
                )
    info = {
        "cut": cut.isoformat(),
        "description": split.description,
        "test_users": len(split.users),
        "test_examples": split.examples.height if split.examples is not None else 0,
        "benchmark_pairs": bench.test.height,
        "benchmark_in_sample_for_challenger": bench_in_sample,
        "notes": notes,
    }
    rec = registry.save(
        challenger,
        kind,
        {"split": info, "metrics": _plain(metrics), "retrain_reasons": reasons},
        fallback=fallback_model(split.train, settings),
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
    return Decision(promoted, reasons, rec, champion_rec, metrics, info)


def _plain(metrics: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    return {
        s: {
            m: {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in d.items()}
            for m, d in models.items()
        }
        for s, models in metrics.items()
    }
