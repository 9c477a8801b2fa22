"""Training examples and their labels.

- With impressions: every impression is an example; it is positive when an engagement of the
  same user on the same item follows within the label window (each engagement credits the latest
  impression before it).
- Without impressions: engagements are positives; negatives are sampled (seeded) from items that
  existed at the time and that the user never engaged with."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl

from feedrank.features.history import T
from feedrank.settings import IMPRESSION, Settings
from feedrank.views.site import SiteData

EXAMPLE_COLUMNS = ("user_id", "item_id", T, "position", "device", "label")


def has_impressions(data: SiteData) -> bool:
    return bool((data.events["type"] == IMPRESSION).any())


def build_examples(
    data: SiteData,
    settings: Settings,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pl.DataFrame:
    """Examples with start <= timestamp < end, sorted by time. When the data's knowledge stops
    (data.end), examples whose label window crosses it are left out: they would be labelled
    without the events that decide them."""
    if has_impressions(data):
        # An impression from `start` on is labelled by engagements after it only, so the
        # events before `start` need not be read at all (a held-out week of a month: 1/4).
        events = data.events if start is None else data.events.filter(pl.col(T) >= start)
        ex = labelled_impressions(events, settings).select(*EXAMPLE_COLUMNS)
    else:
        ex = _sampled(data, settings)
    if data.end is not None and has_impressions(data):
        limit = data.end - timedelta(seconds=settings.label_window_seconds)
        end = limit if end is None else min(end, limit)
    if start is not None:
        ex = ex.filter(pl.col(T) >= start)
    if end is not None:
        ex = ex.filter(pl.col(T) < end)
    return ex.sort(T, "user_id", "item_id")


def labelled_impressions(events: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """Every impression with `label` = 1 when an engagement of the same user on the same item
    follows within the label window (each engagement credits the latest impression before it),
    and `engaged_value`, the mean value of the engagements it was credited with (else null)."""
    ev = events.filter(pl.col("item_id") != "")
    imps = ev.filter(pl.col("type") == IMPRESSION).with_row_index("__imp").sort(T)
    types = sorted(ev["type"].unique().to_list())
    eng = (
        ev.filter(settings.engaged_expr(types))
        .select("user_id", "item_id", T, pl.col("value").alias("engaged_value"))
        .sort(T)
    )
    credited = (
        eng.join_asof(
            imps.select("user_id", "item_id", T, "__imp"),
            on=T,
            by=["user_id", "item_id"],
            strategy="backward",
            tolerance=timedelta(seconds=settings.label_window_seconds),
            check_sortedness=False,
        )
        .drop_nulls("__imp")
        .group_by("__imp")
        .agg(pl.col("engaged_value").mean(), label=pl.lit(1, pl.Int8))
    )
    return (
        imps.join(credited, on="__imp", how="left", maintain_order="left")
        .with_columns(pl.col("label").fill_null(0))
        .drop("__imp")
    )


def _sampled(data: SiteData, settings: Settings) -> pl.DataFrame:
    eng = data.engagements(settings)
    pos = eng.select("user_id", "item_id", T, "position", "device", label=pl.lit(1, pl.Int8))
    items = available_since(data)
    if pos.is_empty() or items.is_empty():
        return pos
    rng = np.random.default_rng(settings.seed)
    created = items["since"].to_numpy()
    ts = pos[T].dt.epoch("us").to_numpy()
    available = np.searchsorted(created, ts, side="right")  # items created at or before t
    reps = settings.negative_ratio
    n_avail = np.repeat(available, reps)
    draw = np.floor(rng.random(n_avail.size) * n_avail).astype(np.int64)
    ok = n_avail > 0
    source_rows = np.repeat(np.arange(pos.height), reps)[ok]
    # Each negative keeps the user, time and context of the positive it was drawn for, so the
    # context cannot tell the label; only the item differs.
    neg = pos[source_rows].with_columns(
        item_id=pl.Series(items["item_id"].to_numpy()[draw[ok]], dtype=pl.String),
        label=pl.lit(0, pl.Int8),
    )
    neg = neg.join(data.seen_pairs(), on=["user_id", "item_id"], how="anti")
    return pl.concat([pos, neg])


def available_since(data: SiteData) -> pl.DataFrame:
    """item_id and `since` (epoch microseconds, sorted): when each item could first be shown —
    its created_at, else its first event (an item known only from events existed by then); items
    with neither are always available."""
    first = (
        data.events.filter(pl.col("item_id") != "").group_by("item_id").agg(first=pl.col(T).min())
    )
    items = data.items.select("item_id", "created_at")
    return (
        items.join(first, on="item_id", how="full", coalesce=True)
        .select(
            "item_id",
            since=pl.coalesce("created_at", "first")
            .dt.epoch("us")
            .fill_null(np.iinfo(np.int64).min),
        )
        .sort("since", "item_id")
    )
