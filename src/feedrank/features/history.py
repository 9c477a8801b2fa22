"""Counters of past events, read two ways with the same meaning.

- `History` (training): running totals per key and timestamp, read by a strict as-of join, so
  an example at t sees only events before t — the no-leakage rule lives here, in one place.
- `Snapshot` (serving): the same totals at one time `at`, aggregated from a view (a batch of
  users' histories and the catalogue's counters), read by key.

Both answer the same lookups with the same column names, so feature code (features.groups) is
written once. `weighted` applies the settings' engagement rule and item-attribute weights to
events (or to counters, weighting each row by its count)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cached_property
from itertools import repeat

import numpy as np
import polars as pl

from feedrank.settings import Settings
from feedrank.views.catalogue import Catalogue
from feedrank.views.site import SiteData

T = "timestamp"
USER_SUMS = ("n_events", "w_total")
ITEM_SUMS = ("i_engaged", "i_weight")


def weighted(
    frame: pl.DataFrame, items: pl.DataFrame, settings: Settings, types: list[str]
) -> pl.DataFrame:
    """Adds `weight` (type weight x value x item-attribute weight) and `engaged` (0/1) to
    events, or to counters (item_id, type, value, n), where both are multiplied by n."""
    n = pl.col("n") if "n" in frame.columns else pl.lit(1)
    aw = settings.attribute_weights
    attr_w = pl.lit(1.0)
    if aw is not None and aw.attribute in items.columns:
        frame = frame.join(
            items.select("item_id", pl.col(aw.attribute).cast(pl.String).alias("__aw")),
            on="item_id",
            how="left",
        )
        attr_w = pl.col("__aw").replace_strict(
            aw.values, default=aw.default, return_dtype=pl.Float64
        )
    out = frame.with_columns(
        weight=settings.weight_expr(types) * attr_w * n,
        engaged=settings.engaged_expr(types).cast(pl.Float64) * n,
    )
    return out.drop("__aw") if "__aw" in out.columns else out


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


def _user_sums(types: list[str]) -> dict[str, pl.Expr]:
    sums = {f"n_{t}": (pl.col("type") == t).sum().cast(pl.Float64) for t in types}
    sums["n_events"] = pl.len().cast(pl.Float64)
    sums["w_total"] = pl.col("weight").sum()
    return sums


def _item_sums(types: list[str], n: pl.Expr) -> dict[str, pl.Expr]:
    sums = {
        f"i_n_{t}": pl.when(pl.col("type") == t).then(n).otherwise(0).sum().cast(pl.Float64)
        for t in types
    }
    sums["i_engaged"] = pl.col("engaged").sum()
    sums["i_weight"] = pl.col("weight").sum()
    return sums


def _pair_sums() -> dict[str, pl.Expr]:
    return {
        "ui_shown": (pl.col("type") == "impression").sum().cast(pl.Float64),
        "ui_engaged": (pl.col("engaged") > 0).sum().cast(pl.Float64),
    }


def _levels(events: pl.DataFrame, items: pl.DataFrame, attr: str) -> pl.DataFrame:
    return events.filter((pl.col("item_id") != "") & (pl.col("weight") > 0)).join(
        items.select("item_id", pl.col(attr).cast(pl.String).alias("level")), on="item_id"
    )


class History:
    """The as-of counters of one SiteData (training rows, evaluation of probabilities), built
    lazily and reused across feature groups."""

    def __init__(self, data: SiteData, settings: Settings, item_attributes: list[str]) -> None:
        self.data = data
        self.settings = settings
        self.item_attributes = item_attributes
        self.users = data.users
        self.items = data.items

    @cached_property
    def types(self) -> list[str]:
        return self.data.types

    @cached_property
    def events(self) -> pl.DataFrame:
        """Events with their weight and engagement flag, in time order (only the columns the
        counters read: ids, device and context strings would double the copy)."""
        ev = self.data.events.select("user_id", "item_id", "type", T, "value")
        ev = weighted(ev, self.data.items, self.settings, self.types)
        return ev if ev[T].is_sorted() else ev.sort(T)

    @cached_property
    def _user_table(self) -> pl.DataFrame:
        table = running(self.events, ["user_id"], _user_sums(self.types))
        first = self.events.group_by("user_id").agg(first_seen=pl.col(T).min())
        return table.join(first, on="user_id", how="left")

    @cached_property
    def _hour_table(self) -> pl.DataFrame:
        ev = self.events.with_columns(hour=pl.col(T).dt.hour().cast(pl.Int8))
        return running(ev, ["user_id", "hour"], {"n_hour": pl.len().cast(pl.Float64)})

    @cached_property
    def _level_tables(self) -> dict[str, pl.DataFrame]:
        return {
            attr: running(
                _levels(self.events, self.items, attr),
                ["user_id", "level"],
                {"w_level": pl.col("weight").sum()},
            )
            for attr in self.item_attributes
        }

    @cached_property
    def _item_table(self) -> pl.DataFrame:
        ev = self.events.filter(pl.col("item_id") != "")
        return running(ev, ["item_id"], _item_sums(self.types, pl.lit(1.0)))

    @cached_property
    def _pair_table(self) -> pl.DataFrame:
        ev = self.events.filter(pl.col("item_id") != "")
        return running(ev, ["user_id", "item_id"], _pair_sums())

    # -- lookups: one row per key row, totals strictly before each key's timestamp -------------
    def user_counts(self, keys: pl.DataFrame) -> pl.DataFrame:
        return asof_before(keys.select("user_id", T), self._user_table, ["user_id"])

    def user_hour(self, keys: pl.DataFrame) -> pl.Series:
        return asof_before(
            keys.select("user_id", T, "hour"), self._hour_table, ["user_id", "hour"]
        )["n_hour"]

    def user_level(self, keys: pl.DataFrame, attr: str) -> pl.Series:
        got = asof_before(
            keys.select("user_id", "level", T), self._level_tables[attr], ["user_id", "level"]
        )
        return got["w_level"]

    def item_counts(self, keys: pl.DataFrame) -> pl.DataFrame:
        return asof_before(keys.select("item_id", T), self._item_table, ["item_id"])

    def user_item(self, keys: pl.DataFrame) -> pl.DataFrame:
        return asof_before(
            keys.select("user_id", "item_id", T), self._pair_table, ["user_id", "item_id"]
        )

    @cached_property
    def exposure_prior(self) -> float:
        """Engagements per exposure over the whole history: the prior of the smoothed CTR."""
        totals = self.events.filter(pl.col("item_id") != "")
        exposed = totals.filter(pl.col("type").is_in(exposure_types(self.types))).height
        return exposure_prior(float(totals["engaged"].sum()), exposed)


def exposure_prior(engaged: float, exposed: int) -> float:
    """The smoothed CTR's prior from the item events' engagements and exposures."""
    if not exposed:
        return 0.05
    return float(min(max(engaged / exposed, 1e-4), 0.5))


def exposure_types(types: list[str]) -> list[str]:
    """What counts as showing an item: impressions where the site logs them, else views."""
    return ["impression"] if "impression" in types else ["view", "click", "page_view"]


class Snapshot:
    """The same lookups as History, at one time `at`, from a batch of users' histories (events
    before `at`) and a catalogue's counters. Keys' timestamps must be `at`."""

    def __init__(
        self,
        histories: pl.DataFrame,
        profiles: pl.DataFrame,
        catalogue: Catalogue,
        settings: Settings,
        item_attributes: list[str],
        at: datetime,
        types: list[str],
    ) -> None:
        self.settings, self.at, self.types = settings, at, types
        self.users, self.items = profiles, catalogue.items
        self.item_attributes = item_attributes
        self.catalogue = catalogue
        self.events = weighted(histories.filter(pl.col(T) < at), catalogue.items, settings, types)
        self._level_tables: dict[str, pl.DataFrame] = {}
        self._totals: tuple[tuple[str, ...], np.ndarray] | None = None

    @cached_property
    def _user_table(self) -> pl.DataFrame:
        sums = _user_sums(self.types)
        return self.events.group_by("user_id").agg(**sums, first_seen=pl.col(T).min())

    def user_counts(self, keys: pl.DataFrame) -> pl.DataFrame:
        out = keys.select("user_id").join(
            self._user_table, on="user_id", how="left", maintain_order="left"
        )
        numeric = [c for c in out.columns if c not in ("user_id", "first_seen")]
        return out.with_columns(pl.col(numeric).fill_null(0.0))

    def user_hour(self, keys: pl.DataFrame) -> pl.Series:
        hour = self.at.hour
        table = (
            self.events.filter(pl.col(T).dt.hour() == hour)
            .group_by("user_id")
            .agg(n_hour=pl.len().cast(pl.Float64))
        )
        out = keys.select("user_id").join(table, on="user_id", how="left", maintain_order="left")
        return out["n_hour"].fill_null(0.0)

    def level_table(self, attr: str) -> pl.DataFrame:
        """user_id, level, w_level for every (user, level) with weight."""
        if attr not in self._level_tables:
            self._level_tables[attr] = (
                _levels(self.events, self.items, attr)
                .group_by("user_id", "level")
                .agg(w_level=pl.col("weight").sum())
            )
        return self._level_tables[attr]

    def level_matrix(self, user_ids: Sequence[str], levels: pl.Series, attr: str) -> np.ndarray:
        """w_level of every (user, level) as a users x levels matrix (0 without weight): what
        user_level gives for the cross product, without building it. Each event's level is
        read from the catalogue's item -> level arrays (kept per catalogue): a request reads
        its few events, not a join with every item."""
        out = np.zeros((len(user_ids), levels.len()))
        ev = self.events.filter((pl.col("item_id") != "") & (pl.col("weight") > 0))
        if ev.is_empty() or not len(user_ids):
            return out
        index, codes, known = item_levels(self.catalogue, attr)
        # catalogue level code -> column of `levels` (-1: a level not asked for)
        column = np.full(len(known) + 1, -1, dtype=np.int64)
        for j, v in enumerate(levels.cast(pl.String).to_list()):
            if v in known:
                column[known[v]] = j
        rows = _positions({u: r for r, u in enumerate(user_ids)}, ev["user_id"])
        items = _positions(index, ev["item_id"])  # -1: not in the catalogue (a join's miss)
        cols = np.where(items >= 0, column[codes[np.maximum(items, 0)]], -1)
        ok = (rows >= 0) & (cols >= 0)
        np.add.at(out, (rows[ok], cols[ok]), ev["weight"].to_numpy()[ok])
        return out

    def weight_totals(self, user_ids: Sequence[str]) -> np.ndarray:
        """w_total per user (0 without events), as user_counts gives it."""
        key = tuple(user_ids)
        if self._totals is None or self._totals[0] != key:
            keys = pl.DataFrame({"user_id": list(user_ids)}, schema={"user_id": pl.String})
            total = self.user_counts(keys.with_columns(pl.lit(self.at).alias(T)))["w_total"]
            self._totals = (key, total.to_numpy())
        return self._totals[1]

    def user_level(self, keys: pl.DataFrame, attr: str) -> pl.Series:
        out = keys.select("user_id", pl.col("level").cast(pl.String)).join(
            self.level_table(attr),
            on=["user_id", "level"],
            how="left",
            maintain_order="left",
            nulls_equal=True,
        )
        return out["w_level"].fill_null(0.0)

    def item_table(self) -> pl.DataFrame:
        return item_totals(self.catalogue, self.settings, self.types)

    def item_counts(self, keys: pl.DataFrame) -> pl.DataFrame:
        out = keys.select("item_id").join(
            self.item_table(), on="item_id", how="left", maintain_order="left"
        )
        return out.with_columns(pl.exclude("item_id").fill_null(0.0))

    @cached_property
    def _pair_table(self) -> pl.DataFrame:
        ev = self.events.filter(pl.col("item_id") != "")
        return ev.group_by("user_id", "item_id").agg(**_pair_sums())

    def pair_table(self) -> pl.DataFrame:
        """user_id, item_id, ui_shown, ui_engaged for every pair in the histories."""
        return self._pair_table

    def user_item(self, keys: pl.DataFrame) -> pl.DataFrame:
        out = keys.select("user_id", "item_id").join(
            self.pair_table(), on=["user_id", "item_id"], how="left", maintain_order="left"
        )
        return out.with_columns(pl.col("ui_shown", "ui_engaged").fill_null(0.0))


def item_totals(catalogue: Catalogue, settings: Settings, types: list[str]) -> pl.DataFrame:
    """Per item of the catalogue's counters: i_n_<type> for `types`, i_engaged, i_weight (once
    per catalogue, settings and types)."""

    def compute() -> pl.DataFrame:
        every = sorted(set(types) | set(catalogue.counts["type"].unique().to_list()))
        counts = weighted(catalogue.counts, catalogue.items, settings, every)
        return counts.group_by("item_id").agg(**_item_sums(types, pl.col("n")))

    return catalogue.memo(("item_totals", tuple(types), repr(settings)), compute)


def item_levels(
    catalogue: Catalogue, attr: str
) -> tuple[dict[str, int], np.ndarray, dict[str | None, int]]:
    """What `_levels` joins, as arrays kept per catalogue: item id -> row, each row's level
    code, and level (as text; None: no value) -> code."""

    def index() -> dict[str, int]:
        return {i: r for r, i in enumerate(catalogue.items["item_id"].to_list())}

    def codes() -> tuple[np.ndarray, dict[str | None, int]]:
        values = catalogue.items[attr].cast(pl.String)
        known = {v: c for c, v in enumerate(values.unique(maintain_order=True).to_list())}
        return _positions(known, values), known  # type: ignore[arg-type]

    by_level = catalogue.memo_items(("item levels", attr), codes)
    return catalogue.memo_items("item rows", index), by_level[0], by_level[1]


def _positions(index: dict[str, int], values: pl.Series) -> np.ndarray:
    """index[value] for each value (-1: not in it), by one C-level pass of dict lookups."""
    get = index.get
    return np.fromiter(map(get, values.to_list(), repeat(-1)), np.int64, values.len())
