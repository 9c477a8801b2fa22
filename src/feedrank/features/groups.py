"""Feature groups. Each group is computed from its own keys plus a timestamp, by strict as-of
reads of the history tables, so the same function serves training rows (one per example) and
serving snapshots (one per user, per item, per user x level): one definition, two uses.

Scopes: user (user_id), item (item_id), level (user_id + the item's value of an attribute),
pair (user_id + item_id), context (timestamp, position, device)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

from feedrank.config import Settings
from feedrank.data.site import SiteData
from feedrank.features.history import History, T, asof_before

USER_CATEGORICALS = ("age_band", "gender", "country")
ITEM_CATEGORICALS = (
    "content_type",
    "lang",
    "language",
    "author",
    "category",
    "gated_asset_type",
    "business_unit",
)
DEFAULT_CROSSES = (
    ("gender", "content_type"),
    ("age_band", "content_type"),
    ("age_band", "lang"),
    ("country", "lang"),
)
SMOOTHING = 2.0  # pseudo-events in every smoothed share and ratio
MAX_POSITION = 20


def age_band_expr(age: pl.Expr, edges: list[int]) -> pl.Expr:
    """Exact age is PII and not a feature; its band is. Edges (18, 25, ...) -> '<18', '18-24', ..."""
    labels = [f"<{edges[0]}"]
    labels += [f"{lo}-{hi - 1}" for lo, hi in itertools.pairwise(edges)]
    labels.append(f"{edges[-1]}+")
    expr: Any = pl.when(age.is_null()).then(pl.lit(None, pl.String))
    for edge, label in zip(edges, labels[:-1], strict=True):
        expr = expr.when(age < edge).then(pl.lit(label))
    return expr.otherwise(pl.lit(labels[-1]))


def user_age_band(users: pl.DataFrame, edges: Sequence[int]) -> pl.Expr | None:
    """The users' age band: from `age` where known, else an `age_band` already stored (the API
    keeps only the band); None when the users have neither."""
    parts = []
    if "age" in users.columns:
        parts.append(age_band_expr(pl.col("age").cast(pl.Float64, strict=False), list(edges)))
    if "age_band" in users.columns:
        parts.append(pl.col("age_band").cast(pl.String))
    return pl.coalesce(parts).alias("age_band") if parts else None


@dataclass
class FeatureSpec:
    """What a model's features are; learned from the training data, saved with the model."""

    user_categoricals: list[str]
    item_categoricals: list[str]
    share_attributes: list[str]
    types: list[str]
    crosses: list[tuple[str, str]]
    levels_per_attribute: dict[str, int]
    exposure_prior: float
    age_bands: list[int]
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def infer(cls, data: SiteData, settings: Settings) -> FeatureSpec:
        users, items = data.users, data.items
        ucat = [
            c
            for c in USER_CATEGORICALS
            if c in users.columns or (c == "age_band" and "age" in users.columns)
        ]
        icat = [c for c in ITEM_CATEGORICALS if c in items.columns]
        crosses = [(a, b) for a, b in DEFAULT_CROSSES if a in ucat and b in icat]
        hist = History(data, settings, icat)
        levels = {a: max(1, items[a].n_unique()) for a in icat}
        return cls(
            user_categoricals=ucat,
            item_categoricals=icat,
            share_attributes=icat,
            types=hist.types,
            crosses=crosses,
            levels_per_attribute=levels,
            exposure_prior=hist.exposure_prior,
            age_bands=list(settings.age_bands),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FeatureSpec:
        d = dict(d)
        d["crosses"] = [tuple(c) for c in d["crosses"]]
        return cls(**d)


def _smoothed(num: Any, den: Any, prior: float) -> Any:
    """(num + s * prior) / (den + s): works on expressions and series alike."""
    return (num + SMOOTHING * prior) / (den + SMOOTHING)


class FeatureGroups:
    """Computes raw feature columns for keys at their timestamps from one History."""

    def __init__(self, spec: FeatureSpec, data: SiteData, history: History) -> None:
        self.spec, self.data, self.history = spec, data, history

    # -- user ------------------------------------------------------------------------------------
    def user_profile(self) -> pl.DataFrame:
        users = self.data.users
        cols = [pl.col("user_id")]
        for c in self.spec.user_categoricals:
            band = user_age_band(users, self.spec.age_bands) if c == "age_band" else None
            if band is not None:
                cols.append(band)
            elif c in users.columns:
                cols.append(pl.col(c).cast(pl.String))
            else:
                cols.append(pl.lit(None, pl.String).alias(c))
        return users.select(cols)

    def user(self, keys: pl.DataFrame) -> pl.DataFrame:
        """keys: user_id, timestamp."""
        prof = keys.select("user_id").join(
            self.user_profile(), on="user_id", how="left", maintain_order="left"
        )
        counts_table = self.history.user_counts
        wanted = [f"n_{t}" for t in self.spec.types]
        for c in wanted:
            if c not in counts_table.columns:
                counts_table = counts_table.with_columns(pl.lit(0.0).alias(c))
        counts = asof_before(
            keys.select("user_id", T),
            counts_table.select("user_id", T, *wanted, "n_events", "first_seen"),
            ["user_id"],
        )
        hour_keys = keys.select("user_id", T, hour=pl.col(T).dt.hour().cast(pl.Int8))
        hours = asof_before(hour_keys, self.history.user_hour, ["user_id", "hour"])
        days = ((pl.col(T) - pl.col("first_seen")).dt.total_seconds() / 86400.0).clip(
            lower_bound=1.0
        )
        views = sum(
            (pl.col(f"n_{t}") for t in ("view", "click") if t in self.spec.types), pl.lit(0.0)
        )
        likes = pl.col("n_like") if "like" in self.spec.types else pl.lit(0.0)
        feats = counts.select(
            *[pl.col(f"n_{t}").alias(f"user_n_{t}") for t in self.spec.types],
            user_events_per_day=pl.when(pl.col("n_events") > 0)
            .then(pl.col("n_events") / days)
            .otherwise(0.0),
            user_likes_per_view=_smoothed(likes, views, 0.1),
        )
        hour_share = _smoothed(hours["n_hour"].to_frame().to_series(), counts["n_events"], 1 / 24)
        return pl.concat(
            [prof.drop("user_id"), feats, pl.DataFrame({"user_hour_share": hour_share})],
            how="horizontal",
        )

    # -- item ------------------------------------------------------------------------------------
    def item(self, keys: pl.DataFrame) -> pl.DataFrame:
        """keys: item_id, timestamp."""
        items = self.data.items.select(
            "item_id",
            "created_at",
            *[pl.col(c).cast(pl.String) for c in self.spec.item_categoricals],
        )
        prof = keys.select("item_id", T).join(
            items, on="item_id", how="left", maintain_order="left"
        )
        pop = asof_before(keys.select("item_id", T), self.history.item_counts, ["item_id"])
        age_days = ((prof[T] - prof["created_at"]).dt.total_seconds() / 86400.0).clip(
            lower_bound=0.0
        )
        return pl.concat(
            [
                prof.select(self.spec.item_categoricals),
                pop.select(
                    item_engaged=pl.col("i_engaged"),
                    item_exposed=pl.col("i_exposed"),
                    item_ctr=_smoothed(
                        pl.col("i_engaged"), pl.col("i_exposed"), self.spec.exposure_prior
                    ),
                    item_likes_per_view=_smoothed(pl.col("i_likes"), pl.col("i_views"), 0.1),
                ),
                pl.DataFrame({"item_age_days": age_days}),
            ],
            how="horizontal",
        )

    def item_levels(self, item_ids: pl.Series, attr: str) -> pl.Series:
        lv = pl.DataFrame({"item_id": item_ids}).join(
            self.data.items.select("item_id", pl.col(attr).cast(pl.String).alias("level")),
            on="item_id",
            how="left",
            maintain_order="left",
        )
        return lv["level"]

    # -- user x level of an item attribute -------------------------------------------------------
    def level(self, keys: pl.DataFrame, attr: str) -> pl.Series:
        """keys: user_id, level, timestamp -> the user's smoothed share of engagement weight on
        items whose `attr` is `level`."""
        got = asof_before(
            keys.select("user_id", "level", T), self.history.user_level(attr), ["user_id", "level"]
        )
        total = asof_before(
            keys.select("user_id", T),
            self.history.user_counts.select("user_id", T, "w_total"),
            ["user_id"],
        )
        prior = 1.0 / self.spec.levels_per_attribute.get(attr, 1)
        share = _smoothed(got["w_level"].to_frame().to_series(), total["w_total"], prior)
        return pl.select(share.alias(f"user_share_{attr}")).to_series()

    # -- user x item -----------------------------------------------------------------------------
    def pair(self, keys: pl.DataFrame) -> pl.DataFrame:
        """keys: user_id, item_id, timestamp -> how often the user was shown / engaged with it."""
        got = asof_before(
            keys.select("user_id", "item_id", T), self.history.user_item, ["user_id", "item_id"]
        )
        return got.select(pair_shown=pl.col("ui_shown"), pair_engaged=pl.col("ui_engaged"))

    # -- context ---------------------------------------------------------------------------------
    @staticmethod
    def context(keys: pl.DataFrame) -> pl.DataFrame:
        """keys: timestamp, position (nullable), device (nullable)."""
        pos = (
            keys["position"]
            if "position" in keys.columns
            else pl.Series([None] * keys.height, dtype=pl.Int32)
        )
        dev = (
            keys["device"]
            if "device" in keys.columns
            else pl.Series([None] * keys.height, dtype=pl.String)
        )
        return pl.DataFrame(
            {
                "hour": keys[T].dt.hour().cast(pl.String),
                "weekday": keys[T].dt.weekday().cast(pl.String),
                "position": pl.Series(pos)
                .cast(pl.Int64)
                .clip(upper_bound=MAX_POSITION)
                .cast(pl.String),
                "device": pl.Series(dev).cast(pl.String),
            }
        )

    # -- all groups, row-wise ----------------------------------------------------------------------
    def rows(self, examples: pl.DataFrame) -> pl.DataFrame:
        """Raw feature columns for examples (user_id, item_id, timestamp[, position, device])."""
        parts = [
            self.user(examples.select("user_id", T)),
            self.item(examples.select("item_id", T)),
            self.pair(examples),
            self.context(examples),
        ]
        for attr in self.spec.share_attributes:
            keys = examples.select("user_id", T).with_columns(
                level=self.item_levels(examples["item_id"], attr)
            )
            parts.append(self.level(keys, attr).to_frame())
        return pl.concat(parts, how="horizontal")
