"""Cumulative history tables and the strict as-of join that reads them.

Every table holds, per key and per timestamp at which the key had events, running totals that
include that timestamp. Reading a table "as of t" takes the last row strictly before t, so an
example at t sees only events before t — the no-leakage rule lives here, in one place."""

from __future__ import annotations

from functools import cached_property

import polars as pl

from feedrank.config import Settings
from feedrank.data.site import SiteData

T = "timestamp"


def asof_before(
    keys: pl.DataFrame, table: pl.DataFrame, by: list[str], fill: float = 0.0
) -> pl.DataFrame:
    """For each row of `keys` (by-columns + timestamp), the table's running totals from events
    strictly before its timestamp; rows without history get `fill`. Row order is kept."""
    value_cols = [c for c in table.columns if c not in (*by, T)]
    if keys.is_empty():
        return keys.with_columns([pl.lit(fill, pl.Float64).alias(c) for c in value_cols])
    left = keys.with_row_index("__row").sort(T)
    right = table.sort(T)
    for c in by:  # join keys must agree in type (a level may be null)
        right = right.with_columns(pl.col(c).cast(left.schema[c]))
    out = left.join_asof(
        right, on=T, by=by, strategy="backward", allow_exact_matches=False, check_sortedness=False
    )
    numeric = [c for c in value_cols if out.schema[c].is_numeric()]
    return out.sort("__row").drop("__row").with_columns(pl.col(numeric).fill_null(fill))


def running(events: pl.DataFrame, by: list[str], sums: dict[str, pl.Expr]) -> pl.DataFrame:
    """Per key, running totals of `sums` at each distinct timestamp (ties aggregated first, so a
    later as-of read never splits events that happened at the same instant)."""
    per_instant = events.group_by([*by, T]).agg(**sums).sort(T)
    return per_instant.with_columns(pl.col(list(sums)).cum_sum().over(by)).sort(T)


class History:
    """The running-total tables of one SiteData, built lazily and reused across feature groups."""

    def __init__(self, data: SiteData, settings: Settings, item_attributes: list[str]) -> None:
        self.data = data
        self.settings = settings
        self.item_attributes = item_attributes

    @cached_property
    def events(self) -> pl.DataFrame:
        """Events with their engagement weight: type weight x item-attribute weight x value."""
        ev = self.data.events
        weights = pl.DataFrame(
            {
                "type": list(self.settings.type_weights),
                "__tw": list(self.settings.type_weights.values()),
            },
            schema={"type": pl.String, "__tw": pl.Float64},
        )
        ev = ev.join(weights, on="type", how="left")
        aw = self.settings.attribute_weights
        attr_w = pl.lit(1.0)
        if aw is not None and aw.attribute in self.data.items.columns:
            ev = ev.join(
                self.data.items.select(
                    "item_id", pl.col(aw.attribute).cast(pl.String).alias("__aw_key")
                ),
                on="item_id",
                how="left",
            )
            attr_w = pl.col("__aw_key").replace_strict(
                aw.values, default=aw.default, return_dtype=pl.Float64
            )
        ev = ev.with_columns(
            weight=pl.col("__tw").fill_null(0.0) * attr_w * pl.col("value"),
            engaged=pl.col("type").is_in(self.settings.engagement_types)
            & (pl.col("item_id") != ""),
        )
        return ev.drop([c for c in ev.columns if c.startswith("__")]).sort(T)

    @cached_property
    def types(self) -> list[str]:
        return sorted(self.events["type"].unique().to_list())

    @cached_property
    def user_counts(self) -> pl.DataFrame:
        sums = {f"n_{t}": (pl.col("type") == t).sum().cast(pl.Float64) for t in self.types}
        sums["n_events"] = pl.len().cast(pl.Float64)
        sums["w_total"] = (
            pl.when(pl.col("item_id") != "").then(pl.col("weight")).otherwise(0.0).sum()
        )
        table = running(self.events, ["user_id"], sums)
        first = self.events.group_by("user_id").agg(first_seen=pl.col(T).min())
        return table.join(first, on="user_id", how="left")

    def user_level(self, attr: str) -> pl.DataFrame:
        """Weighted engagement of each user with each level of an item attribute."""
        return self._user_level[attr]

    @cached_property
    def _user_level(self) -> dict[str, pl.DataFrame]:
        items = self.data.items
        ev = self.events.filter((pl.col("item_id") != "") & (pl.col("weight") > 0))
        out = {}
        for attr in self.item_attributes:
            joined = ev.join(
                items.select("item_id", pl.col(attr).cast(pl.String).alias("level")), on="item_id"
            )
            out[attr] = running(joined, ["user_id", "level"], {"w_level": pl.col("weight").sum()})
        return out

    @cached_property
    def item_counts(self) -> pl.DataFrame:
        ev = self.events.filter(pl.col("item_id") != "")
        has_impressions = bool((ev["type"] == "impression").any())
        # Exposure is what was shown; sites that log no impressions expose an item by its views.
        exposure_types = ["impression"] if has_impressions else ["view", "click"]
        return running(
            ev,
            ["item_id"],
            {
                "i_engaged": pl.col("engaged").sum().cast(pl.Float64),
                "i_weight": pl.col("weight").sum(),
                "i_exposed": pl.col("type").is_in(exposure_types).sum().cast(pl.Float64),
                "i_likes": (pl.col("type") == "like").sum().cast(pl.Float64),
                "i_views": pl.col("type").is_in(["view", "click"]).sum().cast(pl.Float64),
            },
        )

    @cached_property
    def user_item(self) -> pl.DataFrame:
        ev = self.events.filter(pl.col("item_id") != "")
        return running(
            ev,
            ["user_id", "item_id"],
            {
                "ui_shown": (pl.col("type") == "impression").sum().cast(pl.Float64),
                "ui_engaged": pl.col("engaged").sum().cast(pl.Float64),
            },
        )

    @cached_property
    def user_hour(self) -> pl.DataFrame:
        ev = self.events.with_columns(hour=pl.col(T).dt.hour().cast(pl.Int8))
        return running(ev, ["user_id", "hour"], {"n_hour": pl.len().cast(pl.Float64)})

    @cached_property
    def exposure_prior(self) -> float:
        """Engagements per exposure over the whole history: the prior of the smoothed CTR."""
        ic = self.item_counts
        if ic.is_empty():
            return 0.05
        last = ic.group_by("item_id").agg(pl.col("i_engaged").last(), pl.col("i_exposed").last())
        exposed = float(last["i_exposed"].sum())
        return (
            float(min(max(float(last["i_engaged"].sum()) / exposed, 1e-4), 0.5))
            if exposed
            else 0.05
        )
