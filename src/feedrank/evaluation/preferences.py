"""The rest of seed 001's list, beside evaluation/insights.py: each user's favourites, favourite
tags per segment, the age at which preferences change, and which posts people engage with
depending on the hour they logged in. Vectorised group-bys over the weighted engagements."""

from __future__ import annotations

import polars as pl

from feedrank.evaluation.insights import _engagements
from feedrank.settings import Settings
from feedrank.views.site import SiteData

TAG_SEPARATORS = r"[,;|]"
LOGIN_TYPES = ("login", "visit")


def _top_per(frame: pl.DataFrame, by: list[str], what: str, top: int) -> pl.DataFrame:
    g = frame.group_by(*by, what).agg(weight=pl.col("weight").sum(), engagements=pl.len())
    g = g.with_columns(share=(pl.col("weight") / pl.col("weight").sum().over(by)).round(3))
    return (
        g.sort([*by, "weight", what], descending=[*([False] * len(by)), True, False])
        .group_by(by, maintain_order=True)
        .head(top)
    )


def per_user_favourites(
    data: SiteData, settings: Settings, user_ids: list[str] | None = None
) -> pl.DataFrame:
    """Per user: their favourite content type, language and post (most engagement weight),
    and how much they engaged. Users without engagements are absent."""
    ev = _engagements(data, settings)
    if user_ids is not None:
        ev = ev.filter(pl.col("user_id").is_in(user_ids))
    out = ev.group_by("user_id").agg(engagements=pl.len(), weight=pl.col("weight").sum())
    for attr in ("content_type", "lang", "item_id"):
        if attr not in ev.columns:
            continue
        best = _top_per(ev, ["user_id"], attr, 1).select(
            "user_id", pl.col(attr).alias(f"favourite {attr.replace('item_id', 'post')}")
        )
        out = out.join(best, on="user_id", how="left")
    return out.sort("weight", "user_id", descending=[True, False])


def tags_of(items: pl.DataFrame) -> pl.DataFrame | None:
    """item_id, tag: one row per tag of each item (a list column, or text split on , ; |);
    None when items carry no tags."""
    if "tags" not in items.columns:
        return None
    col = pl.col("tags")
    if items.schema["tags"] == pl.String:
        col = col.str.replace_all(TAG_SEPARATORS, ",").str.split(",")
    tags = (
        items.select("item_id", tag=col.cast(pl.List(pl.String)))
        .explode("tag")
        .with_columns(pl.col("tag").str.strip_chars().str.to_lowercase())
        .filter(pl.col("tag").is_not_null() & (pl.col("tag") != ""))
    )
    return tags if tags.height else None


def favourite_tags(
    data: SiteData, settings: Settings, segment: str = "gender", top: int = 5
) -> pl.DataFrame:
    """Per segment value: the `top` tags by share of the segment's engagement weight (an item's
    engagement counts for each of its tags). Empty without tags or without the segment."""
    tags = tags_of(data.items)
    ev = _engagements(data, settings)
    if tags is None or segment not in ev.columns:
        return pl.DataFrame()
    tagged = ev.select(segment, "item_id", "weight").join(tags, on="item_id")
    return _top_per(tagged.drop_nulls(segment), [segment], "tag", top)


def preference_shift_by_age(
    data: SiteData, settings: Settings, attribute: str = "lang"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(shares, shifts): each age band's share of engagement weight per value of `attribute`,
    and between adjacent bands the total variation distance of those shares (half the sum of
    absolute differences: 0 the same tastes, 1 nothing in common). The largest shift is the age
    at which preferences change most."""
    ev = _engagements(data, settings)
    if "age_band" not in ev.columns or attribute not in ev.columns:
        return pl.DataFrame(), pl.DataFrame()
    g = (
        ev.drop_nulls(["age_band", attribute])
        .group_by("age_band", attribute)
        .agg(weight=pl.col("weight").sum())
    )
    shares = g.with_columns(share=pl.col("weight") / pl.col("weight").sum().over("age_band")).sort(
        "age_band", attribute
    )
    wide = shares.pivot(on=attribute, index="age_band", values="share").fill_null(0.0)
    low = pl.col("age_band").str.extract(r"(\d+)").cast(pl.Int32, strict=False)
    wide = wide.sort(pl.when(pl.col("age_band").str.starts_with("<")).then(0).otherwise(low))
    values = [c for c in wide.columns if c != "age_band"]
    bands = wide["age_band"].to_list()
    m = wide.select(values).to_numpy()
    rows = [
        {
            "from": bands[i],
            "to": bands[i + 1],
            "distance": float(abs(m[i + 1] - m[i]).sum() / 2),
            "grew most": values[int((m[i + 1] - m[i]).argmax())],
            "fell most": values[int((m[i + 1] - m[i]).argmin())],
        }
        for i in range(len(bands) - 1)
    ]
    return wide, pl.DataFrame(rows)


def by_login_hour(
    data: SiteData, settings: Settings, top: int = 3
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(posts, mix): which posts people engage with depending on the hour (UTC) of the login
    that started their session. Each engagement is credited to the user's latest login before
    it (an as-of join per user). `posts`: the `top` posts per login-hour band (0-5, 6-11,
    12-17, 18-23); `mix`: engagement weight per login hour and content type."""
    ev = _engagements(data, settings)
    logins = data.events.filter(pl.col("type").is_in(LOGIN_TYPES)).select(
        "user_id", login=pl.col("timestamp")
    )
    if logins.is_empty() or ev.is_empty():
        return pl.DataFrame(), pl.DataFrame()
    joined = (
        ev.sort("timestamp")
        .join_asof(
            logins.sort("login"),
            left_on="timestamp",
            right_on="login",
            by="user_id",
            check_sortedness=False,  # both sorted by time above; polars cannot check per group
        )
        .drop_nulls("login")
        .with_columns(login_hour=pl.col("login").dt.hour())
        .with_columns(
            hours=pl.format(
                "{}-{}",
                ((pl.col("login_hour") // 6) * 6).cast(pl.String).str.zfill(2),
                ((pl.col("login_hour") // 6) * 6 + 5).cast(pl.String).str.zfill(2),
            )
        )
    )
    label = [c for c in ("title", "content_type") if c in joined.columns]
    posts = _top_per(joined, ["hours"], "item_id", top)
    if label:
        posts = posts.join(
            data.items.select("item_id", *label), on="item_id", how="left", maintain_order="left"
        )
    kind = "content_type" if "content_type" in joined.columns else "type"
    mix = (
        joined.group_by("login_hour", kind)
        .agg(weight=pl.col("weight").sum())
        .sort("login_hour", kind)
    )
    return posts.sort("hours", "weight", descending=[False, True]), mix.rename({kind: "kind"})
