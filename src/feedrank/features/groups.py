"""Feature groups. Each group is computed from its own keys plus a timestamp, by strict as-of
reads of the history tables, so the same function serves training rows (one per example) and
serving snapshots (one per user, per item, per user x level): one definition, two uses.

Scopes: user (user_id), item (item_id), level (user_id + the item's value of an attribute),
pair (user_id + item_id), context (timestamp, position, device)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import polars as pl

from feedrank.features.history import History, Snapshot, T, exposure_types
from feedrank.pii import age_band_expr
from feedrank.settings import Settings
from feedrank.views.site import SiteData


class Counters(Protocol):
    """What feature groups read: profiles, items, and as-of totals per key row (a History for
    training rows, a Snapshot at one time for serving, or totals a Spark job computed)."""

    users: pl.DataFrame
    items: pl.DataFrame

    def user_counts(self, keys: pl.DataFrame) -> pl.DataFrame: ...
    def user_hour(self, keys: pl.DataFrame) -> pl.Series: ...
    def user_level(self, keys: pl.DataFrame, attr: str) -> pl.Series: ...
    def item_counts(self, keys: pl.DataFrame) -> pl.DataFrame: ...
    def user_item(self, keys: pl.DataFrame) -> pl.DataFrame: ...


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
ROWS_CHUNK = 500_000  # examples per pass of rows(): the lookups' temporaries follow a chunk
MAX_POSITION = 20


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
    exposure_types: list[str] = field(default_factory=lambda: ["impression"])

    @classmethod
    def infer(cls, data: SiteData, settings: Settings) -> FeatureSpec:
        hist = History(data, settings, [])
        return cls.of(data.users, data.items, hist.types, hist.exposure_prior, settings)

    @classmethod
    def of(
        cls,
        users: pl.DataFrame,
        items: pl.DataFrame,
        types: list[str],
        exposure_prior: float,
        settings: Settings,
    ) -> FeatureSpec:
        """The spec of data with these users, items and event types (`infer`, or a Spark job
        that counted them on the cluster)."""
        ucat = [
            c
            for c in USER_CATEGORICALS
            if c in users.columns or (c == "age_band" and "age" in users.columns)
        ]
        icat = [c for c in ITEM_CATEGORICALS if c in items.columns]
        crosses = [(a, b) for a, b in DEFAULT_CROSSES if a in ucat and b in icat]
        levels = {a: max(1, items[a].n_unique()) for a in icat}
        return cls(
            user_categoricals=ucat,
            item_categoricals=icat,
            share_attributes=icat,
            types=types,
            crosses=crosses,
            levels_per_attribute=levels,
            exposure_prior=exposure_prior,
            age_bands=list(settings.age_bands),
            exposure_types=exposure_types(types),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FeatureSpec:
        d = {k: v for k, v in d.items() if k != "settings"}  # older files carried settings here
        d["crosses"] = [tuple(c) for c in d["crosses"]]
        return cls(**d)


def _smoothed(num: Any, den: Any, prior: float) -> Any:
    """(num + s * prior) / (den + s): works on expressions and series alike."""
    return (num + SMOOTHING * prior) / (den + SMOOTHING)


class FeatureGroups:
    """Computes raw feature columns for keys at their timestamps from one source of counters:
    a History (each key at its own time: training rows) or a Snapshot (every key at the
    snapshot's time: serving)."""

    def __init__(self, spec: FeatureSpec, counters: Counters) -> None:
        self.spec, self.counters = spec, counters

    # -- user ------------------------------------------------------------------------------------
    def user_profile(self, user_ids: pl.Series | None = None) -> pl.DataFrame:
        users = self.counters.users
        if user_ids is not None:
            users = users.filter(pl.col("user_id").is_in(user_ids.implode()))
        cols = [pl.col("user_id")]
        for c in self.spec.user_categoricals:
            band = user_age_band(users, self.spec.age_bands) if c == "age_band" else None
            if band is not None:
                cols.append(band)
            elif c in users.columns:
                cols.append(pl.col(c).cast(pl.String))
            else:
                cols.append(pl.lit(None, pl.String).alias(c))
        return users.select(cols).unique("user_id", keep="last")

    def user(self, keys: pl.DataFrame) -> pl.DataFrame:
        """keys: user_id, timestamp."""
        prof = keys.select("user_id").join(
            self.user_profile(keys["user_id"].unique()),
            on="user_id",
            how="left",
            maintain_order="left",
        )
        counts = self.counters.user_counts(keys.select("user_id", T))
        types = self.spec.types
        counts = counts.with_columns(
            pl.lit(0.0).alias(f"n_{t}") for t in types if f"n_{t}" not in counts.columns
        )
        hours = self.counters.user_hour(
            keys.select("user_id", T, hour=pl.col(T).dt.hour().cast(pl.Int8))
        )
        first_seen = counts["first_seen"]
        days = (
            ((keys[T] - first_seen).dt.total_seconds() / 86400.0)
            .clip(lower_bound=1.0)
            .fill_null(1.0)
        )
        views = sum((pl.col(f"n_{t}") for t in ("view", "click") if t in types), pl.lit(0.0))
        likes = pl.col("n_like") if "like" in types else pl.lit(0.0)
        feats = counts.with_columns(__days=days).select(
            *[pl.col(f"n_{t}").alias(f"user_n_{t}") for t in types],
            user_events_per_day=pl.when(pl.col("n_events") > 0)
            .then(pl.col("n_events") / pl.col("__days"))
            .otherwise(0.0),
            user_likes_per_view=_smoothed(likes, views, 0.1),
        )
        hour_share = _smoothed(hours, counts["n_events"], 1 / 24)
        return pl.concat(
            [prof.drop("user_id"), feats, pl.DataFrame({"user_hour_share": hour_share})],
            how="horizontal",
        )

    # -- item ------------------------------------------------------------------------------------
    def item(self, keys: pl.DataFrame) -> pl.DataFrame:
        """keys: item_id, timestamp."""
        items = self.counters.items.select(
            "item_id",
            "created_at",
            *[pl.col(c).cast(pl.String) for c in self.spec.item_categoricals],
        )
        prof = keys.select("item_id", T).join(
            items, on="item_id", how="left", maintain_order="left"
        )
        pop = self.counters.item_counts(keys.select("item_id", T))
        count = {
            t: (pl.col(f"i_n_{t}") if f"i_n_{t}" in pop.columns else pl.lit(0.0))
            for t in {*self.spec.exposure_types, "like", "view", "click"}
        }
        exposed = sum((count[t] for t in self.spec.exposure_types), pl.lit(0.0))
        age_days = ((prof[T] - prof["created_at"]).dt.total_seconds() / 86400.0).clip(
            lower_bound=0.0
        )
        return pl.concat(
            [
                prof.select(self.spec.item_categoricals),
                pop.select(
                    item_engaged=pl.col("i_engaged"),
                    item_exposed=exposed,
                    item_ctr=_smoothed(pl.col("i_engaged"), exposed, self.spec.exposure_prior),
                    item_likes_per_view=_smoothed(
                        count["like"], count["view"] + count["click"], 0.1
                    ),
                ),
                pl.DataFrame({"item_age_days": age_days}),
            ],
            how="horizontal",
        )

    def item_levels(self, item_ids: pl.Series, attr: str) -> pl.Series:
        lv = pl.DataFrame({"item_id": item_ids}).join(
            self.counters.items.select("item_id", pl.col(attr).cast(pl.String).alias("level")),
            on="item_id",
            how="left",
            maintain_order="left",
        )
        return lv["level"]

    # -- user x level of an item attribute -------------------------------------------------------
    def level(self, keys: pl.DataFrame, attr: str) -> pl.Series:
        """keys: user_id, level, timestamp -> the user's smoothed share of engagement weight on
        items whose `attr` is `level`."""
        got = self.counters.user_level(keys.select("user_id", "level", T), attr)
        total = self.counters.user_counts(keys.select("user_id", T))["w_total"]
        prior = 1.0 / self.spec.levels_per_attribute.get(attr, 1)
        share = _smoothed(got, total, prior)
        return share.alias(f"user_share_{attr}")

    def share_matrix(self, user_ids: Sequence[str], levels: pl.Series, attr: str) -> np.ndarray:
        """`level` for every (user, level) at a Snapshot's time, as a users x levels matrix:
        the same smoothed share, computed on arrays instead of a cross-joined frame."""
        counters = self.counters
        assert isinstance(counters, Snapshot), "a matrix of shares is a serving-time read"
        w = counters.level_matrix(user_ids, levels, attr)
        total = counters.weight_totals(user_ids)
        prior = 1.0 / self.spec.levels_per_attribute.get(attr, 1)
        return np.asarray(_smoothed(w, total[:, None], prior))

    # -- user x item -----------------------------------------------------------------------------
    def pair(self, keys: pl.DataFrame) -> pl.DataFrame:
        """keys: user_id, item_id, timestamp -> how often the user was shown / engaged with it."""
        got = self.counters.user_item(keys.select("user_id", "item_id", T))
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
        """Raw feature columns for examples (user_id, item_id, timestamp[, position, device]),
        a chunk of examples at a time: each lookup's joins and sorts would otherwise hold
        several copies of every example's keys at once (a training job's peak memory)."""
        if examples.height <= ROWS_CHUNK:
            return self._rows(examples)
        return pl.concat(  # the chunks as they are: a rechunk would copy every row once more
            [
                self._rows(examples.slice(start, ROWS_CHUNK))
                for start in range(0, examples.height, ROWS_CHUNK)
            ],
            rechunk=False,
        )

    def _rows(self, examples: pl.DataFrame) -> pl.DataFrame:
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
