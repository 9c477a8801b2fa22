"""Seed 001's remaining insights on hand-made sites with a known answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from feedrank.evaluation.preferences import (
    by_login_hour,
    favourite_tags,
    per_user_favourites,
    preference_shift_by_age,
    tags_of,
)
from feedrank.schema import empty_events
from feedrank.settings import Settings
from feedrank.views.site import SiteData

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def _events(rows: list[tuple[str, str, str, datetime]]) -> pl.DataFrame:
    base = empty_events()
    frame = pl.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "type": [r[2] for r in rows],
            "timestamp": [r[3] for r in rows],
        },
        schema={
            "user_id": pl.String,
            "item_id": pl.String,
            "type": pl.String,
            "timestamp": pl.Datetime("us", "UTC"),
        },
    )
    out = pl.concat([base, frame], how="diagonal_relaxed").with_columns(value=pl.lit(1.0))
    return out.sort("timestamp")


def _site(events: pl.DataFrame, items: pl.DataFrame, users: pl.DataFrame) -> SiteData:
    return SiteData(
        users, items.with_columns(created_at=pl.lit(None, pl.Datetime("us", "UTC"))), events
    )


ITEMS = pl.DataFrame(
    {
        "item_id": ["a", "b", "c"],
        "content_type": ["video", "article", "article"],
        "lang": ["go", "rust", "python"],
        "tags": ["web, go", "systems|rust", ""],
    }
)
USERS = pl.DataFrame({"user_id": ["u1", "u2"], "age": [20, 50], "gender": ["female", "male"]})


def test_tags_split_on_any_separator_and_drop_empties() -> None:
    tags = tags_of(ITEMS)
    assert tags is not None
    got = sorted(map(tuple, tags.rows()))
    assert got == [("a", "go"), ("a", "web"), ("b", "rust"), ("b", "systems")]
    assert tags_of(ITEMS.drop("tags")) is None


def test_favourites_per_user_and_tags_by_gender() -> None:
    ev = _events(
        [
            ("u1", "a", "click", T0),
            ("u1", "a", "like", T0 + timedelta(minutes=1)),
            ("u1", "b", "click", T0 + timedelta(minutes=2)),
            ("u2", "b", "click", T0),
            ("u2", "c", "share", T0 + timedelta(minutes=1)),
        ]
    )
    site = _site(ev, ITEMS, USERS)
    fav = {r["user_id"]: r for r in per_user_favourites(site, Settings()).to_dicts()}
    assert fav["u1"]["favourite post"] == "a" and fav["u1"]["favourite lang"] == "go"
    assert fav["u2"]["favourite post"] == "c"  # a share weighs more than a click
    assert fav["u2"]["favourite content_type"] == "article"
    tags = favourite_tags(site, Settings(), "gender")
    female = tags.filter(pl.col("gender") == "female")
    assert set(female["tag"]) == {"go", "web", "rust", "systems"}
    assert female.sort("weight", descending=True)["tag"][0] in ("go", "web")  # a: click + like
    male = tags.filter(pl.col("gender") == "male")
    assert set(male["tag"]) == {"rust", "systems"}  # c has no tags


def test_preference_shift_is_the_total_variation_between_adjacent_bands() -> None:
    # u1 (18-24) engages only with go, u2 (45-54) half go, half rust: distance 0.5
    ev = _events(
        [
            ("u1", "a", "click", T0),
            ("u2", "a", "click", T0),
            ("u2", "b", "click", T0 + timedelta(minutes=1)),
        ]
    )
    shares, shifts = preference_shift_by_age(_site(ev, ITEMS, USERS), Settings(), "lang")
    assert shares["age_band"].to_list() == ["18-24", "45-54"]
    assert shifts.height == 1
    row = shifts.row(0, named=True)
    assert row["distance"] == pytest.approx(0.5)
    assert (row["grew most"], row["fell most"]) == ("rust", "go")


def test_engagements_are_credited_to_the_latest_login_before_them() -> None:
    night, noon = T0 + timedelta(hours=1), T0 + timedelta(hours=13)
    ev = _events(
        [
            ("u1", "", "login", night),
            ("u1", "a", "click", night + timedelta(minutes=5)),
            ("u1", "", "login", noon),
            ("u1", "b", "click", noon + timedelta(minutes=5)),
            ("u1", "c", "click", noon + timedelta(hours=2)),  # still the noon session
            ("u2", "c", "click", night),  # never logged in: not credited
        ]
    )
    posts, mix = by_login_hour(_site(ev, ITEMS, USERS), Settings())
    by_band = {h: set(g["item_id"]) for (h,), g in posts.group_by("hours")}
    assert by_band == {"00-05": {"a"}, "12-17": {"b", "c"}}
    assert mix.filter(pl.col("login_hour") == 13)["weight"].sum() == 2.0
