"""Point-in-time feature building for every impression of a >= 1M-event site.

feedrank: build_examples, then FeatureGroups(spec, History(data, settings, attrs)).rows(examples)
-- all ~30 raw feature columns, each read strictly before the example's timestamp (History is
the training side of features.history: as-of lookups; serving reads a Snapshot instead). The
subset below is timed alone too, through the same machinery: History's lookups user_counts,
item_counts and user_level (each a strict as-of join of a running-total table; they return the
whole table's columns, the old bench picked the subset's columns before the join).

Peer: plain pandas for a representative subset, strictly point in time (groupby + cumsum running
totals, then merge_asof(..., allow_exact_matches=False)):
- user_n_<type>: the user's count of each event type before the example;
- item_engaged, item_exposed: the item's engagements and exposures (impressions) before, with
  the settings' engagement rule applied in pandas from the scalar rule (Settings.weight_of,
  is_engagement_type, rating_threshold): by default every item event type with a weight > 0
  except impressions;
- the user's engagement weight (type weight x value, item events only) on the item's
  content_type before, the user's total weight before, and the smoothed share feedrank
  derives from them (user_share_content_type).

Checked: every subset column equal example by example (counts exactly, weights to 1e-12), and
the timed subset's counts equal the same columns of the full rows().

    .venv/bin/python bench/bench_features.py [--small]
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
from _common import Row, check, parse_args, print_table, timed

from feedrank.datasets.demo import generate_site
from feedrank.features.examples import build_examples
from feedrank.features.groups import SMOOTHING, FeatureGroups, FeatureSpec
from feedrank.features.history import History
from feedrank.schema import validate_events, validate_items, validate_users
from feedrank.settings import Settings
from feedrank.views.site import SiteData

T = "timestamp"
ATTR = "content_type"


def site(n_users: int) -> SiteData:
    demo = generate_site(n_users=n_users, n_items=1_000, seed=0)
    settings = Settings()
    users = validate_users(demo.users).good
    items = validate_items(demo.items).good
    events = validate_events(demo.events, settings).good.sort(T, maintain_order=True)
    return SiteData(users, items, events)


# -- feedrank ---------------------------------------------------------------------------------
def feedrank_full(data: SiteData, settings: Settings, spec: FeatureSpec, ex: pl.DataFrame):
    groups = FeatureGroups(spec, History(data, settings, spec.share_attributes))
    return groups.rows(ex)


def feedrank_subset(
    data: SiteData, settings: Settings, spec: FeatureSpec, ex: pl.DataFrame
) -> pl.DataFrame:
    """The subset's columns through feedrank's own History lookups (strict as-of reads)."""
    hist = History(data, settings, [ATTR])
    counts = [f"n_{t}" for t in spec.types]
    user = hist.user_counts(ex.select("user_id", T))
    item = hist.item_counts(ex.select("item_id", T))
    exposed = [pl.col(f"i_n_{t}") for t in spec.exposure_types if f"i_n_{t}" in item.columns]
    keys = ex.select("user_id", "item_id", T).join(
        data.items.select("item_id", pl.col(ATTR).cast(pl.String).alias("level")),
        on="item_id", how="left", maintain_order="left",
    )  # fmt: skip
    w_level = hist.user_level(keys, ATTR)
    return pl.concat(
        [
            user.select(*counts, "w_total"),
            item.select(
                item_engaged="i_engaged", item_exposed=pl.sum_horizontal(exposed or [pl.lit(0.0)])
            ),
            w_level.alias("w_level").to_frame(),
        ],
        how="horizontal",
    )


# -- the pandas peer --------------------------------------------------------------------------
def running(ev: pd.DataFrame, by: list[str], cols: list[str]) -> pd.DataFrame:
    """Per key, running totals of `cols` at each distinct timestamp (ties summed first)."""
    per_instant = ev.groupby([*by, T], sort=False, observed=True)[cols].sum().reset_index()
    per_instant = per_instant.sort_values(T, kind="stable")
    per_instant[cols] = per_instant.groupby(by, sort=False, observed=True)[cols].cumsum()
    return per_instant


def before(ex: pd.DataFrame, table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Strict as-of read: the running totals of the last instant before each example."""
    out = pd.merge_asof(
        ex[[T, *by]], table, on=T, by=by, allow_exact_matches=False, direction="backward"
    )
    return out.drop(columns=[T, *by]).fillna(0.0)


def pandas_subset(
    events: pd.DataFrame,
    items: pd.DataFrame,
    ex: pd.DataFrame,
    settings: Settings,
    types: list[str],
    exposure: list[str],
) -> pd.DataFrame:
    """`ex` is sorted by timestamp (merge_asof needs it); the result is in the same order."""
    ev = events[["user_id", "item_id", "type", T, "value"]].copy()
    has_item = ev["item_id"] != ""
    # The engagement rule, from the settings' scalar answers (weight_of, is_engagement_type,
    # the rating threshold), not from feedrank's Polars expressions.
    present = ev["type"].unique().tolist()
    rating = ev["type"].isin(settings.rating_types)
    factor = ev["value"].where(~rating, (ev["value"] >= settings.rating_threshold) * 1.0)
    weight = ev["type"].map({t: settings.weight_of(t) for t in present}) * factor
    weight = weight.where(has_item, 0.0)
    engaged = ev["type"].isin([t for t in present if settings.is_engagement_type(t)])
    engaged &= has_item & (~rating | (ev["value"] >= settings.rating_threshold))
    counts = [f"n_{t}" for t in types]
    for t, c in zip(types, counts, strict=True):
        ev[c] = (ev["type"] == t).astype(np.float64)
    ev["w_total"] = weight
    ev["i_engaged"] = engaged.astype(np.float64)
    ev["i_exposed"] = ev["type"].isin(exposure).astype(np.float64)
    ev["w_level"] = weight

    user = running(ev, ["user_id"], [*counts, "w_total"])
    item = running(ev[has_item], ["item_id"], ["i_engaged", "i_exposed"])
    weighted = ev[has_item & (weight > 0)].merge(items[["item_id", ATTR]], on="item_id")
    level = running(weighted, ["user_id", ATTR], ["w_level"])

    ex = ex.merge(items[["item_id", ATTR]], on="item_id", how="left")
    parts = [
        before(ex, user, ["user_id"]),
        before(ex, item, ["item_id"]).rename(
            columns={"i_engaged": "item_engaged", "i_exposed": "item_exposed"}
        ),
        before(ex, level, ["user_id", ATTR]),
    ]
    return pd.concat(parts, axis=1)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    settings = Settings()
    data = site(300 if args.small else 6_000)
    ex = build_examples(data, settings)
    spec = FeatureSpec.infer(data, settings)
    n_ev, n_ex = data.events.height, ex.height
    size = f"{n_ev:,} events, {n_ex:,} examples"
    print(f"input: {size}, {data.users.height:,} users, {data.items.height:,} items")

    # The peer starts from pandas frames (conversion not timed); examples sorted by time.
    pd_events = data.events.to_pandas()
    pd_items = data.items.to_pandas()
    pd_ex = ex.select("user_id", "item_id", T).to_pandas()
    assert pd_ex[T].is_monotonic_increasing

    repeat = 3  # cheap enough for best of 3 at the default size
    t_ex, _ = timed(lambda: build_examples(data, settings), repeat=repeat)
    t_full, rows = timed(lambda: feedrank_full(data, settings, spec, ex), repeat=repeat)
    t_sub, sub = timed(
        lambda: feedrank_subset(data, settings, spec, ex), repeat=repeat, warmup=True
    )
    t_pd, peer = timed(
        lambda: pandas_subset(
            pd_events, pd_items, pd_ex, settings, spec.types, spec.exposure_types
        ),
        repeat=repeat,
        warmup=True,
    )

    # -- agreement: the subset columns, example by example ---------------------------------
    same = all(
        np.array_equal(sub[a].to_numpy(), rows[b].to_numpy())
        for a, b in [
            *((f"n_{t}", f"user_n_{t}") for t in spec.types),
            ("item_engaged", "item_engaged"),
            ("item_exposed", "item_exposed"),
        ]
    )
    check(same, "the timed subset's counts equal the same columns of the full rows()")
    for t in spec.types:
        a, b = rows[f"user_n_{t}"].to_numpy(), peer[f"n_{t}"].to_numpy()
        check(np.array_equal(a, b), f"user_n_{t} equal on {n_ex:,} examples (sum {a.sum():,.0f})")
    for c in ("item_engaged", "item_exposed"):
        a, b = rows[c].to_numpy(), peer[c].to_numpy()
        check(np.array_equal(a, b), f"{c} equal (sum {a.sum():,.0f})")
    for c in ("w_total", "w_level"):
        a, b = sub[c].to_numpy(), peer[c].to_numpy()
        check(np.allclose(a, b, rtol=1e-12, atol=0), f"share input {c} equal (sum {a.sum():,.0f})")
    prior = 1.0 / spec.levels_per_attribute[ATTR]
    share = (peer["w_level"] + SMOOTHING * prior) / (peer["w_total"] + SMOOTHING)
    a = rows[f"user_share_{ATTR}"].to_numpy()
    check(np.allclose(a, share.to_numpy(), rtol=1e-12), f"user_share_{ATTR} equal")

    n_sub = len(spec.types) + 2 + 2
    print_table(
        "Point-in-time features (strictly before each example)",
        [
            Row(f"subset: {n_sub} columns", size, t_sub, "pandas groupby+merge_asof", t_pd,
                n_ex, "rows/s"),
            Row(f"full rows(): {rows.width} columns", size, t_full, "-", float("nan"), n_ex,
                "rows/s"),
            Row("build_examples (labels)", size, t_ex, "-", float("nan"), n_ex, "rows/s"),
        ],
    )  # fmt: skip
    print(f"\nsubset ratio (pandas / feedrank): {t_pd / t_sub:.2f}x; "
          f"feedrank full feature rows: {t_full:.2f} s for {rows.width} columns")  # fmt: skip


if __name__ == "__main__":
    main()
