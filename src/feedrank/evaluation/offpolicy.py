"""Off-policy estimates of a new policy's click-through rate from logged impressions that carry
the logging policy's propensities — what a policy would have earned, before it goes online.

- IPS: mean of r * pi_new(a|x) / pi_log(a|x); unbiased when propensities are right.
- SNIPS: the same weights normalised to sum to one; a little bias, much less variance.
- DR (doubly robust): a reward model's prediction under the new policy plus the IPS-weighted
  residual of the logged reward; unbiased when either the propensities or the reward model are
  right, and less variable than IPS when the reward model explains some of the clicks.
Confidence intervals are seeded bootstrap percentiles over impressions — or over whole users,
given `clusters`, since one user's impressions are alike — resampled only where rows carry
weight (exact, and the cost follows those rows, not the log); past a work budget (rows carrying
weight x resamples), the delta method's normal interval, which such sizes make accurate —
`Estimate.interval` says which.

`weight_diagnostics` says whether the weights can be trusted at all: their mean must be near 1
(E[w] = 1 under correct propensities; far from it, the log's propensities or the new policy's
support are off), and the effective sample size says how many impressions the estimate is
really worth."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

BOOTSTRAP = 2000
BOOTSTRAP_BUDGET = 100_000_000  # resampled rows in all; beyond it, the normal interval
_BATCH_DRAWS = 4_000_000  # resampled rows held at once


@dataclass(frozen=True)
class Estimate:
    method: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    effective_n: float  # (sum w)^2 / sum w^2: how many impressions the estimate is really worth
    interval: str = "bootstrap"  # or "normal"

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
    return float(w.sum() ** 2 / (w**2).sum()) if w.any() else 0.0


def resampled_sums(columns: np.ndarray, n: int, seed: int, n_boot: int) -> np.ndarray:
    """Column sums over `n_boot` bootstrap resamples (n draws with replacement) of a log of `n`
    rows of which only the given ones (rows of `columns`) are non-zero. Exact: the number of
    draws that land on the m given rows is Binomial(n, m / n), and those draws are uniform over
    them — so the cost follows m, not n."""
    rng = np.random.default_rng(seed)
    m = len(columns)
    out = np.zeros((n_boot, columns.shape[1]))
    if m == 0:
        return out
    per_batch = max(1, _BATCH_DRAWS // m)
    for start in range(0, n_boot, per_batch):
        b = min(per_batch, n_boot - start)
        hits = rng.binomial(n, m / n, size=b)
        picked = rng.integers(0, m, hits.sum())
        replicate = np.repeat(np.arange(b), hits)
        for j in range(columns.shape[1]):
            out[start : start + b, j] = np.bincount(
                replicate, weights=columns[picked, j], minlength=b
            )
    return out


def _ratio(
    num: np.ndarray,
    den: np.ndarray | None,
    clusters: np.ndarray | None,
    seed: int,
    level: float,
    n_boot: int,
) -> tuple[float, float, float, str]:
    """sum(num) / sum(den) (den None: / the number of rows), with a `level` interval: bootstrap
    percentiles from resampling rows — or, given `clusters` (e.g. user ids), whole clusters,
    since one user's impressions are not independent — or, past the work budget, the delta
    method's normal interval."""
    num = np.asarray(num, float)
    den_rows = np.ones(len(num)) if den is None else np.asarray(den, float)
    fixed = den is None and clusters is None  # every resample has exactly n rows
    if clusters is not None:
        _, unit = np.unique(np.asarray(clusters), return_inverse=True)
        num, den_rows = np.bincount(unit, weights=num), np.bincount(unit, weights=den_rows)
    n = len(num)
    value = float(num.sum() / den_rows.sum()) if den_rows.sum() else float("nan")
    on = (num != 0) if fixed else (num != 0) | (den_rows != 0)  # the rows that carry anything
    tail = (1 - level) / 2
    if on.sum() * n_boot <= BOOTSTRAP_BUDGET:
        columns = num[on, None] if fixed else np.column_stack([num[on], den_rows[on]])
        sums = resampled_sums(columns, n, seed, n_boot)
        with np.errstate(invalid="ignore", divide="ignore"):  # a resample may hold no weight
            reps = sums[:, 0] / (n if fixed else sums[:, 1])
        lo, hi = np.nanpercentile(reps, [100 * tail, 100 * (1 - tail)])
        return value, float(lo), float(hi), "bootstrap"
    # the delta method: each unit's influence (num - value * den) / mean(den); they sum to 0
    mean_den = den_rows.mean()
    squares = np.square((num[on] - value * den_rows[on]) / mean_den).sum()
    if fixed:  # the rows left out carry num 0 and den 1
        squares += (n - on.sum()) * (value / mean_den) ** 2
    sd = np.sqrt(squares / (n - 1))
    half = float(stats.norm.ppf(1 - tail) * sd / np.sqrt(n))
    return value, value - half, value + half, "normal"


def ips(
    rewards: np.ndarray,
    target_prob: np.ndarray,
    logging_prob: np.ndarray,
    seed: int = 0,
    level: float = 0.95,
    n_boot: int = BOOTSTRAP,
    clusters: np.ndarray | None = None,
) -> Estimate:
    """`clusters`: a unit per row (e.g. the user) to resample whole, for intervals that hold
    when rows of one unit are alike."""
    w = _weights(target_prob, logging_prob)
    wr = w * np.asarray(rewards, dtype=float)
    value, lo, hi, how = _ratio(wr, None, clusters, seed, level, n_boot)
    return Estimate("ips", value, lo, hi, len(w), _effective_n(w), how)


def snips(
    rewards: np.ndarray,
    target_prob: np.ndarray,
    logging_prob: np.ndarray,
    seed: int = 0,
    level: float = 0.95,
    n_boot: int = BOOTSTRAP,
    clusters: np.ndarray | None = None,
) -> Estimate:
    w = _weights(target_prob, logging_prob)
    if w.sum() == 0:  # the new policy shows nothing that was logged: no estimate
        return Estimate("snips", float("nan"), float("nan"), float("nan"), len(w), 0.0)
    wr = w * np.asarray(rewards, dtype=float)
    value, lo, hi, how = _ratio(wr, w, clusters, seed, level, n_boot)
    return Estimate("snips", value, lo, hi, len(w), _effective_n(w), how)


def dr(
    rewards: np.ndarray,
    target_prob: np.ndarray,
    logging_prob: np.ndarray,
    predicted_logged: np.ndarray,
    predicted_target: np.ndarray,
    seed: int = 0,
    level: float = 0.95,
    n_boot: int = BOOTSTRAP,
    clusters: np.ndarray | None = None,
) -> Estimate:
    """`predicted_logged`: the reward model's click probability of each logged impression;
    `predicted_target`: its expected click probability under the new policy in the same context
    (the sum over items of pi_new(a|x) q(x, a)). Fit the reward model on other data (earlier
    events, or other folds), or its own fitting errors leak into the correction term."""
    r = np.asarray(rewards, dtype=float)
    w = _weights(target_prob, logging_prob)
    terms = np.asarray(predicted_target, float) + w * (r - np.asarray(predicted_logged, float))
    value, lo, hi, how = _ratio(terms, None, clusters, seed, level, n_boot)
    return Estimate("dr", value, lo, hi, len(w), _effective_n(w), how)


@dataclass(frozen=True)
class WeightDiagnostics:
    mean_weight: float
    mean_weight_ci_low: float
    mean_weight_ci_high: float
    effective_n: float
    max_weight_share: float  # the largest single weight over the sum of weights
    support: float  # share of logged impressions the new policy could have shown too
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def weight_diagnostics(
    target_prob: np.ndarray,
    logging_prob: np.ndarray,
    seed: int = 0,
    level: float = 0.95,
    n_boot: int = BOOTSTRAP,
    min_effective_n: float = 100.0,
    clusters: np.ndarray | None = None,
) -> WeightDiagnostics:
    w = _weights(target_prob, logging_prob)
    _, lo, hi, _ = _ratio(w, None, clusters, seed, level, n_boot)
    total, ess = w.sum(), _effective_n(w)
    share = float(w.max() / total) if total > 0 else 1.0
    support = float((np.asarray(target_prob) > 0).mean())
    warnings = []
    if support == 0:
        warnings.append("the new policy would have shown none of the logged items where they were")
    if not lo <= 1.0 <= hi:
        warnings.append(
            f"the mean importance weight must be near 1; got {w.mean():.3g} "
            f"[{lo:.3g}, {hi:.3g}]: the logged propensities or the new policy's support are off"
        )
    if ess < min_effective_n:
        warnings.append(
            f"the effective sample size must be at least {min_effective_n:g} for a usable "
            f"estimate; got {ess:.1f} of {len(w)} impressions"
        )
    if share > 0.1:
        warnings.append(f"one impression carries {share:.0%} of the total weight")
    return WeightDiagnostics(float(w.mean()), lo, hi, ess, share, support, tuple(warnings))


def observed_rate(clicks: np.ndarray, level: float = 0.95) -> Estimate:
    """The on-policy CTR of a log with a Wilson score interval."""
    y = np.asarray(clicks, dtype=float)
    n, p = len(y), float(y.mean())
    z = stats.norm.ppf(1 - (1 - level) / 2)
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return Estimate("observed", p, float(centre - half), float(centre + half), n, float(n))


def compare(estimate: Estimate, observed: Estimate) -> dict[str, Any]:
    """Honest readings of "does the estimate agree with what the policy really earned".

    `pass_probability`: how often an exactly unbiased estimator with this estimate's standard
    error would land inside the observed interval (both errors taken as normal) — the chance
    that the first reading holds when nothing is wrong, to read a miss against."""
    se_e = (estimate.ci_high - estimate.ci_low) / (2 * 1.96)
    se_o = (observed.ci_high - observed.ci_low) / (2 * 1.96)
    spread = np.hypot(se_e, se_o)
    half = (observed.ci_high - observed.ci_low) / 2
    return {
        "estimate_in_observed_ci": observed.contains(estimate.value),
        "observed_in_estimate_ci": estimate.contains(observed.value),
        "difference": estimate.value - observed.value,
        "difference_p_value": float(
            2 * stats.norm.sf(abs(estimate.value - observed.value) / spread)
        ),
        "pass_probability": float(1 - 2 * stats.norm.sf(half / spread)),
    }
