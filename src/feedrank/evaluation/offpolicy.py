"""Off-policy estimates of a new policy's click-through rate from logged impressions that carry
the logging policy's propensities — what a policy would have earned, before it goes online.

- IPS: mean of r * pi_new(a|x) / pi_log(a|x); unbiased when propensities are right.
- SNIPS: the same weights normalised to sum to one; a little bias, much less variance.
Confidence intervals are seeded bootstrap percentiles over impressions."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

BOOTSTRAP = 2000


@dataclass(frozen=True)
class Estimate:
    method: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    effective_n: float  # (sum w)^2 / sum w^2: how many impressions the estimate is really worth

    def contains(self, x: float) -> bool:
        return self.ci_low <= x <= self.ci_high

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _weights(target_prob: np.ndarray, logging_prob: np.ndarray) -> np.ndarray:
    logging_prob = np.asarray(logging_prob, dtype=float)
    if np.any(logging_prob <= 0) or np.any(logging_prob > 1):
        bad = logging_prob[(logging_prob <= 0) | (logging_prob > 1)][0]
        raise ValueError(f"logging propensities must be in (0, 1]; got {bad}")
    return np.asarray(target_prob, dtype=float) / logging_prob


def _effective_n(w: np.ndarray) -> float:
    """(sum w)^2 / sum w^2: how many impressions the weighted estimate is really worth."""
    return float(w.sum() ** 2 / (w**2).sum())


def _bootstrap(stat: Any, n: int, seed: int, level: float, n_boot: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    draws = np.array([stat(rng.integers(0, n, n)) for _ in range(n_boot)])
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(draws, [tail, 100 - tail])
    return float(lo), float(hi)


def ips(
    rewards: np.ndarray,
    target_prob: np.ndarray,
    logging_prob: np.ndarray,
    seed: int = 0,
    level: float = 0.95,
    n_boot: int = BOOTSTRAP,
) -> Estimate:
    r = np.asarray(rewards, dtype=float)
    w = _weights(target_prob, logging_prob)
    wr = w * r
    lo, hi = _bootstrap(lambda i: wr[i].mean(), len(r), seed, level, n_boot)
    return Estimate("ips", float(wr.mean()), lo, hi, len(r), _effective_n(w))


def snips(
    rewards: np.ndarray,
    target_prob: np.ndarray,
    logging_prob: np.ndarray,
    seed: int = 0,
    level: float = 0.95,
    n_boot: int = BOOTSTRAP,
) -> Estimate:
    r = np.asarray(rewards, dtype=float)
    w = _weights(target_prob, logging_prob)
    lo, hi = _bootstrap(lambda i: (w[i] * r[i]).sum() / w[i].sum(), len(r), seed, level, n_boot)
    return Estimate("snips", float((w * r).sum() / w.sum()), lo, hi, len(r), _effective_n(w))


def observed_rate(clicks: np.ndarray, level: float = 0.95) -> Estimate:
    """The on-policy CTR of a log with a Wilson score interval."""
    y = np.asarray(clicks, dtype=float)
    n, p = len(y), float(y.mean())
    z = stats.norm.ppf(1 - (1 - level) / 2)
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return Estimate("observed", p, float(centre - half), float(centre + half), n, float(n))


def compare(estimate: Estimate, observed: Estimate) -> dict[str, Any]:
    """Three honest readings of "does the estimate agree with what the policy really earned"."""
    se_e = (estimate.ci_high - estimate.ci_low) / (2 * 1.96)
    se_o = (observed.ci_high - observed.ci_low) / (2 * 1.96)
    z = (estimate.value - observed.value) / np.hypot(se_e, se_o)
    return {
        "estimate_in_observed_ci": observed.contains(estimate.value),
        "observed_in_estimate_ci": estimate.contains(observed.value),
        "difference": estimate.value - observed.value,
        "difference_p_value": float(2 * stats.norm.sf(abs(z))),
    }
