"""A/B tests on simulated sites with known click rates."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from feedrank.config import Settings
from feedrank.exceptions import ConfigError
from feedrank.experiments.ab import Experiment, exposures, report, return_rates
from feedrank.schema import EVENT_COLUMNS

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def simulate(
    ctr: dict[str, float], seed: int, n_users: int = 2000, per_user: int = 3, days: int = 1
) -> pl.DataFrame:
    """Users split by the experiment; each sees `per_user` impressions and clicks with its
    variant's CTR a minute later."""
    exp = Experiment("home", {v: 1 / len(ctr) for v in ctr})
    rng = np.random.default_rng(seed)
    users = [f"u{seed}-{i}" for i in range(n_users)]
    variant = np.repeat(exp.assign(users), per_user)
    user = np.repeat(users, per_user)
    n = len(user)
    ts = [T0 + timedelta(minutes=int(m)) for m in rng.integers(0, 60 * 24 * days, n)]
    p = np.array([ctr[v] for v in variant])
    clicked = rng.random(n) < p
    item = rng.integers(0, 50, n).astype(str)
    imps = pl.DataFrame(
        {
            "user_id": user,
            "item_id": item,
            "type": "impression",
            "timestamp": ts,
            "context": [exp.context(v) for v in variant],
        }
    )
    clicks = imps.filter(pl.Series(clicked)).with_columns(
        type=pl.lit("click"),
        context=pl.lit(None, pl.String),
        timestamp=pl.col("timestamp") + timedelta(minutes=1),
    )
    ev = pl.concat([imps, clicks]).with_columns(
        event_id=pl.lit(None, pl.String),
        value=pl.lit(1.0),
        position=pl.lit(1, pl.Int32),
        device=pl.lit(None, pl.String),
    )
    return ev.select([pl.col(c).cast(t) for c, t in EVENT_COLUMNS.items()]).sort("timestamp")


def test_assignment_is_deterministic_balanced_and_independent_across_experiments() -> None:
    users = [f"user{i}" for i in range(20_000)]
    a = Experiment("x", {"control": 0.8, "treatment": 0.2})
    got = a.assign(users)
    assert got == a.assign(users)
    assert abs(got.count("treatment") / len(users) - 0.2) < 0.01
    b = Experiment("y", {"control": 0.8, "treatment": 0.2})
    both = sum(1 for g, h in zip(got, b.assign(users), strict=True) if g == h == "treatment")
    assert abs(both / len(users) - 0.04) < 0.006  # independent: 0.2 * 0.2


def test_shares_must_sum_to_one() -> None:
    with pytest.raises(ConfigError, match="sum to 1"):
        Experiment("x", {"a": 0.5, "b": 0.6})


def test_different_click_rates_are_told_apart() -> None:
    detected = 0
    for seed in range(10):
        rep = report(simulate({"a": 0.04, "b": 0.07}, seed), "home", Settings())
        ctr = dict(rep.ctr.select("variant", "ctr").iter_rows())
        assert ctr["b"] > ctr["a"]
        detected += rep.p_value is not None and rep.p_value < 0.05
    assert detected >= 9


def test_identical_variants_are_not_told_apart_beyond_the_nominal_rate() -> None:
    p_values = [
        report(simulate({"a": 0.05, "b": 0.05}, seed, n_users=600), "home", Settings()).p_value
        for seed in range(120)
    ]
    fpr = np.mean([p < 0.05 for p in p_values if p is not None])
    assert 0.01 <= fpr <= 0.11  # nominal 0.05; 120 repetitions
    assert np.mean(p_values) == pytest.approx(0.5, abs=0.08)  # p-values are uniform under H0


def test_the_report_looks_day_by_day_with_an_always_valid_p_value() -> None:
    rep = report(simulate({"a": 0.04, "b": 0.08}, 0, per_user=6, days=7), "home", Settings())
    assert rep.looks is not None and rep.looks.height == 7
    looks = rep.looks.to_dict(as_series=False)
    assert looks["difference"][-1] > 0 and looks["p_value"][-1] == pytest.approx(
        rep.p_value, rel=1e-9
    )
    assert all(x >= y for x, y in itertools.pairwise(looks["p_always_valid"]))
    assert rep.p_always_valid is not None and rep.p_always_valid < 0.05  # a real, large effect
    assert rep.to_dict()["p_always_valid"] == rep.p_always_valid


def test_ctr_counts_and_intervals_are_consistent() -> None:
    ev = simulate({"a": 0.1}, 0, n_users=500)
    rep = report(ev, "home", Settings())
    row = rep.ctr.row(0, named=True)
    assert (
        row["impressions"] == 1500 and row["clicks"] == ev.filter(pl.col("type") == "click").height
    )
    assert row["ctr_low"] < row["ctr"] < row["ctr_high"] and rep.p_value is None


def test_return_rates_by_hand() -> None:
    exp = Experiment("home", {"a": 1.0})
    rows = [
        ("u1", "impression", T0, exp.context("a")),
        ("u1", "login", T0 + timedelta(days=3), None),  # back within 7 days
        ("u2", "impression", T0, exp.context("a")),
        ("u2", "login", T0 + timedelta(days=10), None),  # back within 14, not 7
        ("u3", "impression", T0, exp.context("a")),  # never back
        ("u4", "login", T0 + timedelta(days=20), None),  # the log runs to day 20
    ]
    ev = (
        pl.DataFrame(rows, schema=["user_id", "type", "timestamp", "context"], orient="row")
        .with_columns(
            item_id=pl.when(pl.col("type") == "impression")
            .then(pl.lit("i1"))
            .otherwise(pl.lit("")),
            event_id=pl.lit(None, pl.String),
            value=pl.lit(1.0),
            position=pl.lit(None, pl.Int32),
            device=pl.lit(None, pl.String),
        )
        .select([pl.col(c).cast(t) for c, t in EVENT_COLUMNS.items()])
    )
    rates = return_rates(ev, exposures(ev, "home", Settings())).row(0, named=True)
    assert rates["exposed"] == 3
    assert rates["return_7d"] == pytest.approx(1 / 3) and rates["return_14d"] == pytest.approx(
        2 / 3
    )
