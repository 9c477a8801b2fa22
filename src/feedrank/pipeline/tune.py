"""Choosing a model's parameters on validation, never on the test window.

The test split is made exactly as `train` makes it (same options, same seed); a validation split
is then carved from its training part by the same protocol (temporal: the last 20% of the
training time; last: each user's last training item; loo: one more training item per user, seed
+ 1000). Each trial fits the family with one point of its search space on the validation
split's training part and judges it on the validation hold-out (NDCG@k, HR@k as the tie-break);
the defaults are always the first trial, the others are drawn without repetition from the grid
(seeded). The chosen parameters are stored in the registry (`_tuned/<kind>.json`) and `train`
uses them, saying so, unless parameters are given."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from feedrank.evaluation.offline import evaluate
from feedrank.evaluation.splits import Split, last_n_split, loo_split, make_split
from feedrank.exceptions import ConfigError
from feedrank.models import make
from feedrank.pipeline.train import internal_split
from feedrank.settings import Settings
from feedrank.views.site import SiteData

# Each family's search space: a few values per parameter that matter, around the defaults.
SPACES: dict[str, dict[str, list[Any]]] = {
    "transition": {
        "window": [1, 2, 3, 5],
        "step_decay": [0.3, 0.5, 0.8],
        "smoothing": [0.5, 2.0, 8.0],
        "n_recent": [1, 3, 5, 10],
        "recency_decay": [0.3, 0.5, 0.8, 1.0],
        "k_similar": [20, 50, 200],
        "steps": ["engaged", "seen"],
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
    "glm": {"alpha": [1e-5, 1e-4, 1e-3, 1e-2], "l1_ratio": [0.0, 0.5]},
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
    "bilinear": {"dim": [8, 16, 32], "sigma0": [0.3, 1.0, 3.0]},
    "twotower": {"dim": [8, 16, 32], "sigma_tower": [0.03, 0.1, 0.3]},
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
        return loo_split(train, settings, seed + 1000)
    if kind == "last":
        return last_n_split(train, settings, 1)
    return internal_split(train, settings, seed + 1000)


def grid_points(kind: str, trials: int, seed: int, fixed: dict[str, Any]) -> list[dict[str, Any]]:
    """The defaults first, then up to trials - 1 distinct points of the grid (seeded)."""
    space = {k: v for k, v in SPACES.get(kind, {}).items() if k not in fixed}
    if not space:
        return [dict(fixed)]
    names = sorted(space)
    grid = [
        dict(zip(names, vals, strict=True))
        for vals in itertools.product(*(space[n] for n in names))
    ]
    defaults = {n: make(kind).get_params()[n] for n in names}
    rng = np.random.default_rng(seed)
    others = [grid[i] for i in rng.permutation(len(grid)) if grid[i] != defaults]
    return [{**fixed, **p} for p in [defaults, *others][: max(1, trials)]]


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
    for i, point in enumerate(grid_points(kind, trials, seed, fixed)):
        if time_budget is not None and i > 0 and time.perf_counter() - start > time_budget:
            break
        if progress:
            progress(f"trial {i + 1}: {point}")
        ev = evaluate({kind: make(kind, **point)}, val, settings, k)
        rows.append(
            {
                "trial": i + 1,
                "params": point,
                ndcg: ev.metric(kind, ndcg),
                hr: ev.metric(kind, hr),
                "fit_s": round(ev.fit_seconds[kind], 2),
            }
        )
    best = max(rows, key=lambda r: (r[ndcg], r[hr], -r["trial"]))
    table = pl.DataFrame([{**r, "params": _show(r["params"]), "chosen": r is best} for r in rows])
    return TuneResult(kind, best["params"], table, val.description, test.description, ndcg)


def _show(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())
