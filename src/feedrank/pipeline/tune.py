"""Choosing a model's parameters on validation, never on the test window.

The test split is made exactly as `train` makes it (same options, same seed); a validation split
is then carved from its training part by the same protocol (temporal: the last 20% of the
training time; last: each user's last training item; loo: one more training item per user, seed
+ 1000). Each trial fits the family with one point of its search space on the validation
split's training part and judges it on the validation hold-out (NDCG@k, HR@k as the tie-break).
The search is coordinate-wise, which suits a budget of tens of trials better than random points
of a grid of thousands: the defaults first, then one parameter at a time (in the space's order)
takes each of its values with the others at the best point so far, keeping the best. The
chosen parameters are stored in the registry (`_tuned/<kind>.json`) and `train` uses them,
saying so, unless parameters are given."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import polars as pl

from feedrank.evaluation.offline import evaluate
from feedrank.evaluation.splits import Split, last_n_split, loo_split, make_split
from feedrank.exceptions import ConfigError
from feedrank.models import make
from feedrank.pipeline.train import internal_split
from feedrank.settings import Settings
from feedrank.views.site import SiteData

# Each family's search space: a few values per parameter that matter, around the defaults, the
# parameters in the order the coordinate search visits them (the weightiest first).
SPACES: dict[str, dict[str, list[Any]]] = {
    "transition": {
        "steps": ["engaged", "seen"],
        "n_recent": [1, 3, 5, 10],
        "recency_decay": [0.3, 0.5, 0.8, 1.0],
        "window": [1, 2, 3, 5],
        "smoothing": [0.5, 2.0, 8.0],
        "step_decay": [0.3, 0.5, 0.8],
        "k_similar": [20, 50, 200],
    },
    "ease": {"l2": [10.0, 50.0, 100.0, 250.0, 500.0, 1000.0], "binary": [True, False]},
    "itemknn": {"k_neighbours": [10, 20, 50, 100, 200], "weighting": ["none", "tfidf", "bm25"]},
    "userknn": {"k_neighbours": [10, 20, 50, 100, 200], "weighting": ["none", "tfidf", "bm25"]},
    "als": {
        "factors": [16, 32, 64, 128],
        "regularization": [0.001, 0.01, 0.1],
        "alpha": [1.0, 5.0, 15.0, 40.0],
        "iterations": [15, 30],
    },
    "bpr": {
        "factors": [16, 32, 64],
        "learning_rate": [0.005, 0.01, 0.05],
        "regularization": [0.001, 0.01, 0.1],
        "iterations": [100, 300],
    },
    "popularity": {"half_life_days": [None, 1.0, 7.0, 30.0]},
    "freshness": {"half_life_days": [1.0, 7.0, 30.0]},
    "content": {"metadata_weight": [0.0, 0.25, 0.5, 0.75, 1.0], "min_df": [1, 2]},
    "hybrid": {"n_candidates": [20, 50, 100], "alpha": [1e-4, 1e-3, 1e-2]},
    "ltr": {
        "n_candidates": [20, 50, 100],
        "num_leaves": [7, 15, 31],
        "learning_rate": [0.02, 0.05, 0.1],
        "min_child_samples": [5, 20, 50],
    },
    "sasrec": {
        "dim": [32, 64],
        "n_blocks": [1, 2],
        "dropout": [0.1, 0.2, 0.5],
        "max_len": [20, 50, 100],
        "learning_rate": [5e-4, 1e-3, 3e-3],
    },
    "bilinear": {"vectors": ["auto", "cf"], "dim": [8, 16, 32], "sigma0": [0.3, 1.0, 3.0]},
    "twotower": {"vectors": ["auto", "cf"], "dim": [8, 16, 32], "sigma_tower": [0.03, 0.1, 0.3]},
    "glm": {
        "alpha": [1e-5, 1e-4, 1e-3, 1e-2],
        "l1_ratio": [0.0, 0.5],
        "affinity": [[], ["author"], ["author", "content_type"]],
    },
}


@dataclass
class TuneResult:
    kind: str
    params: dict[str, Any]  # the chosen point (only the tuned parameters and the fixed ones)
    trials: pl.DataFrame  # one row per trial: params, validation metrics, fit seconds
    validation: str  # the validation split's description
    test: str  # the test split's description (never looked at)
    objective: str

    def record(self) -> dict[str, Any]:
        """What the registry stores and `train` reports."""
        return {
            "kind": self.kind,
            "params": self.params,
            "objective": self.objective,
            "validation": self.validation,
            "test_split": self.test,
            "trials": self.trials.height,
        }


def validation_split(train: SiteData, settings: Settings, kind: str, seed: int) -> Split:
    """A hold-out inside a split's training part, by the split's own protocol."""
    if kind == "loo":
        val = loo_split(train, settings, seed + 1000)
    elif kind == "last":
        val = last_n_split(train, settings, 1)
    else:
        val = internal_split(train, settings, seed + 1000)
    return replace(val, description=f"inside the test split's training part, {val.description}")


def coordinate_search(
    kind: str,
    fixed: dict[str, Any],
    score: Callable[[dict[str, Any]], tuple[float, float]],
    trials: int,
    out_of_time: Callable[[], bool],
) -> list[tuple[dict[str, Any], tuple[float, float]]]:
    """Every point tried, in order, with its score (higher is better): the defaults, then each
    parameter's other values with the rest at the best point so far; no point twice."""
    space = {k: v for k, v in SPACES.get(kind, {}).items() if k not in fixed}
    defaults = make(kind).get_params()
    best = {**{n: defaults[n] for n in space}, **fixed}
    tried = [(best, score(best))]
    for name, values in space.items():
        for value in values:
            point = {**best, name: value}
            if any(point == p for p, _ in tried):
                continue
            if len(tried) >= trials or out_of_time():
                return tried
            tried.append((point, score(point)))
            if tried[-1][1] > max(s for _, s in tried[:-1]):
                best = point
    return tried


def tune(
    data: SiteData,
    settings: Settings,
    kind: str,
    trials: int = 20,
    time_budget: float | None = None,
    *,
    fixed: dict[str, Any] | None = None,
    split: str = "temporal",
    test_days: float | None = None,
    test_from: datetime | None = None,
    k: int = 10,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> TuneResult:
    if trials < 1:
        raise ConfigError(f"trials must be >= 1; got {trials}")
    fixed = dict(fixed or {})
    make(kind, **fixed)  # unknown kinds and parameters fail before any work
    held_out = test_days is not None or test_from is not None or split != "temporal"
    test = (
        make_split(data, settings, split, test_days, test_from, seed=seed)
        if held_out
        else internal_split(data, settings, seed)
    )
    val = validation_split(test.train, settings, test.kind, seed)
    ndcg, hr = f"NDCG@{k}", f"HR@{k}"
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()

    def score(point: dict[str, Any]) -> tuple[float, float]:
        if progress:
            progress(f"trial {len(rows) + 1}: {point}")
        try:
            ev = evaluate({kind: make(kind, **point)}, val, settings, k)
        except ConfigError as exc:  # a point the data cannot train (an attribute it lacks)
            rows.append(
                {"trial": len(rows) + 1, "params": _show(point), ndcg: None, hr: None}
                | {"fit_s": None, "note": f"cannot be trained here: {exc}"}
            )
            return (float("-inf"), float("-inf"))
        m = (ev.metric(kind, ndcg), ev.metric(kind, hr))
        rows.append(
            {"trial": len(rows) + 1, "params": _show(point), ndcg: m[0], hr: m[1]}
            | {"fit_s": round(ev.fit_seconds[kind], 2), "note": None}
        )
        return m

    def out_of_time() -> bool:
        return time_budget is not None and time.perf_counter() - start > time_budget

    tried = coordinate_search(kind, fixed, score, trials, out_of_time)
    chosen = max(range(len(tried)), key=lambda i: (tried[i][1], -i))
    if tried[chosen][1][0] == float("-inf"):
        raise ConfigError(f"no trial of '{kind}' could be trained on this data: {rows[0]['note']}")
    table = pl.DataFrame(rows, infer_schema_length=None).with_columns(
        chosen=pl.int_range(pl.len()) == chosen
    )
    return TuneResult(kind, tried[chosen][0], table, val.description, test.description, ndcg)


def _show(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())
