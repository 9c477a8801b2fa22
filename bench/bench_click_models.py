"""Seed 003's click models beside the GLM, the hybrid and baselines, on held-out time:

1. the synthetic site (feedrank.datasets.demo.generate_site, defaults): fit on events before the
   last 7 days, measure on the impressions of those 7 days (features as of each impression), the
   split of feedrank.pipeline.train;
2. the Open Bandit Dataset (../shared/data/open-bandit): real impressions at positions 1-3,
   fit on the earlier 70% of the log by time, measure on the later 30%
   (feedrank.evaluation.open_bandit).

AUC, log loss, expected calibration error (ECE) per model. The hybrid ranks candidates (its
score is the probability of being a user's next engagement, not of a click on an impression),
so only its AUC is comparable; it is served as of the cut.

    .venv/bin/python bench/bench_click_models.py [--small] [--open-bandit DIR]
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl

from feedrank.datasets.demo import generate_site
from feedrank.evaluation.metrics import classification_metrics
from feedrank.evaluation.open_bandit import compare
from feedrank.features.examples import build_examples
from feedrank.models.bilinear import BilinearRecommender
from feedrank.models.hybrid import HybridRecommender
from feedrank.models.twotower import TwoTowerRecommender
from feedrank.pipeline.train import evaluate_split
from feedrank.settings import Settings

OPEN_BANDIT = Path(__file__).resolve().parents[2] / "shared" / "data" / "open-bandit"


def row(
    name: str, y: np.ndarray, p: np.ndarray, seconds: float, probabilities: bool = True
) -> dict:
    m = classification_metrics(y, p)
    return {
        "model": name,
        "roc_auc": round(m["roc_auc"], 4),
        "log_loss": round(m["log_loss"], 4) if probabilities else None,
        "ece": round(m["ece"], 4) if probabilities else None,
        "mean_p": round(float(np.mean(p)), 4) if probabilities else None,
        "fit_s": round(seconds, 1),
    }


def synthetic(small: bool) -> tuple[pl.DataFrame, dict]:
    site = generate_site(n_users=400, n_items=120, days=14) if small else generate_site()
    data, s = site.site_data(), Settings()
    cut = data.time_span[1] - timedelta(days=3 if small else 7)  # type: ignore[operator]
    train = data.until(cut)
    train_ex = build_examples(train, s, end=cut - timedelta(seconds=s.label_window_seconds))
    test_ex = build_examples(data, s, start=cut)
    y = test_ex["label"].to_numpy()
    out = []

    t = time.perf_counter()
    glm, split, _ = evaluate_split(data, s, cut, {})
    t_glm = time.perf_counter() - t
    out.append(row("glm", y, glm.predict_rows(test_ex), t_glm))
    pop = glm.groups_.item(test_ex.select("item_id", "timestamp"))["item_ctr"].to_numpy()
    out.append(row("popularity (item CTR)", y, pop, 0.0))

    models = {
        "bilinear": BilinearRecommender(),
        "bilinear (normalised, |Wy|=1)": BilinearRecommender(normalize=True),
        "twotower": TwoTowerRecommender(),
        "twotower (no position terms)": TwoTowerRecommender(use_position=False),
    }
    for name, model in models.items():
        t = time.perf_counter()
        model.fit(train, s, examples=train_ex)
        seconds = time.perf_counter() - t
        model.serve_with(data)  # each test row's user vector is read as of its own time
        out.append(row(name, y, model.predict_rows(test_ex), seconds))  # type: ignore[attr-defined]

    t = time.perf_counter()
    hybrid = HybridRecommender().fit(train, s)
    seconds = time.perf_counter() - t
    hybrid.serve_with(train, cut)
    users = test_ex["user_id"].unique().sort().to_list()
    items = test_ex["item_id"].unique().sort().to_list()
    S = hybrid.score(users, items)
    ui = {u: i for i, u in enumerate(users)}
    ii = {v: i for i, v in enumerate(items)}
    p = S[
        [ui[u] for u in test_ex["user_id"].to_list()],
        [ii[v] for v in test_ex["item_id"].to_list()],
    ]
    out.append(row("hybrid (served as of the cut)", y, p, seconds, probabilities=False))
    return pl.DataFrame(out), split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="a small site, one open-bandit log")
    parser.add_argument("--open-bandit", type=Path, default=OPEN_BANDIT)
    args = parser.parse_args()
    pl.Config.set_tbl_rows(30).set_tbl_cols(10).set_fmt_str_lengths(40).set_tbl_width_chars(160)

    table, split = synthetic(args.small)
    print("\n== synthetic site, held-out window ==")
    print(
        f"cut {split['cut']}: {split['train_examples']} training impressions, "
        f"{split['test_examples']} held-out impressions"
    )
    print(table)

    if args.open_bandit.is_dir():
        kw = {"policies": ("random",), "campaigns": ("men",)} if args.small else {}
        t = time.perf_counter()
        ob, ob_split = compare(args.open_bandit, **kw)  # type: ignore[arg-type]
        print("\n== open bandit dataset, later 30% of the log held out ==")
        print(ob_split)
        print(ob.with_columns(pl.col(pl.Float64).round(4)))
        print(f"({time.perf_counter() - t:.0f} s)")
    else:
        print(f"\n(open bandit data not found at {args.open_bandit}: skipped)")


if __name__ == "__main__":
    main()
