"""Seed 003's click models beside the GLM, the hybrid and baselines, on held-out time:

1. the synthetic site (feedrank.datasets.demo.generate_site, defaults): one temporal split
   (feedrank.evaluation.splits.temporal_split through feedrank.pipeline.train.train(data,
   settings, "glm", test_days=7)): every model is fitted on the events before the last 7 days
   and judged on the impressions of those 7 days (features as of each impression) — the GLM and
   popularity by `train`, the others by `feedrank.evaluation.offline.evaluate` on the very same
   Split object, the one evaluation harness;
2. the Open Bandit Dataset (../shared/data/open-bandit): real impressions at positions 1-3,
   fit on the earlier 70% of the log by time, measure on the later 30%
   (feedrank.evaluation.open_bandit).

AUC, log loss, expected calibration error (ECE) and mean prediction per model on the held-out
impressions; the harness's ranking metrics (HR@10, NDCG@10, MRR over the full catalogue, each
user's new engagements after the cut, served as of the cut through the split's view) beside
them; fit seconds (`fit` alone: the old bench's GLM time also held its predictions). Checked:
the harness's AUC, log loss and ECE of every probabilistic model equal a direct
`model.predict_proba(split.data, split.examples)` scored here.

Rows: `popularity` is the harness's baseline (ranking by share of weighted engagement before
the cut; as a probability, each item's positive rate among the training impressions); `item CTR as of each impression` is
the old bench's baseline, the GLM's smoothed `item_ctr` feature read strictly before each
held-out impression (FeatureGroups over a History of all events). The hybrid ranks candidates
(its score is the probability of being a user's next engagement, not of a click on an
impression), so only its AUC is comparable: scores of `model.at(split.view(settings))`, served
as of the cut.

    .venv/bin/python bench/bench_click_models.py [--small] [--open-bandit DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl
from _common import check, machine

from feedrank.datasets.demo import generate_site
from feedrank.evaluation.metrics import classification_metrics
from feedrank.evaluation.offline import Evaluation, evaluate
from feedrank.evaluation.open_bandit import compare
from feedrank.evaluation.splits import Split
from feedrank.features.groups import FeatureGroups
from feedrank.features.history import History, T
from feedrank.models.base import Recommender
from feedrank.models.bilinear import BilinearRecommender
from feedrank.models.glm import GLMRecommender
from feedrank.models.hybrid import HybridRecommender
from feedrank.models.twotower import TwoTowerRecommender
from feedrank.pipeline.train import train
from feedrank.settings import Settings

OPEN_BANDIT = Path(__file__).resolve().parents[2] / "shared" / "data" / "open-bandit"
K = 10
PROBABILITY_METRICS = ("roc_auc", "log_loss", "ece")


def probability_columns(y: np.ndarray, p: np.ndarray, probabilities: bool = True) -> dict:
    m = classification_metrics(y, p)
    return {
        "roc_auc": m["roc_auc"],
        "log_loss": m["log_loss"] if probabilities else None,
        "ece": m["ece"] if probabilities else None,
        "mean_p": float(np.mean(p)) if probabilities else None,
    }


def ranking_columns(ev: Evaluation, name: str) -> dict:
    return {
        f"HR@{K}": ev.metric(name, f"HR@{K}"),
        f"NDCG@{K}": ev.metric(name, f"NDCG@{K}"),
        "MRR": ev.metric(name, "MRR"),
    }


def judged(ev: Evaluation, name: str, split: Split, y: np.ndarray) -> dict:
    """A probabilistic model's row: the harness's metrics, checked against a direct scoring."""
    model = ev.models[name]
    got = probability_columns(y, model.predict_proba(split.data, split.examples))
    harness = ev.probabilities[name]
    same = all(got[m] == harness[m] for m in PROBABILITY_METRICS)
    check(same, f"{name}: the harness's AUC, log loss and ECE equal a direct predict_proba")
    return {**ranking_columns(ev, name), **got, "fit_s": ev.fit_seconds[name]}


def hybrid_auc(model: Recommender, split: Split, settings: Settings) -> float:
    """AUC of the hybrid's scores of the held-out impressions' (user, item), as of the cut."""
    ex = split.examples
    assert ex is not None
    users = ex["user_id"].unique().sort().to_list()
    items = ex["item_id"].unique().sort().to_list()
    S = model.at(split.view(settings)).score(users, items)
    ui = {u: i for i, u in enumerate(users)}
    ii = {v: i for i, v in enumerate(items)}
    p = S[[ui[u] for u in ex["user_id"].to_list()], [ii[v] for v in ex["item_id"].to_list()]]
    return probability_columns(ex["label"].to_numpy(), p, probabilities=False)["roc_auc"]


def synthetic(small: bool) -> tuple[pl.DataFrame, dict]:
    site = generate_site(n_users=400, n_items=120, days=14) if small else generate_site()
    data, s = site.site_data(), Settings()

    t = time.perf_counter()
    result = train(data, s, "glm", test_days=3 if small else 7, k=K)
    t_train = time.perf_counter() - t
    glm_ev, split = result.evaluation, result.evaluation.split
    if split.examples is None:
        raise SystemExit("the split has no labelled held-out impressions of both classes")
    y = split.examples["label"].to_numpy()
    out = [{"model": "glm", **judged(glm_ev, "glm", split, y)}]

    pop = {**ranking_columns(glm_ev, "popularity"), **glm_ev.probabilities["popularity"]}
    pop["mean_p"] = None
    out.append({"model": "popularity", **pop, "fit_s": glm_ev.fit_seconds["popularity"]})
    glm = result.model
    assert isinstance(glm, GLMRecommender)
    groups = FeatureGroups(glm.spec_, History(split.data, s, glm.spec_.share_attributes))
    ctr = groups.item(split.examples.select("item_id", T))["item_ctr"].to_numpy()
    out.append({"model": "item CTR as of each impression", **probability_columns(y, ctr)})

    models: dict[str, Recommender] = {
        "bilinear": BilinearRecommender(),
        "bilinear (normalised, |Wy|=1)": BilinearRecommender(normalize=True),
        "twotower": TwoTowerRecommender(),
        "twotower (no position terms)": TwoTowerRecommender(use_position=False),
        "hybrid": HybridRecommender(),
    }
    t = time.perf_counter()
    ev = evaluate(models, split, s, K)
    t_evaluate = time.perf_counter() - t
    for name in models:
        if name == "hybrid":
            auc = hybrid_auc(ev.models[name], split, s)
            row = {**ranking_columns(ev, name), "roc_auc": auc, "fit_s": ev.fit_seconds[name]}
            out.append({"model": "hybrid (AUC: scores as of the cut)", **row})
        else:
            out.append({"model": name, **judged(ev, name, split, y)})

    columns = ["model", f"HR@{K}", f"NDCG@{K}", "MRR", "roc_auc", "log_loss", "ece", "mean_p"]
    table = pl.DataFrame(out, infer_schema_length=None).select(*columns, "fit_s")
    table = table.with_columns(pl.col(columns[1:]).round(4), pl.col("fit_s").round(1))
    info = {
        "description": split.description,
        "train_examples": glm.n_examples_,
        "test_examples": split.examples.height,
        "train_s": t_train,
        "evaluate_s": t_evaluate,
    }
    return table, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="a small site, one open-bandit log")
    parser.add_argument("--open-bandit", type=Path, default=OPEN_BANDIT)
    args = parser.parse_args()
    pl.Config.set_tbl_rows(30).set_tbl_cols(10).set_fmt_str_lengths(40).set_tbl_width_chars(160)

    table, info = synthetic(args.small)
    print(f"\n== synthetic site, held-out window ==  [{machine()}]")
    print(info["description"])
    print(
        f"{info['train_examples']} training impressions, {info['test_examples']} held-out "
        f"impressions; train(glm) {info['train_s']:.0f} s, evaluate(others) "
        f"{info['evaluate_s']:.0f} s"
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
