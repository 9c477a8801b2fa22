"""The off-policy estimators checked against reality on the Open Bandit Dataset: the CTR of the
uniform-random policy estimated from the Thompson-sampling log (IPS, SNIPS, DR), beside the CTR
the random policy really got in its own log, per campaign.

The reward model of DR is an L2 logistic regression on one-hot item, position and user features,
cross-fitted (each row's predictions come from a model fitted on the other four folds), its
penalty the one with the lowest out-of-fold log loss on the Thompson-sampling log. Nothing is taken from the random
log but the observed CTR the estimates are compared with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import KFold
from sklearn.preprocessing import OneHotEncoder

from feedrank.datasets.open_bandit import CAMPAIGNS, item_count, load_log
from feedrank.evaluation.offpolicy import (
    compare,
    dr,
    ips,
    observed_rate,
    snips,
    weight_diagnostics,
)

FOLDS = 5
_PENALTIES = [0.01, 0.1, 1.0]  # inverse L2 strengths tried by cross-validation


def _design(log: pl.DataFrame, item_id: pl.Series | None = None) -> np.ndarray:
    features = [c for c in log.columns if c.startswith("user_feature_")]
    return np.column_stack(
        [
            (item_id if item_id is not None else log["item_id"]).to_numpy(),
            log["position"].cast(pl.String).to_numpy(),
            *[log[c].to_numpy() for c in features],
        ]
    )


def uniform_policy_rewards(
    log: pl.DataFrame, n_items: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Cross-fitted reward model: each row's predicted click probability for the logged item,
    and its mean over all `n_items` items at the same position (the uniform policy's
    expectation). The penalty is the one with the lowest out-of-fold log loss."""
    clicks = log["click"].to_numpy()
    encoder = OneHotEncoder(handle_unknown="ignore", min_frequency=5)
    X = encoder.fit_transform(_design(log))
    folds = list(KFold(FOLDS, shuffle=True, random_state=seed).split(X))
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for penalty in _PENALTIES:
        logged, uniform = np.zeros(log.height), np.zeros(log.height)
        for train, test in folds:
            model = LogisticRegression(C=penalty, max_iter=2000).fit(X[train], clicks[train])
            logged[test] = model.predict_proba(X[test])[:, 1]
            rows = log[test]
            for item in range(n_items):
                as_item = pl.Series("item_id", [str(item)] * rows.height)
                X_item = encoder.transform(_design(rows, as_item))
                uniform[test] += model.predict_proba(X_item)[:, 1] / n_items
        loss = log_loss(clicks, logged)
        if best is None or loss < best[0]:
            best = (loss, logged, uniform)
    assert best is not None  # _PENALTIES is not empty
    return best[1], best[2]


def uniform_policy_check(
    root: str | Path, campaigns: tuple[str, ...] = CAMPAIGNS, seed: int = 0
) -> list[dict[str, Any]]:
    """One row per campaign and estimator: the estimate with its 95% interval, the random log's
    CTR with its Wilson interval, the readings of `offpolicy.compare` and the weight
    diagnostics."""
    rows = []
    for campaign in campaigns:
        bts, rand = load_log("bts", campaign, root), load_log("random", campaign, root)
        n_items = item_count(campaign, root, policy="bts")
        clicks, logging = bts["click"].to_numpy(), bts["propensity_score"].to_numpy()
        target = np.full(bts.height, 1 / n_items)
        q_logged, q_target = uniform_policy_rewards(bts, n_items, seed)
        observed = observed_rate(rand["click"].to_numpy())
        weights = weight_diagnostics(target, logging, seed=seed)
        for est in (
            ips(clicks, target, logging, seed=seed),
            snips(clicks, target, logging, seed=seed),
            dr(clicks, target, logging, q_logged, q_target, seed=seed),
        ):
            rows.append(
                {
                    "campaign": campaign,
                    "method": est.method,
                    "estimate": est.value,
                    "ci_low": est.ci_low,
                    "ci_high": est.ci_high,
                    "random_log_ctr": observed.value,
                    "random_ci_low": observed.ci_low,
                    "random_ci_high": observed.ci_high,
                    **compare(est, observed),
                    "effective_n": weights.effective_n,
                    "mean_weight": weights.mean_weight,
                    "mean_weight_ci_low": weights.mean_weight_ci_low,
                    "mean_weight_ci_high": weights.mean_weight_ci_high,
                    "warnings": list(weights.warnings),
                }
            )
    return rows
