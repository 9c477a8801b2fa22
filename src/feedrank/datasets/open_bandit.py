"""The Open Bandit Dataset's small logs (ZOZOTOWN, Apache-2.0): impressions with the item shown,
its position (1-3), the click, the logging policy's propensity, user features and user-item
affinities, for two logging policies (uniform random, Bernoulli Thompson sampling) and the
campaigns men / women."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from feedrank.exceptions import NotFoundError

POLICIES = ("random", "bts")
CAMPAIGNS = ("men", "women")


def default_root() -> Path:
    """../shared/data/open-bandit beside the repository, when present."""
    return Path(__file__).resolve().parents[3].parent / "shared" / "data" / "open-bandit"


def load_log(policy: str, campaign: str, root: str | Path | None = None) -> pl.DataFrame:
    if policy not in POLICIES:
        raise NotFoundError(f"policy must be one of {list(POLICIES)}; got '{policy}'")
    if campaign not in CAMPAIGNS:
        raise NotFoundError(f"campaign must be one of {list(CAMPAIGNS)}; got '{campaign}'")
    path = Path(root or default_root()) / policy / campaign / f"{campaign}.csv"
    if not path.exists():
        raise NotFoundError(f"the Open Bandit log must exist at {path}")
    df = pl.read_csv(path, try_parse_dates=False).drop("")
    return df.with_columns(
        pl.col("timestamp").str.to_datetime(time_unit="us", time_zone="UTC"),
        pl.col("item_id").cast(pl.String),
    )


def item_count(campaign: str, root: str | Path | None = None, policy: str = "bts") -> int:
    """Items of the campaign, from the policy's own item_context.csv: the uniform-random policy
    chooses among them (propensity 1 / this). Read beside the log being reweighted, so an
    estimate from the Thompson-sampling log takes nothing from the random log it is checked
    against."""
    path = Path(root or default_root()) / policy / campaign / "item_context.csv"
    if not path.exists():
        raise NotFoundError(f"the Open Bandit item context must exist at {path}")
    return pl.read_csv(path)["item_id"].n_unique()
