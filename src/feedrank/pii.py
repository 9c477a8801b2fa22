"""Personal data kept out of the store, on every path in (HTTP and file import), configured once
(`PiiPolicy.from_env`): exact age becomes its band, precise-location and contact keys are
dropped (matched case-insensitively: `Age`, `EMAIL` and `Latitude` are caught), and values shaped
like an e-mail address or a phone number are dropped whatever their key, with a count."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

# Coarse location (country, region) is kept.
DEFAULT_PRECISE_LOCATION = (
    "latitude",
    "longitude",
    "lat",
    "lon",
    "lng",
    "geo",
    "location",
    "address",
    "street",
    "city",
    "postal_code",
    "postcode",
    "zip",
    "zip_code",
    "ip",
    "ip_address",
    "email",
    "e_mail",
    "phone",
    "phone_number",
    "mobile",
)
EMAIL = r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$"
# A leading + or separators, and 9 to 15 digits: '+1 555 123 4567', '(555) 123-4567'; not a
# date ('2026-01-05': 8 digits) nor a bare number (an order id).
PHONE = r"^(\+\d|\(?\d+\)?[\s.-])[\d\s().-]{6,20}$"


def age_band_expr(age: pl.Expr, edges: list[int]) -> pl.Expr:
    """Exact age is PII and not a feature; its band is. Edges (18, 25, ...) -> '<18', '18-24', ..."""
    labels = [f"<{edges[0]}"]
    labels += [f"{lo}-{hi - 1}" for lo, hi in itertools.pairwise(edges)]
    labels.append(f"{edges[-1]}+")
    expr: Any = pl.when(age.is_null()).then(pl.lit(None, pl.String))
    for edge, label in zip(edges, labels[:-1], strict=True):
        expr = expr.when(age < edge).then(pl.lit(label))
    return expr.otherwise(pl.lit(labels[-1]))


@dataclass(frozen=True)
class PiiPolicy:
    """What is kept of personal data: age as an age band (the edges of Settings.age_bands),
    no key of `drop_keys`, no e-mail- or phone-shaped value."""

    age_to_band: bool = True
    drop_keys: tuple[str, ...] = DEFAULT_PRECISE_LOCATION

    @classmethod
    def from_env(cls) -> PiiPolicy:
        """FEEDRANK_PII_DROP (comma-separated keys, replacing the default list),
        FEEDRANK_PII_AGE_BANDS=0 to keep exact ages."""
        drop = os.environ.get("FEEDRANK_PII_DROP")
        return cls(
            age_to_band=os.environ.get("FEEDRANK_PII_AGE_BANDS", "1") not in ("0", "false", "no"),
            drop_keys=(
                tuple(k.strip().lower() for k in drop.split(",") if k.strip())
                if drop is not None
                else DEFAULT_PRECISE_LOCATION
            ),
        )

    def reduce(self, df: pl.DataFrame, free: Sequence[str]) -> tuple[pl.DataFrame, int]:
        """The free-form columns (attributes, event context) of `df` without dropped keys and
        with contact-shaped text values nulled; the number of values dropped."""
        drop = [c for c in free if c.lower() in self.drop_keys]
        n = sum(df.height - df[c].null_count() for c in drop)
        df = df.drop(drop)
        text = [c for c in free if c not in drop and df.schema[c] == pl.String]
        if not text:
            return df, n
        shaped = {
            c: pl.col(c).str.strip_chars().str.contains(EMAIL)
            | pl.col(c).str.strip_chars().str.contains(PHONE)
            for c in text
        }
        n += int(df.select(pl.sum_horizontal(e.sum() for e in shaped.values())).item() or 0)
        df = df.with_columns(
            pl.when(e).then(None).otherwise(pl.col(c)).alias(c) for c, e in shaped.items()
        )
        return df, n

    def users(self, users: pl.DataFrame, age_bands: Sequence[int]) -> tuple[pl.DataFrame, int]:
        """Validated users (age already a number) -> age_band instead of age, reduced
        attributes; the number of values dropped."""
        if self.age_to_band and "age" in users.columns:
            users = users.with_columns(
                age_band_expr(pl.col("age").cast(pl.Float64), list(age_bands)).alias("age_band")
            ).drop("age")
        return self.reduce(users, [c for c in users.columns if c not in ("user_id", "age_band")])
