"""Off-policy estimates: known answers on a simulated log, and the Open Bandit check."""

from __future__ import annotations

import numpy as np
import pytest

from feedrank.data.open_bandit import default_root, item_count, load_log
from feedrank.evaluation.offpolicy import compare, ips, observed_rate, snips


def _simulated_log(seed: int, n: int = 4000) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """10 arms with known CTRs; a skewed logging policy; the target is uniform random."""
    rng = np.random.default_rng(seed)
    ctr = np.linspace(0.02, 0.2, 10)
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


@pytest.mark.skipif(
    not default_root().exists(), reason="../shared/data/open-bandit is not beside the repo"
)
@pytest.mark.parametrize("campaign", ["men", "women"])
def test_uniform_policy_estimated_from_thompson_log_agrees_with_the_random_log(
    campaign: str,
) -> None:
    bts, random_log = load_log("bts", campaign), load_log("random", campaign)
    target = np.full(bts.height, 1 / item_count(campaign))
    observed = observed_rate(random_log["click"].to_numpy())
    for est in (
        ips(bts["click"].to_numpy(), target, bts["propensity_score"].to_numpy()),
        snips(bts["click"].to_numpy(), target, bts["propensity_score"].to_numpy()),
    ):
        verdict = compare(est, observed)
        # The random log's CTR lies in the estimate's interval and the two do not differ
        # significantly. (The estimate does not always lie in the random log's own interval:
        # see the closing note of issue 4 for the figures.)
        assert verdict["observed_in_estimate_ci"], (campaign, est, observed)
        assert verdict["difference_p_value"] > 0.05
