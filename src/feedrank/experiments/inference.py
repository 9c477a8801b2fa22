"""Honest A/B statistics for click-through, where users (not impressions) are randomised.

- CTR is a ratio of sums over users (clicks / impressions). One user's impressions are not
  independent — some users click far more than others — so an impression-level test reads a
  user's habit as evidence and finds differences that are not there. The delta method gives the
  ratio's variance from per-user sums (Deng, Knoblich & Lu, "Applying the Delta Method in Metric
  Analytics", KDD 2018).
- Looking at a test every day and stopping at the first p < 0.05 inflates false positives far
  beyond 5%. The always-valid p-value of a mixture sequential probability ratio test (mSPRT;
  Johari, Pekelis & Walsh, "Always Valid Inference", 2017) stays valid whenever one looks and
  stops. Its mixing scale `tau` is the size of difference one cares about: small differences are
  found sooner when it is small, large ones when it is large; validity holds for any value."""

from __future__ import annotations

import numpy as np
from scipy import stats


def ratio_and_variance(clicks: np.ndarray, impressions: np.ndarray) -> tuple[float, float]:
    """CTR = sum(clicks) / sum(impressions) over users, and its delta-method variance."""
    c, n = np.asarray(clicks, float), np.asarray(impressions, float)
    users = len(n)
    if users < 2 or n.sum() == 0:
        return (float(c.sum() / n.sum()) if n.sum() else float("nan")), float("nan")
    ctr = c.sum() / n.sum()
    residual = c - ctr * n  # each user's clicks beyond what the pooled CTR predicts
    return float(ctr), float(residual.var(ddof=1) / (users * n.mean() ** 2))


def difference_test(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
) -> tuple[float, float, float]:
    """(CTR_b - CTR_a, its standard error, two-sided p-value), from per-user (clicks,
    impressions) of each variant."""
    ctr_a, var_a = ratio_and_variance(*a)
    ctr_b, var_b = ratio_and_variance(*b)
    se = float(np.sqrt(var_a + var_b))
    if not se > 0:
        return ctr_b - ctr_a, se, 1.0
    return ctr_b - ctr_a, se, float(2 * stats.norm.sf(abs(ctr_b - ctr_a) / se))


def always_valid_p(differences: np.ndarray, variances: np.ndarray, tau: float) -> np.ndarray:
    """The always-valid p-value after each look, from the difference estimate and its variance
    at that look (cumulative data). p_k = min(1, min over looks j <= k of 1 / Lambda_j), with
    Lambda = sqrt(V / (V + tau^2)) * exp(d^2 tau^2 / (2 V (V + tau^2)))."""
    d, v = np.asarray(differences, float), np.asarray(variances, float)
    t2 = tau**2
    with np.errstate(divide="ignore", invalid="ignore"):
        log_lambda = 0.5 * np.log(v / (v + t2)) + d**2 * t2 / (2 * v * (v + t2))
    log_lambda = np.where(v > 0, log_lambda, 0.0)  # no information yet: no evidence
    return np.minimum.accumulate(np.minimum(1.0, np.exp(-log_lambda)))
