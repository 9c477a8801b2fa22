"""The data of a Spark job: events as a Spark DataFrame (read from Parquet, where a cluster keeps
them), users and items as Polars frames on the driver (a catalogue and its profiles are small
beside the events).

Row-local rules (the settings' weights, the engagement rule) are not written twice: executors
run the local Polars code on Arrow batches (`map_frames`), and Spark does what needs the whole
table (shuffles, sums, windows)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa

from feedrank.export import DAY, export
from feedrank.features.history import weighted
from feedrank.models.matrix import IdMap
from feedrank.schema import EVENT_COLUMNS
from feedrank.settings import Settings
from feedrank.store.base import Store

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


@dataclass(frozen=True)
class SparkSite:
    """SiteData's counterpart: the same users and items, the events on the cluster."""

    events: DataFrame
    users: pl.DataFrame
    items: pl.DataFrame

    @property
    def types(self) -> list[str]:
        return sorted(r[0] for r in self.events.select("type").distinct().collect())

    @property
    def time_span(self) -> tuple[datetime | None, datetime | None]:
        from pyspark.sql import functions as F

        lo, hi = self.events.agg(F.min("timestamp"), F.max("timestamp")).first()  # type: ignore[misc]
        return _utc(lo), _utc(hi)


def _utc(t: datetime | None) -> datetime | None:
    """Spark hands back naive datetimes in the session's zone (UTC, session.py)."""
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def read_events(spark: SparkSession, directory: str | Path) -> DataFrame:
    """Events from Parquet (an export's directory, or any files with the canonical columns)."""
    from pyspark.sql import functions as F

    df = spark.read.parquet(str(directory))
    cols = [
        F.col(c)
        if c in df.columns
        else F.lit(1.0 if c == "value" else "" if c == "item_id" else None)
        for c in EVENT_COLUMNS
    ]
    return df.select(*[c.alias(n) for c, n in zip(cols, EVENT_COLUMNS, strict=True)]).drop(DAY)


@contextmanager
def site_on_spark(
    spark: SparkSession, store: Store, events: str | Path | None = None
) -> Iterator[SparkSite]:
    """The store's users and items with events from `events` (Parquet), or from the store
    itself, exported first to a temporary directory (one machine, or a directory the cluster
    shares: FEEDRANK_SPARK_TMP)."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("FEEDRANK_SPARK_TMP")) as tmp:
        if events is None:
            events = Path(tmp) / "interactions"
            export(store, "interactions", events)
        yield SparkSite(read_events(spark, events), store.users(), store.items())


def map_frames(df: DataFrame, fn: Callable[[pl.DataFrame], pl.DataFrame], schema: str) -> DataFrame:
    """Apply a Polars function to each Arrow batch of `df` on the executors."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for b in batches:
            out = fn(pl.from_arrow(pa.Table.from_batches([b])))  # type: ignore[arg-type]
            yield from out.to_arrow().to_batches()

    return df.mapInArrow(run, schema)


def weighted_pairs(site: SparkSite, settings: Settings) -> DataFrame:
    """user_id, item_id, weight: the confidence of each pair (features.history.weighted, summed),
    as the local models.matrix.weighted_pairs + to_csr compute it."""
    from pyspark.sql import functions as F

    types, items = site.types, site.items

    def weigh(ev: pl.DataFrame) -> pl.DataFrame:
        out = weighted(ev.filter(pl.col("item_id") != ""), items, settings, types)
        return out.filter(pl.col("weight") > 0).select("user_id", "item_id", "weight")

    ev = site.events.select("user_id", "item_id", "type", "value")
    pairs = map_frames(ev, weigh, "user_id string, item_id string, weight double")
    return pairs.groupBy("user_id", "item_id").agg(F.sum("weight").alias("weight"))


def id_frame(spark: SparkSession, ids: IdMap, column: str) -> DataFrame:
    """An IdMap as a Spark frame (column, `column`_idx): the local model's axis, on the cluster."""
    table = ids.frame.rename({"id": column, "idx": f"{column}_idx"}).to_arrow()
    return spark.createDataFrame(table)
