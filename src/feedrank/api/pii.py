"""PII reduction at ingestion, configured once (ApiSettings.pii): exact age becomes its band and
precise location is dropped before anything reaches the store."""

from __future__ import annotations

import polars as pl

from feedrank.api.settings import PiiPolicy
from feedrank.features.groups import age_band_expr


def reduce_users(
    users: pl.DataFrame, policy: PiiPolicy, age_bands: tuple[int, ...]
) -> pl.DataFrame:
    """Validated users (age already a number) -> age_band instead of age, no precise location."""
    if policy.age_to_band and "age" in users.columns:
        users = users.with_columns(
            age_band_expr(pl.col("age").cast(pl.Float64), list(age_bands)).alias("age_band")
        ).drop("age")
    drop = [c for c in users.columns if c.lower() in policy.drop_keys]
    return users.drop(drop)


def reduce_mapping(record: dict[str, object], policy: PiiPolicy) -> dict[str, object]:
    """An event's free-form context keys without precise location."""
    return {k: v for k, v in record.items() if k.lower() not in policy.drop_keys}
