"""What would a model have earned had it served instead? Off-policy estimates of feedrank models'
click-through rate from the store's own logged impressions, before they go online.

The log: impressions after a cut whose context carries `propensity` — the logging policy's
probability of having shown that item at that position (position-level, as in the Open Bandit
Dataset) — each labelled clicked when an engagement of the user on the item follows within the
label window. Each model is fitted on the events before the cut and frozen there, served as a
ranking policy (greedy top-k, or softmax exploration: see `evaluation/policy.py`), and its CTR
estimated by IPS, SNIPS and DR over the impressions, with weight diagnostics; the intervals
resample users, not impressions, since one user's impressions are alike. The position-level
estimate assumes a click at one position does not depend on what the other positions show."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import numpy as np
import polars as pl

from feedrank.evaluation.offpolicy import (
    Estimate,
    WeightDiagnostics,
    dr,
    ips,
    observed_rate,
    snips,
    weight_diagnostics,
)
from feedrank.evaluation.policy import at_logged, marginals
from feedrank.exceptions import FeedrankError
from feedrank.features.examples import labelled_impressions
from feedrank.models.base import Recommender, Scorer
from feedrank.models.glm import GLMRecommender
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import FrameView

DR_ROWS = 5_000_000  # (visit, item) pairs the reward model may score for one policy


@dataclass(frozen=True)
class PolicyEstimate:
    model: str
    policy: str  # "greedy" or "softmax(T)"
    estimates: tuple[Estimate, ...]
    weights: WeightDiagnostics

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "model": self.model,
                "policy": self.policy,
                "method": e.method,
                "ctr": e.value,
                "ci_low": e.ci_low,
                "ci_high": e.ci_high,
                "effective_n": self.weights.effective_n,
                "support": self.weights.support,
                "mean_weight": self.weights.mean_weight,
                "warnings": list(self.weights.warnings),
            }
            for e in self.estimates
        ]


@dataclass(frozen=True)
class OffPolicyReport:
    cut: datetime
    log: pl.DataFrame  # the logged impressions estimated on (see logged_impressions)
    logged: Estimate  # the logging policy's own CTR on the same impressions
    policies: tuple[PolicyEstimate, ...]

    @property
    def impressions(self) -> int:
        return self.log.height

    @property
    def description(self) -> str:
        return (
            f"models fitted on events before {self.cut.isoformat()} and frozen; "
            f"{self.impressions} logged impressions at or after it that carry a propensity"
        )

    def table(self) -> pl.DataFrame:
        rows = [r for p in self.policies for r in p.rows()]
        return pl.DataFrame(rows).drop("warnings") if rows else pl.DataFrame()

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.description,
            "logged_policy": self.logged.to_dict(),
            "estimates": [r for p in self.policies for r in p.rows()],
        }


def logged_impressions(data: SiteData, settings: Settings, cut: datetime) -> pl.DataFrame:
    """Impressions at or after `cut` with a position and a propensity: user_id, item_id,
    position, timestamp, device, propensity, label."""
    imps = labelled_impressions(data.events, settings).filter(pl.col("timestamp") >= cut)
    return (
        imps.with_columns(
            propensity=pl.col("context").str.json_path_match("$.propensity").cast(pl.Float64)
        )
        .filter(pl.col("propensity").is_not_null() & (pl.col("position") >= 1))
        .select("user_id", "item_id", "position", "timestamp", "device", "propensity", "label")
    )


def estimate_models(
    models: dict[str, Recommender],
    data: SiteData,
    settings: Settings,
    cut: datetime,
    temperature: float | None = None,
    n_sim: int = 2000,
    seed: int = 0,
    doubly_robust: bool = True,
) -> OffPolicyReport:
    """IPS and SNIPS of each model's policy, and DR where the reward model's work stays within
    a budget (always for greedy policies). The reward model is a GLM click model fitted on the
    events before the cut — so it never saw the clicks it corrects — reading each visit's
    features as of its own time."""
    log = logged_impressions(data, settings, cut)
    if log.is_empty():
        raise FeedrankError(
            f"off-policy estimates need impressions at or after {cut.isoformat()} whose context "
            "carries 'propensity' (the logging policy's probability of showing that item at that "
            "position); got none"
        )
    clicks, logging = log["label"].to_numpy(), log["propensity"].to_numpy()
    users_of_rows = log["user_id"].to_numpy()  # intervals resample users: theirs are alike
    train = data.until(cut)
    reward = GLMRecommender().fit(train, settings) if doubly_robust else None
    q_logged = reward.predict_proba(data, log) if reward is not None else None
    policy = "greedy" if temperature is None else f"softmax({temperature:g})"
    k = int(log["position"].max())  # type: ignore[arg-type]
    users = log["user_id"].unique(maintain_order=True).to_list()
    out = []
    view = FrameView(train, settings, cut)
    for name, model in models.items():
        scorer = model.fit(train, settings).at(view)
        shown = marginals(scorer, users, k, temperature, n_sim=n_sim, seed=seed)
        target = at_logged(shown, log)
        estimates = [
            ips(clicks, target, logging, seed=seed, clusters=users_of_rows),
            snips(clicks, target, logging, seed=seed, clusters=users_of_rows),
        ]
        if reward is not None and q_logged is not None and _pairs(shown, log) <= DR_ROWS:
            q_target = policy_expectation(shown, log, partial(reward.predict_proba, data))
            estimates.append(
                dr(clicks, target, logging, q_logged, q_target, seed=seed, clusters=users_of_rows)
            )
        weights = weight_diagnostics(target, logging, seed=seed, clusters=users_of_rows)
        out.append(PolicyEstimate(name, policy, tuple(estimates), weights))
    return OffPolicyReport(cut, log, observed_rate(clicks), tuple(out))


def _pairs(shown: pl.DataFrame, log: pl.DataFrame) -> int:
    """How many (visit, item) pairs the policy's expectation over the log takes."""
    per_slot = shown.group_by("user_id", "position").len("items")
    visits = log.group_by("user_id", pl.col("position").cast(pl.Int32)).len("visits")
    both = visits.join(per_slot, on=["user_id", "position"])
    return int((both["visits"] * both["items"]).sum())


def policy_expectation(
    shown: pl.DataFrame,
    log: pl.DataFrame,
    click_probability: Callable[[pl.DataFrame], np.ndarray],
) -> np.ndarray:
    """Per logged visit (user, position, time): the sum over items of P(the policy shows the item
    there) x P(click), from the policy's marginals `shown` (evaluation.policy.marginals) and a
    click oracle taking rows of user_id, item_id, position, timestamp, device."""
    visits = log.select(
        "user_id",
        pl.col("position").cast(pl.Int32),
        "timestamp",
        "device",
    ).with_row_index("__visit")
    hypothetical = visits.join(shown, on=["user_id", "position"])
    p_click = click_probability(hypothetical.drop("p", "__visit"))
    return np.bincount(
        hypothetical["__visit"].to_numpy(),
        weights=hypothetical["p"].to_numpy() * p_click,
        minlength=log.height,
    )


def expected_ctr(
    scorer: Scorer,
    log: pl.DataFrame,
    click_probability: Callable[[pl.DataFrame], np.ndarray],
    temperature: float | None = None,
    n_sim: int = 2000,
    seed: int = 0,
) -> float:
    """The CTR the model's policy would really have had on the logged visits, given an oracle
    of true click probabilities (a simulator's, e.g. `DemoSite.click_probability`)."""
    k = int(log["position"].max())  # type: ignore[arg-type]
    shown = marginals(
        scorer,
        log["user_id"].unique(maintain_order=True).to_list(),
        k,
        temperature,
        n_sim=n_sim,
        seed=seed,
    )
    return float(policy_expectation(shown, log, click_probability).mean())


def default_cut(data: SiteData, test_days: float) -> datetime:
    last = data.time_span[1]
    if last is None:
        raise FeedrankError("the store has no interactions: run `feedrank import` first")
    return last - timedelta(days=test_days)
