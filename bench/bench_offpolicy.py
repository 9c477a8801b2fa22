"""Off-policy estimates with 95% intervals on large logs: IPS and SNIPS of a target policy from
impressions with logged propensities.

The log: n impressions, CTR ~5%, logging propensities uniform in [0.005, 0.02], and a target
policy that puts probability 0.01 on the logged item on a share of rows (its support): 100% (a
softmax policy: every row carries weight) or 2% (a greedy top-k: only where the log happened to
show its choice).

feedrank: `feedrank.evaluation.offpolicy.ips` / `snips` with 2,000 resamples: the exact
bootstrap resampling only the rows that carry weight (Binomial count, then uniform picks), or
the normal (delta-method) interval once rows carrying weight x resamples pass 1e8.

Peer: `scipy.stats.bootstrap` (percentile, 2,000 resamples, vectorised in batches) on the same
per-row terms (IPS: the mean of w*r; SNIPS: the ratio of sums of w*r and w, paired): what a
user reaches for to put an interval on a mean or a ratio. Estimates must be equal and the
intervals' ends agree within 10% of their width.

    .venv/bin/python bench/bench_offpolicy.py [--small]
"""

from __future__ import annotations

import numpy as np
from _common import Row, check, parse_args, print_table, timed
from scipy import stats

from feedrank.evaluation.offpolicy import ips, snips

RESAMPLES = 2000


def make_log(n: int, support: float, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    clicks = (rng.random(n) < 0.05).astype(float)
    logging = rng.uniform(0.005, 0.02, n)
    target = np.where(rng.random(n) < support, 0.01, 0.0)
    return clicks, target, logging


def scipy_interval(statistic: object, data: tuple[np.ndarray, ...], paired: bool) -> np.ndarray:
    res = stats.bootstrap(
        data,
        statistic,  # type: ignore[arg-type]
        n_resamples=RESAMPLES,
        method="percentile",
        vectorized=True,
        paired=paired,
        batch=max(1, 20_000_000 // len(data[0])),
        random_state=0,
    )
    return np.array([res.confidence_interval.low, res.confidence_interval.high])


def agree(ours: object, theirs: np.ndarray) -> bool:
    lo, hi = ours.ci_low, ours.ci_high  # type: ignore[attr-defined]
    width = hi - lo
    return abs(lo - theirs[0]) < 0.1 * width and abs(hi - theirs[1]) < 0.1 * width


def compare(n: int, support: float) -> list[Row]:
    clicks, target, logging = make_log(n, support)
    w = target / logging
    label = f"n={n:,}, support {support:.0%}"
    rows = []
    t_ips, ours_ips = timed(lambda: ips(clicks, target, logging, n_boot=RESAMPLES))
    t_peer, peer_ips = timed(
        lambda: scipy_interval(lambda x, axis: x.mean(axis=axis), (w * clicks,), False)
    )
    check(agree(ours_ips, peer_ips), f"IPS interval, {label} ({ours_ips.interval})")
    what = f"IPS, {ours_ips.interval} CI"
    rows.append(Row(what, label, t_ips, "scipy bootstrap", t_peer, n, "rows/s"))
    t_sn, ours_sn = timed(lambda: snips(clicks, target, logging, n_boot=RESAMPLES))
    t_peer, peer_sn = timed(
        lambda: scipy_interval(
            lambda a, b, axis: a.sum(axis=axis) / b.sum(axis=axis), (w * clicks, w), True
        )
    )
    check(agree(ours_sn, peer_sn), f"SNIPS interval, {label} ({ours_sn.interval})")
    what = f"SNIPS, {ours_sn.interval} CI"
    rows.append(Row(what, label, t_sn, "scipy bootstrap", t_peer, n, "rows/s"))
    return rows


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    sizes = [20_000] if args.small else [100_000, 1_000_000]
    rows = [r for n in sizes for support in (1.0, 0.02) for r in compare(n, support)]
    print_table("off-policy estimates with intervals", rows)


if __name__ == "__main__":
    main()
