"""Off-policy estimates: known answers on a simulated log, and the Open Bandit check."""

from __future__ import annotations

import numpy as np
import pytest

from feedrank.datasets.open_bandit import default_root
from feedrank.evaluation import offpolicy
from feedrank.evaluation.offpolicy import (
    compare,
    dr,
    ips,
    observed_rate,
    resampled_sums,
    snips,
    weight_diagnostics,
)
from feedrank.evaluation.offpolicy_check import uniform_policy_check

CTR = np.linspace(0.02, 0.2, 10)


def _simulated_log(
    seed: int, n: int = 4000, ctr: np.ndarray = CTR
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """10 arms with known CTRs; a skewed logging policy; the target is uniform random."""
    rng = np.random.default_rng(seed)
    logging = np.linspace(1, 5, 10)
    logging /= logging.sum()
    arms = rng.choice(10, size=n, p=logging)
    clicks = (rng.random(n) < ctr[arms]).astype(float)
    return clicks, np.full(n, 0.1), logging[arms], float(ctr.mean())


def test_ips_and_snips_are_close_to_the_truth_and_cover_it() -> None:
    covered = {"ips": 0, "snips": 0}
    errors = []
    for seed in range(40):
        clicks, target, logging, truth = _simulated_log(seed)
        for est in (
            ips(clicks, target, logging, seed=seed, n_boot=300),
            snips(clicks, target, logging, seed=seed, n_boot=300),
        ):
            covered[est.method] += est.contains(truth)
            errors.append(est.value - truth)
    # 95% intervals: over 40 logs, coverage well above a coin flip and near the nominal level.
    assert covered["ips"] >= 34 and covered["snips"] >= 34
    assert abs(np.mean(errors)) < 0.005  # no systematic bias


def test_the_naive_average_is_biased_where_ips_is_not() -> None:
    clicks, target, logging, truth = _simulated_log(0, n=40_000)
    assert clicks.mean() - truth > 0.02  # the logging policy favours good arms
    assert abs(ips(clicks, target, logging, n_boot=50).value - truth) < 0.01


def test_bad_propensities_are_refused() -> None:
    with pytest.raises(ValueError, match=r"propensities must be in \(0, 1\]"):
        ips(np.ones(2), np.ones(2), np.array([0.5, 0.0]))


def test_wilson_interval_by_hand() -> None:
    est = observed_rate(np.array([1.0] * 10 + [0.0] * 90))
    # Wilson 95% for 10/100: [0.0552, 0.1744]
    assert est.ci_low == pytest.approx(0.0552, abs=1e-4) and est.ci_high == pytest.approx(
        0.1744, abs=1e-4
    )


def test_dr_is_unbiased_with_a_wrong_reward_model_and_tighter_with_a_good_one() -> None:
    ctr = np.linspace(0.9, 0.1, 10)  # rarely logged arms click most: where DR pays off
    shares = np.linspace(1, 5, 10) / np.linspace(1, 5, 10).sum()
    good_err, wrong_err, ips_err = [], [], []
    for seed in range(40):
        clicks, target, logging, truth = _simulated_log(seed, ctr=ctr)
        q = ctr[np.searchsorted(shares, logging)]  # the true click rate of each logged arm
        good = dr(clicks, target, logging, q, np.full(len(clicks), truth), n_boot=10)
        wrong = np.full(len(clicks), 0.5)  # a useless reward model: DR falls back on IPS
        good_err.append(good.value - truth)
        wrong_err.append(dr(clicks, target, logging, wrong, wrong, n_boot=10).value - truth)
        ips_err.append(ips(clicks, target, logging, n_boot=10).value - truth)
    assert abs(np.mean(good_err)) < 0.005 and abs(np.mean(wrong_err)) < 0.01
    assert np.std(good_err) < 0.75 * np.std(ips_err)  # 0.63 in theory here


def test_weight_diagnostics_flag_wrong_propensities_and_tiny_samples() -> None:
    _, target, logging, _ = _simulated_log(0)
    fine = weight_diagnostics(target, logging, n_boot=300)
    assert fine.warnings == () and fine.mean_weight == pytest.approx(1.0, abs=0.05)
    assert fine.support == 1.0
    halved = weight_diagnostics(target, logging / 2, n_boot=300)  # propensities off by 2x
    assert halved.mean_weight == pytest.approx(2.0, abs=0.1)
    assert any("mean importance weight must be near 1" in w for w in halved.warnings)
    spiky = np.full(1000, 0.1)
    spiky[0] = 1e-5  # one impression worth 10,000 of the others
    tiny = weight_diagnostics(np.full(1000, 0.1), spiky, n_boot=100)
    assert tiny.effective_n < 2 and any("effective sample size" in w for w in tiny.warnings)
    none = weight_diagnostics(np.zeros(10), np.full(10, 0.5), n_boot=10)
    assert none.support == 0 and any("none of the logged items" in w for w in none.warnings)


def test_snips_without_support_is_no_estimate() -> None:
    est = snips(np.ones(5), np.zeros(5), np.full(5, 0.5), n_boot=10)
    assert np.isnan(est.value) and est.effective_n == 0.0


def test_pass_probability_by_hand() -> None:
    observed = observed_rate(np.array([1.0] * 50 + [0.0] * 950))
    half = (observed.ci_high - observed.ci_low) / 2
    same_width = type(observed)("ips", 0.05, 0.05 - half, 0.05 + half, 1000, 1000.0)
    # equal standard errors: P(|N(0, 2 se^2)| < 1.96 se) = P(|Z| < 1.96 / sqrt(2)) = 0.8342
    assert compare(same_width, observed)["pass_probability"] == pytest.approx(0.8342, abs=1e-3)


@pytest.mark.skipif(
    not default_root().exists(), reason="../shared/data/open-bandit is not beside the repo"
)
def test_uniform_policy_estimated_from_thompson_log_agrees_with_the_random_log() -> None:
    rows = uniform_policy_check(default_root())
    assert {(r["campaign"], r["method"]) for r in rows} == {
        (c, m) for c in ("men", "women") for m in ("ips", "snips", "dr")
    }
    for r in rows:
        # The random log's CTR lies in every estimate's interval and no estimate differs from
        # it significantly. (The estimates themselves do not all lie in the random log's own
        # interval, which an unbiased estimator would do with probability `pass_probability`
        # only: see the closing note of issue 4.)
        assert r["observed_in_estimate_ci"] and r["difference_p_value"] > 0.05, r
        assert 0 < r["pass_probability"] < 1
    by_campaign = {r["campaign"]: r for r in rows if r["method"] == "ips"}
    assert by_campaign["men"]["warnings"] == []  # a usable log: ESS in the hundreds
    assert any("effective sample size" in w for w in by_campaign["women"]["warnings"])


def test_resampling_only_the_weighted_rows_is_the_ordinary_bootstrap() -> None:
    rng = np.random.default_rng(5)
    n, values = 400, np.zeros(400)
    values[:25] = rng.exponential(3.0, 25)  # 25 rows carry weight, 375 are zero
    sparse = resampled_sums(values[:25, None], n, seed=1, n_boot=20_000)[:, 0]
    naive = np.array([values[rng.integers(0, n, n)].sum() for _ in range(20_000)])
    # same distribution: mean, spread and tails agree within Monte Carlo error
    assert sparse.mean() == pytest.approx(naive.mean(), rel=0.01)
    assert sparse.std() == pytest.approx(naive.std(), rel=0.03)
    for q in (2.5, 50, 97.5):
        assert np.percentile(sparse, q) == pytest.approx(np.percentile(naive, q), rel=0.05)


def test_past_the_budget_the_normal_interval_matches_the_bootstrap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clicks, target, logging, _ = _simulated_log(0, n=20_000)
    boot = [f(clicks, target, logging, n_boot=1000) for f in (ips, snips)]
    monkeypatch.setattr(offpolicy, "BOOTSTRAP_BUDGET", 0)
    normal = [f(clicks, target, logging, n_boot=1000) for f in (ips, snips)]
    for b, m in zip(boot, normal, strict=True):
        assert (b.interval, m.interval) == ("bootstrap", "normal") and b.value == m.value
        width = b.ci_high - b.ci_low
        assert abs(b.ci_low - m.ci_low) < 0.05 * width and abs(b.ci_high - m.ci_high) < 0.05 * width


def _clustered_log(seed: int) -> tuple[np.ndarray, ...]:
    """300 users with 30 impressions each; each user clicks at their own rate (mean 0.1, very
    uneven); uniform logging over 10 arms; the target shows arm 0 half the time. Clicks do not
    depend on the arm, so the truth is the mean rate, 0.1."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(300), 30)
    rate = rng.beta(0.5, 4.5, 300)[users]
    arms = rng.integers(0, 10, len(users))
    clicks = (rng.random(len(users)) < rate).astype(float)
    target = np.where(arms == 0, 0.5, 0.5 / 9)
    return clicks, target, np.full(len(users), 0.1), users, 0.1


def test_resampling_users_keeps_the_interval_honest_when_users_differ() -> None:
    by_row, by_user = 0, 0
    for seed in range(100):
        clicks, target, logging, users, truth = _clustered_log(seed)
        by_row += snips(clicks, target, logging, seed=seed, n_boot=400).contains(truth)
        by_user += snips(clicks, target, logging, seed=seed, n_boot=400, clusters=users).contains(
            truth
        )
    assert by_row < 85  # impressions as independent: intervals too narrow
    assert by_user >= 90  # nominal 95 of 100
