"""A/B tests (seed 002's "parallel testing" of a primary model against alternatives).

Assignment is a pure function of (experiment, user): a SHA-256 of both, read as a number in
[0, 1), falls into a variant's share. No state to store, the same answer on every server, and
independent across experiments. Impressions served under an experiment carry
{"experiment": ..., "variant": ...} in their context, so the report needs nothing else."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl
from scipy import stats

from feedrank.config import Settings
from feedrank.evaluation.offpolicy import observed_rate
from feedrank.exceptions import ConfigError, NotFoundError
from feedrank.features.examples import labelled_impressions

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


def ctr_table(exp_imps: pl.DataFrame) -> pl.DataFrame:
    """Per variant: impressions, clicks, CTR with a Wilson 95% interval."""
    rows = []
    for variant, group in exp_imps.group_by("variant", maintain_order=True):
        est = observed_rate(group["label"].to_numpy())
        rows.append(
            {
                "variant": variant[0],
                "users": group["user_id"].n_unique(),
                "impressions": group.height,
                "clicks": int(group["label"].sum()),
                "ctr": est.value,
                "ctr_low": est.ci_low,
                "ctr_high": est.ci_high,
            }
        )
    return pl.DataFrame(rows).sort("variant")


def two_proportion_test(clicks_a: int, n_a: int, clicks_b: int, n_b: int) -> float:
    """Two-sided p-value of H0: equal CTRs (pooled z test)."""
    p = (clicks_a + clicks_b) / (n_a + n_b)
    se = np.sqrt(p * (1 - p) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 1.0
    z = (clicks_a / n_a - clicks_b / n_b) / se
    return float(2 * stats.norm.sf(abs(z)))


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

    def to_dict(self) -> dict[str, object]:
        return {
            "experiment": self.experiment,
            "ctr": self.ctr.to_dicts(),
            "returns": self.returns.to_dicts(),
            "p_value": self.p_value,
        }


def report(events: pl.DataFrame, experiment: str, settings: Settings) -> ABReport:
    imps = exposures(events, experiment, settings)
    ctr = ctr_table(imps)
    p = None
    if ctr.height >= 2:
        a, b = ctr.row(0, named=True), ctr.row(1, named=True)
        p = two_proportion_test(a["clicks"], a["impressions"], b["clicks"], b["impressions"])
    return ABReport(experiment, ctr, return_rates(events, imps), p)
