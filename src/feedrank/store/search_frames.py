"""Engine documents back into the canonical Polars frames (feedrank.schema): the inverse of
the bulk actions in search_queries.py. Pure functions, so the round trip frame -> documents ->
JSON -> frame is unit-tested without a server."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import polars as pl

from feedrank.schema import EVENT_COLUMNS
from feedrank.store.base import RECOMMENDATION_COLUMNS
from feedrank.store.search_layout import EMBEDDING

EVENT_SOURCE = [*EVENT_COLUMNS, "ts_us", "seq"]
ITEM_SOURCE = ["item_id", "created_at_us", "attrs", EMBEDDING]
_UTC_US = pl.Datetime("us", "UTC")


def us(t: datetime) -> int:
    """Microseconds since the epoch, exactly (naive means UTC)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(pl.Series([t]).dt.epoch("us")[0])


def iso(value: float | None) -> str | None:
    if value is None:
        return None
    t = pl.Series([int(value)]).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")[0]
    return t.isoformat()


def _from_us(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def unnest_attrs(df: pl.DataFrame) -> pl.DataFrame:
    """The `attrs` object back into one column per attribute (types as the JSON gives them)."""
    if "attrs" not in df.columns:
        return df
    dtype = df.schema["attrs"]
    if isinstance(dtype, pl.Struct) and dtype.fields:
        return df.drop("attrs").with_columns(df["attrs"].struct.unnest())
    return df.drop("attrs")


# Field types of the attrs.* mappings (search_layout._ATTR_TEMPLATES) as frame columns.
_ATTR_DTYPES: dict[str, pl.DataType] = {
    "keyword": pl.String(),
    "double": pl.Float64(),
    "long": pl.Int64(),
    "boolean": pl.Boolean(),
}


def attr_schema(properties: dict[str, Any]) -> dict[str, pl.DataType]:
    """The attribute columns an index's mapping knows (`attrs.<name>`), with frame types."""
    attrs = (properties.get("attrs") or {}).get("properties") or {}
    return {
        name: _ATTR_DTYPES[field["type"]]
        for name, field in sorted(attrs.items())
        if field.get("type") in _ATTR_DTYPES
    }


def with_attrs(df: pl.DataFrame, attrs: dict[str, pl.DataType] | None) -> pl.DataFrame:
    """Every known attribute as a column (null where no document has it), as the SQLite store
    returns its columns even for no rows: the feature code looks attributes up by name."""
    if not attrs:
        return df
    return df.with_columns(
        [pl.lit(None, dtype).alias(c) for c, dtype in attrs.items() if c not in df.columns]
    )


def users_frame(
    sources: Sequence[dict[str, Any]], attrs: dict[str, pl.DataType] | None = None
) -> pl.DataFrame:
    if not sources:
        return with_attrs(pl.DataFrame(schema={"user_id": pl.String}), attrs)
    df = pl.from_dicts(list(sources), infer_schema_length=None)
    return with_attrs(unnest_attrs(df.select("user_id", "attrs")), attrs).sort("user_id")


def items_frame(
    sources: Sequence[dict[str, Any]], attrs: dict[str, pl.DataType] | None = None
) -> pl.DataFrame:
    if not sources:
        empty = pl.DataFrame(schema={"item_id": pl.String, "created_at": _UTC_US})
        return with_attrs(empty, attrs)
    df = pl.from_dicts(list(sources), infer_schema_length=None)
    if "created_at_us" not in df.columns:  # no item with a known creation time
        df = df.with_columns(created_at_us=pl.lit(None, pl.Int64))
    if "attrs" not in df.columns:
        df = df.with_columns(attrs=pl.lit(None))
    df = df.with_columns(created_at=_from_us("created_at_us"))
    vector = [df[EMBEDDING]] if EMBEDDING in df.columns else []
    out = with_attrs(unnest_attrs(df.select("item_id", "created_at", "attrs")), attrs)
    return out.with_columns(vector).sort("item_id")


def events_frame(sources: Sequence[dict[str, Any]], order: str = "time") -> pl.DataFrame:
    """Sorted by the exact microsecond time, then arrival order (`seq`); order="seq": by the
    change feed's numbers alone (the order events were written in)."""
    if not sources:
        return pl.DataFrame(schema=EVENT_COLUMNS)
    schema: dict[str, pl.DataType] = {
        **EVENT_COLUMNS,
        "timestamp": pl.Int64(),
        "ts_us": pl.Int64(),
        "seq": pl.Int64(),
    }
    df = pl.DataFrame(list(sources), schema=schema)
    return (
        df.sort(["ts_us", "seq"] if order == "time" else ["seq"])
        .with_columns(timestamp=_from_us("ts_us"))
        .select(list(EVENT_COLUMNS))
    )


def recommendations_frame(source: dict[str, Any] | None, k: int | None = None) -> pl.DataFrame:
    """A user's generation document (ranked arrays) as rows, best first."""
    if source is None:
        return pl.DataFrame(schema=RECOMMENDATION_COLUMNS)
    n = len(source["ranks"])
    df = pl.DataFrame(
        {
            "user_id": [source["user_id"]] * n,
            "rank": source["ranks"],
            "item_id": source["items"],
            "score": source["scores"],
            "source": source["sources"],
        },
        schema=RECOMMENDATION_COLUMNS,
    ).sort("rank")
    return df.head(k) if k is not None else df


def event_stats(aggs: dict[str, Any]) -> dict[str, Any]:
    """events, events_per_type, first_event, last_event from the stats aggregations
    (search_counts.stats_body)."""
    buckets = (aggs.get("types") or {}).get("buckets", [])
    per_type = {b["key"]: int(b["doc_count"]) for b in sorted(buckets, key=lambda b: b["key"])}
    return {
        "events": sum(per_type.values()),
        "events_per_type": per_type,
        "first_event": iso((aggs.get("first") or {}).get("value")),
        "last_event": iso((aggs.get("last") or {}).get("value")),
    }


__all__ = [
    "EVENT_SOURCE",
    "ITEM_SOURCE",
    "attr_schema",
    "event_stats",
    "events_frame",
    "iso",
    "items_frame",
    "recommendations_frame",
    "unnest_attrs",
    "us",
    "users_frame",
    "with_attrs",
]
