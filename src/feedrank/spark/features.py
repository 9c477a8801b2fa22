"""The GLM's training rows on Spark: labelled impressions and their point-in-time features.

The no-leakage rule is Spark's here: every counter an example reads is a window sum over its
key's events strictly before the example's time (`rangeBetween(unboundedPreceding, -1)` on
microseconds), the meaning of features.history's as-of join. What features make of those
counters (shares, rates, smoothing, context) is the local code itself: executors run
features.groups on each batch of rows with the counters attached (`Precomputed`), so the two
engines cannot drift apart (a parity test compares them value by value)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from feedrank.exceptions import FeedrankError
from feedrank.features.examples import EXAMPLE_COLUMNS
from feedrank.features.groups import FeatureGroups, FeatureSpec
from feedrank.features.history import T, exposure_prior, exposure_types, weighted
from feedrank.settings import IMPRESSION, Settings
from feedrank.spark.data import SparkSite, map_frames

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

EX = "__ex"  # an example's row id
US = "__us"  # a time in epoch microseconds (what the windows order by)


class Precomputed:
    """features.groups' Counters over rows that carry their as-of totals as columns (the
    lookups return those columns; the rows are the keys, in order)."""

    def __init__(self, rows: pl.DataFrame, users: pl.DataFrame, items: pl.DataFrame) -> None:
        self.rows, self.users, self.items = rows, users, items

    def user_counts(self, keys: pl.DataFrame) -> pl.DataFrame:
        cols = [c for c in self.rows.columns if c.startswith("n_") and c != "n_hour"]
        first = pl.from_epoch(self.rows["first_seen_us"], "us").dt.replace_time_zone("UTC")
        return self.rows.select(*cols, "w_total").with_columns(first_seen=first)

    def user_hour(self, keys: pl.DataFrame) -> pl.Series:
        return self.rows["n_hour"]

    def user_level(self, keys: pl.DataFrame, attr: str) -> pl.Series:
        return self.rows[f"w_level__{attr}"]

    def item_counts(self, keys: pl.DataFrame) -> pl.DataFrame:
        return self.rows.select(pl.col("^i_.*$"))

    def user_item(self, keys: pl.DataFrame) -> pl.DataFrame:
        return self.rows.select("ui_shown", "ui_engaged")


def weighted_events(site: SparkSite, settings: Settings, types: list[str]) -> DataFrame:
    """Events with weight, engaged (features.history.weighted, on the executors) and US."""
    from pyspark.sql import functions as F

    items = site.items

    def weigh(ev: pl.DataFrame) -> pl.DataFrame:
        return weighted(ev, items, settings, types).with_columns(pl.col(T).dt.epoch("us").alias(US))

    cols = site.events.select("user_id", "item_id", "type", "value", "timestamp")
    schema = (
        "user_id string, item_id string, type string, value double, timestamp timestamp, "
        f"weight double, engaged double, {US} long"
    )
    return map_frames(cols, weigh, schema).withColumn("hour", F.hour("timestamp"))


def labelled_impressions(site: SparkSite, events: DataFrame, settings: Settings) -> DataFrame:
    """features.examples.labelled_impressions on Spark: each engagement credits the latest
    impression of the same user and item at or before it, within the label window."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    types = site.types
    if IMPRESSION not in types:
        raise FeedrankError(
            "the GLM on Spark learns from impressions (each one an example); the events have "
            f"types {types} and no '{IMPRESSION}': fit it locally (sampled negatives)"
        )
    ev = site.events.where(F.col("item_id") != "").withColumn(US, F.unix_micros("timestamp"))
    imps = ev.where(F.col("type") == IMPRESSION).withColumn(EX, F.monotonically_increasing_id())
    engaged = events.where((F.col("item_id") != "") & (F.col("engaged") > 0))
    marks = imps.select("user_id", "item_id", US, EX, F.lit(0).alias("kind")).unionByName(
        engaged.select(
            "user_id", "item_id", US, F.lit(None).cast("long").alias(EX), F.lit(1).alias("kind")
        )
    )
    w = (
        Window.partitionBy("user_id", "item_id")
        .orderBy(US, "kind")
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    window_us = int(settings.label_window_seconds * 1_000_000)
    credited = (
        marks.select(
            "kind",
            US,
            F.last(EX, ignorenulls=True).over(w).alias("credit"),
            F.last(F.when(F.col(EX).isNotNull(), F.col(US)), ignorenulls=True).over(w).alias("at"),
        )
        .where((F.col("kind") == 1) & F.col("credit").isNotNull())
        .where(F.col(US) - F.col("at") <= window_us)
        .select(F.col("credit").alias(EX))
        .distinct()
        .withColumn("label", F.lit(1).cast("byte"))
    )
    return imps.join(credited, EX, "left").select(
        *EXAMPLE_COLUMNS[:-1], F.coalesce("label", F.lit(0).cast("byte")).alias("label"), EX, US
    )


def _before(
    examples: DataFrame, events: DataFrame, keys: list[str], sums: dict[str, Column]
) -> DataFrame:
    """EX and, per name in `sums`, the sum over events of the example's keys strictly before
    its time (0 when none): a window over the union of both, ordered by microseconds."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    ev = events.select(
        *keys, US, *[e.alias(n) for n, e in sums.items()], F.lit(None).cast("long").alias(EX)
    )
    ex = examples.select(*keys, US, *[F.lit(None).cast("double").alias(n) for n in sums], EX)
    w = Window.partitionBy(*keys).orderBy(US).rangeBetween(Window.unboundedPreceding, -1)
    out = ev.unionByName(ex).select(EX, *[F.sum(n).over(w).alias(n) for n in sums])
    return out.where(F.col(EX).isNotNull()).fillna(0.0, subset=list(sums))


def counters(
    examples: DataFrame, events: DataFrame, site: SparkSite, spec: FeatureSpec
) -> DataFrame:
    """The examples with every as-of total features.groups reads (Precomputed's columns)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    types = spec.types
    one = F.lit(1.0)
    is_type = {t: (F.col("type") == t).cast("double") for t in types}
    user = _before(
        examples,
        events,
        ["user_id"],
        {**{f"n_{t}": is_type[t] for t in types}, "n_events": one, "w_total": F.col("weight")},
    )
    w_first = Window.partitionBy("user_id").orderBy(US).rangeBetween(Window.unboundedPreceding, -1)
    first = (
        events.select("user_id", US, F.col(US).alias("__first"), F.lit(None).cast("long").alias(EX))
        .unionByName(examples.select("user_id", US, F.lit(None).cast("long").alias("__first"), EX))
        .select(EX, F.min("__first").over(w_first).alias("first_seen_us"))
        .where(F.col(EX).isNotNull())
    )
    ex_hour = examples.withColumn("hour", F.hour("timestamp"))
    hour = _before(ex_hour, events, ["user_id", "hour"], {"n_hour": one})
    item_ev = events.where(F.col("item_id") != "")
    item = _before(
        examples,
        item_ev,
        ["item_id"],
        {
            **{f"i_n_{t}": is_type[t] for t in types},
            "i_engaged": F.col("engaged"),
            "i_weight": F.col("weight"),
        },
    )
    pair = _before(
        examples,
        item_ev,
        ["user_id", "item_id"],
        {
            "ui_shown": (F.col("type") == IMPRESSION).cast("double"),
            "ui_engaged": (F.col("engaged") > 0).cast("double"),
        },
    )
    out = examples
    for part in (user, first, hour, item, pair):
        out = out.join(part, EX, "left")
    items = site.items
    for attr in spec.share_attributes:
        levels = _spark_frame(
            examples.sparkSession,
            items.select("item_id", pl.col(attr).cast(pl.String).alias("level")),
        )
        ev_level = item_ev.where(F.col("weight") > 0).join(levels, "item_id")
        ex_level = examples.join(levels, "item_id", "left")
        got = _before(
            ex_level, ev_level, ["user_id", "level"], {f"w_level__{attr}": F.col("weight")}
        )
        # a null level is no level: no as-of total (a null key matches nothing locally)
        nulls = ex_level.where(F.col("level").isNull()).select(EX)
        got = got.join(nulls, EX, "left_anti")
        out = out.join(got, EX, "left")
    return out.fillna(0.0)


def _spark_frame(spark: object, frame: pl.DataFrame) -> DataFrame:
    return spark.createDataFrame(frame.to_arrow())  # type: ignore[attr-defined,no-any-return]


def feature_spec(
    site: SparkSite, events: DataFrame, settings: Settings, types: list[str]
) -> FeatureSpec:
    """FeatureSpec.infer on Spark: the exposure prior counted on the cluster."""
    from pyspark.sql import functions as F

    item_ev = events.where(F.col("item_id") != "")
    row = item_ev.agg(
        F.sum("engaged").alias("engaged"),
        F.sum(F.col("type").isin(exposure_types(types)).cast("long")).alias("exposed"),
    ).first()
    prior = exposure_prior(float(row["engaged"] or 0.0), int(row["exposed"] or 0))  # type: ignore[index]
    return FeatureSpec.of(site.users, site.items, types, prior, settings)


def feature_rows(site: SparkSite, settings: Settings) -> tuple[FeatureSpec, DataFrame]:
    """The spec and the training rows: the raw feature columns of every labelled impression
    (features.groups' names), with `label`, computed on the cluster."""
    types = site.types
    events = weighted_events(site, settings, types).cache()
    spec = feature_spec(site, events, settings, types)
    examples = labelled_impressions(site, events, settings).cache()
    rows = counters(examples, events, site, spec)
    users, items = site.users, site.items

    def raw(part: pl.DataFrame) -> pl.DataFrame:
        part = part.with_columns(pl.col(T).dt.replace_time_zone("UTC"))
        groups = FeatureGroups(spec, Precomputed(part, users, items))
        return pl.concat([part.select("label"), groups.rows(part)], how="horizontal")

    sample = pl.from_arrow(rows.limit(1).toArrow())
    assert isinstance(sample, pl.DataFrame)
    if sample.is_empty():
        raise FeedrankError("the GLM needs training examples; the events hold no impression")
    schema = ", ".join(f"`{c}` {_ddl(t)}" for c, t in raw(sample).schema.items())
    return spec, map_frames(rows, raw, schema)


def _ddl(dtype: pl.DataType) -> str:
    if dtype == pl.String:
        return "string"
    if dtype == pl.Int8:
        return "byte"
    return "double"
