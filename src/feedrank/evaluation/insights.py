"""Seed 001's insights as tables: favourite content types and languages per gender and per age
band, most engaged posts per segment, engagement by hour of day. Vectorised group-bys over the
weighted engagement events."""

from __future__ import annotations

import polars as pl

from feedrank.features.groups import user_age_band
from feedrank.features.history import History
from feedrank.settings import Settings
from feedrank.views.site import SiteData


def _engagements(data: SiteData, settings: Settings) -> pl.DataFrame:
    ev = History(data, settings, []).events.filter(pl.col("engaged") > 0)
    users = data.users
    ucols = [pl.col("user_id")]
    band = user_age_band(users, settings.age_bands)
    if band is not None:
        ucols.append(band)
    ucols += [pl.col(c).cast(pl.String) for c in ("gender", "country") if c in users.columns]
    icols = [pl.col("item_id")] + [
        pl.col(c).cast(pl.String)
        for c in data.items.columns
        if c not in ("item_id", "created_at") and data.items.schema[c] == pl.String
    ]
    return ev.join(users.select(ucols), on="user_id", how="left").join(
        data.items.select(icols), on="item_id", how="left"
    )


def favourites(
    data: SiteData, settings: Settings, segment: str, attribute: str, top: int = 3
) -> pl.DataFrame:
    """Per segment value: the `top` attribute values by share of the segment's engagement weight."""
    ev = _engagements(data, settings)
    if segment not in ev.columns or attribute not in ev.columns:
        return pl.DataFrame()
    g = ev.group_by(segment, attribute).agg(weight=pl.col("weight").sum())
    g = g.with_columns(share=pl.col("weight") / pl.col("weight").sum().over(segment))
    return (
        g.sort([segment, "share"], descending=[False, True])
        .group_by(segment, maintain_order=True)
        .head(top)
        .with_columns(pl.col("share").round(3))
        .drop("weight")
    )


def top_items_per_segment(
    data: SiteData, settings: Settings, segment: str, top: int = 3
) -> pl.DataFrame:
    ev = _engagements(data, settings)
    if segment not in ev.columns:
        return pl.DataFrame()
    g = ev.group_by(segment, "item_id").agg(engagements=pl.len(), weight=pl.col("weight").sum())
    label = [c for c in ("title", "content_type") if c in ev.columns]
    g = g.join(data.items.select("item_id", *label), on="item_id", how="left")
    return (
        g.sort([segment, "weight"], descending=[False, True])
        .group_by(segment, maintain_order=True)
        .head(top)
    )


def engagement_by_hour(data: SiteData, settings: Settings) -> pl.DataFrame:
    """Engagements per hour of day (UTC), and per impression where impressions are logged."""
    ev = data.events.with_columns(
        hour=pl.col("timestamp").dt.hour(), engaged=settings.engaged_expr(data.types)
    )
    out = (
        ev.group_by("hour")
        .agg(
            engagements=pl.col("engaged").sum(),
            impressions=(pl.col("type") == "impression").sum(),
            sessions=(
                pl.col("type").is_in(settings.itemless_types) & (pl.col("type") != "logout")
            ).sum(),
        )
        .sort("hour")
    )
    return out.with_columns(
        engagement_rate=pl.when(pl.col("impressions") > 0)
        .then((pl.col("engagements") / pl.col("impressions")).round(4))
        .otherwise(None)
    )


def all_insights(data: SiteData, settings: Settings) -> dict[str, pl.DataFrame]:
    tables = {}
    for seg in ("gender", "age_band"):
        for attr in ("content_type", "lang"):
            tables[f"favourite {attr} per {seg}"] = favourites(data, settings, seg, attr)
        tables[f"most engaged posts per {seg}"] = top_items_per_segment(data, settings, seg)
    tables["engagement by hour of day (UTC)"] = engagement_by_hour(data, settings)
    return {k: v for k, v in tables.items() if not v.is_empty()}
