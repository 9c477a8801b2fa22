"""A/B tests (seed 002's "parallel testing" of a primary model against alternatives).

Assignment is a pure function of (experiment, user): a SHA-256 of both, read as a number in
[0, 1), falls into a variant's share. No state to store, the same answer on every server, and
independent across experiments. Impressions served under an experiment carry
{"experiment": ..., "variant": ...} in their context, so the report needs nothing else.

The report's statistics treat users as the unit (they are what was randomised) and give an
always-valid p-value beside the fixed-horizon one: see experiments/inference.py."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl
from scipy import stats

from feedrank.exceptions import ConfigError, NotFoundError
from feedrank.experiments.inference import always_valid_p, difference_test, ratio_and_variance
from feedrank.features.examples import labelled_impressions
from feedrank.settings import Settings

RETURN_DAYS = (7, 14)


@dataclass(frozen=True)
class Experiment:
    name: str
    shares: Mapping[str, float]  # variant -> share of users (they sum to 1)

    def __post_init__(self) -> None:
        if not self.shares:
            raise ConfigError(f"experiment '{self.name}' must have at least one variant")
        bad = {v: s for v, s in self.shares.items() if s < 0}
        total = sum(self.shares.values())
        if bad or abs(total - 1.0) > 1e-9:
            raise ConfigError(
                f"variant shares of experiment '{self.name}' must be >= 0 and sum to 1; got {dict(self.shares)}"
            )

    def bucket(self, user_ids: Sequence[str]) -> np.ndarray:
        """A number in [0, 1) per user, from SHA-256(experiment + user)."""
        return np.array(
            [
                int.from_bytes(hashlib.sha256(f"{self.name}\x1f{u}".encode()).digest()[:8], "big")
                / 2**64
                for u in user_ids
            ]
        )

    def assign(self, user_ids: Sequence[str]) -> list[str]:
        names = list(self.shares)
        edges = np.cumsum([self.shares[n] for n in names])
        idx = np.minimum(
            np.searchsorted(edges, self.bucket(user_ids), side="right"), len(names) - 1
        )
        return [names[i] for i in idx]

    def context(self, variant: str) -> str:
        """The JSON context an impression served under this experiment carries."""
        return json.dumps({"experiment": self.name, "variant": variant})


def exposures(events: pl.DataFrame, experiment: str, settings: Settings) -> pl.DataFrame:
    """The experiment's impressions, labelled clicked or not, with their variant."""
    imps = labelled_impressions(events, settings).with_columns(
        experiment=pl.col("context").str.json_path_match("$.experiment"),
        variant=pl.col("context").str.json_path_match("$.variant"),
    )
    out = imps.filter(pl.col("experiment") == experiment)
    if out.is_empty():
        raise NotFoundError(f"no impressions carry experiment '{experiment}' in their context")
    return out


def _per_user(exp_imps: pl.DataFrame) -> pl.DataFrame:
    """variant, user_id, clicks, impressions: the unit that was randomised."""
    return exp_imps.group_by("variant", "user_id").agg(
        clicks=pl.col("label").cast(pl.Int64).sum(), impressions=pl.len()
    )


def _sums(per_user: pl.DataFrame, variant: str) -> tuple[np.ndarray, np.ndarray]:
    rows = per_user.filter(pl.col("variant") == variant)
    return rows["clicks"].to_numpy(), rows["impressions"].to_numpy()


def ctr_table(exp_imps: pl.DataFrame) -> pl.DataFrame:
    """Per variant: users, impressions, clicks, CTR with a 95% interval from per-user sums (the
    delta method: users, not impressions, are what was randomised)."""
    per_user = _per_user(exp_imps)
    z = stats.norm.ppf(0.975)
    rows = []
    for variant in sorted(per_user["variant"].unique().to_list()):
        clicks, impressions = _sums(per_user, variant)
        ctr, var = ratio_and_variance(clicks, impressions)
        half = z * float(np.sqrt(var)) if var == var else float("nan")
        rows.append(
            {
                "variant": variant,
                "users": len(clicks),
                "impressions": int(impressions.sum()),
                "clicks": int(clicks.sum()),
                "ctr": ctr,
                "ctr_low": max(ctr - half, 0.0),
                "ctr_high": min(ctr + half, 1.0),
            }
        )
    return pl.DataFrame(rows)


def sequential_p_values(
    exp_imps: pl.DataFrame, variants: tuple[str, str], effect: float
) -> pl.DataFrame:
    """One row per day of the experiment (a look at the data so far): the difference of CTRs
    (second minus first variant), its standard error, the fixed-horizon p-value — valid only if
    this day had been chosen beforehand — and the always-valid p-value, valid whenever one looks.
    `effect`: the relative difference the always-valid p-value is tuned to find soonest."""
    daily = exp_imps.with_columns(day=pl.col("timestamp").dt.truncate("1d"))
    days = daily["day"].unique().sort().to_list()
    pooled = float(exp_imps["label"].mean())  # type: ignore[arg-type]
    rows = []
    for day in days:
        per_user = _per_user(daily.filter(pl.col("day") <= day))
        diff, se, p = difference_test(_sums(per_user, variants[0]), _sums(per_user, variants[1]))
        rows.append({"day": day, "difference": diff, "std_error": se, "p_value": p})
    looks = pl.DataFrame(rows)
    valid = always_valid_p(
        looks["difference"].to_numpy(),
        looks["std_error"].fill_nan(None).fill_null(0.0).to_numpy() ** 2,
        tau=effect * pooled,
    )
    return looks.with_columns(p_always_valid=pl.Series(valid))


def return_rates(
    events: pl.DataFrame, exp_imps: pl.DataFrame, days: Sequence[int] = RETURN_DAYS
) -> pl.DataFrame:
    """Per variant, the share of exposed users seen again (any event) within N days after their
    first exposure — counted only over users whose N-day window has ended (churn = 1 - rate)."""
    first = exp_imps.group_by("user_id", "variant").agg(first=pl.col("timestamp").min())
    last_seen = events["timestamp"].max()
    later = events.select("user_id", "timestamp").join(first, on="user_id")
    out = first.group_by("variant").agg(exposed=pl.len()).sort("variant")
    for n in days:
        window = timedelta(days=n)
        back = (
            later.filter(
                (pl.col("timestamp") > pl.col("first") + timedelta(hours=1))
                & (pl.col("timestamp") <= pl.col("first") + window)
            )
            .select("user_id")
            .unique()
            .with_columns(returned=pl.lit(True))
        )
        eligible = first.filter(pl.col("first") + window <= last_seen).join(
            back, on="user_id", how="left"
        )
        rate = eligible.group_by("variant").agg(
            pl.col("returned").fill_null(False).mean().alias(f"return_{n}d")
        )
        out = out.join(rate, on="variant", how="left")
    return out


@dataclass(frozen=True)
class ABReport:
    experiment: str
    ctr: pl.DataFrame
    returns: pl.DataFrame
    p_value: float | None  # the two first variants' CTR difference; None with one variant
    looks: pl.DataFrame | None  # per day: difference, fixed and always-valid p-values

    @property
    def p_always_valid(self) -> float | None:
        return None if self.looks is None else float(self.looks["p_always_valid"][-1])

    def to_dict(self) -> dict[str, object]:
        return {
            "experiment": self.experiment,
            "ctr": self.ctr.to_dicts(),
            "returns": self.returns.to_dicts(),
            "p_value": self.p_value,
            "p_always_valid": self.p_always_valid,
            "looks": self.looks.to_dicts() if self.looks is not None else None,
        }


def report(
    events: pl.DataFrame, experiment: str, settings: Settings, effect: float = 0.2
) -> ABReport:
    imps = exposures(events, experiment, settings)
    ctr = ctr_table(imps)
    p, looks = None, None
    if ctr.height >= 2:
        a, b = ctr["variant"][0], ctr["variant"][1]
        per_user = _per_user(imps)
        p = difference_test(_sums(per_user, a), _sums(per_user, b))[2]
        looks = sequential_p_values(imps, (a, b), effect)
    return ABReport(experiment, ctr, return_rates(events, imps), p, looks)
