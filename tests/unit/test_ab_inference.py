"""A/B inference on simulated experiments where the truth is known: users differ in how much
they click (as real users do), and the test is looked at every day."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from feedrank.experiments.inference import always_valid_p, difference_test, ratio_and_variance

DAYS = 14


def cohort(rng: np.random.Generator, users: int, ctr: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-user (clicks, impressions): heavy users and heavy clickers, mean CTR `ctr`."""
    impressions = 1 + rng.geometric(1 / 20, users)
    propensity = rng.beta(2 * ctr, 2 * (1 - ctr), users)  # mean ctr, very uneven across users
    return rng.binomial(impressions, propensity), impressions


def pooled_z_p(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """The impression-level two-proportion test: what treats every impression as independent."""
    ca, na, cb, nb = a[0].sum(), a[1].sum(), b[0].sum(), b[1].sum()
    p = (ca + cb) / (na + nb)
    z = (cb / nb - ca / na) / np.sqrt(p * (1 - p) * (1 / na + 1 / nb))
    return float(2 * stats.norm.sf(abs(z)))


def test_delta_method_variance_by_hand() -> None:
    clicks, imps = np.array([1.0, 0.0, 3.0]), np.array([2.0, 2.0, 4.0])
    ctr, var = ratio_and_variance(clicks, imps)
    residual = clicks - 0.5 * imps  # ctr = 4 / 8
    assert ctr == 0.5
    assert var == pytest.approx(residual.var(ddof=1) / (3 * (8 / 3) ** 2), rel=1e-12)


def test_with_uneven_users_only_the_user_level_test_keeps_its_level() -> None:
    naive, delta = [], []
    for seed in range(300):
        rng = np.random.default_rng(seed)
        a, b = cohort(rng, 400, 0.05), cohort(rng, 400, 0.05)
        naive.append(pooled_z_p(a, b) < 0.05)
        delta.append(difference_test(a, b)[2] < 0.05)
    assert np.mean(naive) > 0.2  # impressions as independent: many false alarms
    assert 0.02 <= np.mean(delta) <= 0.09  # nominal 0.05 over 300 A/A tests


def _daily_looks(seed: int, ctr_b: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A new cohort of users per variant every day; the test looked at after each day."""
    rng = np.random.default_rng(seed)
    a = [cohort(rng, 150, 0.05) for _ in range(DAYS)]
    b = [cohort(rng, 150, ctr_b) for _ in range(DAYS)]
    d, v, p = np.zeros(DAYS), np.zeros(DAYS), np.zeros(DAYS)
    for k in range(DAYS):
        sa = tuple(np.concatenate([x[j] for x in a[: k + 1]]) for j in (0, 1))
        sb = tuple(np.concatenate([x[j] for x in b[: k + 1]]) for j in (0, 1))
        d[k], se, p[k] = difference_test(sa, sb)  # type: ignore[arg-type]
        v[k] = se**2
    return d, v, p


def test_always_valid_p_survives_daily_peeking_where_the_fixed_p_does_not() -> None:
    peeked, valid = [], []
    for seed in range(300):
        d, v, p = _daily_looks(seed, 0.05)
        peeked.append((p < 0.05).any())  # stop at the first day the fixed p-value is < 0.05
        valid.append((always_valid_p(d, v, tau=0.01) < 0.05).any())
    assert np.mean(peeked) > 0.12  # 14 looks: the false alarm rate climbs well past 5%
    assert np.mean(valid) <= 0.05


def test_always_valid_p_finds_a_real_difference_and_never_rises() -> None:
    found = 0
    for seed in range(40):
        d, v, _ = _daily_looks(seed, 0.08)
        p = always_valid_p(d, v, tau=0.01)
        assert np.all(np.diff(p) <= 0)
        found += p[-1] < 0.05
    assert found >= 32  # 0.05 vs 0.08 within 14 days in at least 80% of experiments
