"""SiteData, the frames of a window: until (as of a time), without (a hold-out), and the pairs
the engagement rule picks out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
from polars.testing import assert_frame_equal

from feedrank.schema import validate_events, validate_items
from feedrank.settings import Settings
from feedrank.views.site import SiteData

T0 = datetime(2026, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)


def site(settings: Settings) -> SiteData:
    rows = [
        ("u1", "a", "impression", T0, 1.0),
        ("u1", "a", "click", T0 + H, 1.0),
        ("u1", "b", "impression", T0 + H, 1.0),
        ("u2", "a", "rating", T0 + 2 * H, 3.0),  # below the threshold: seen, not engaged
        ("u2", "b", "like", T0 + 2 * H, 1.0),
        ("u1", "a", "like", T0 + 3 * H, 1.0),
        ("u2", "", "login", T0 + 4 * H, 1.0),
        ("u2", "c", "rating", T0 + 5 * H, 5.0),
    ]
    events = pl.DataFrame(
        rows, schema=["user_id", "item_id", "type", "timestamp", "value"], orient="row"
    )
    items = pl.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "created_at": [T0 - H, None, T0 + 4 * H],  # b: unknown creation time
        }
    )
    return SiteData(
        pl.DataFrame({"user_id": ["u1", "u2"]}),
        validate_items(items).good,
        validate_events(events, settings).good.sort("timestamp", maintain_order=True),
    )


def pairs(frame: pl.DataFrame) -> set[tuple[str, str]]:
    return set(frame.select("user_id", "item_id").iter_rows())


def test_engaged_and_seen_pairs_follow_the_settings() -> None:
    s = Settings()
    data = site(s)
    assert pairs(data.engaged_pairs(s)) == {("u1", "a"), ("u2", "b"), ("u2", "c")}
    assert data.engagements(s)["type"].to_list() == ["click", "like", "like", "rating"]
    # the 3-star rating is known to u2 though it is no engagement; impressions are neither
    assert pairs(data.seen_pairs()) == {("u1", "a"), ("u2", "a"), ("u2", "b"), ("u2", "c")}
    lenient = Settings(rating_threshold=3.0)
    assert ("u2", "a") in pairs(data.engaged_pairs(lenient))
    assert data.types == ["click", "impression", "like", "login", "rating"]


def test_without_removes_every_event_of_the_pairs_and_nothing_else() -> None:
    s = Settings()
    data = site(s)
    ended = data.until(T0 + 6 * H)
    hidden = pl.DataFrame({"user_id": ["u1", "u2"], "item_id": ["a", "c"]})
    out = ended.without(hidden)
    # u1's impression, click and like of a are gone; u2's rating of a stays (another user's pair)
    assert out.events.height == data.events.height - 4
    assert not pairs(out.events) & pairs(hidden)
    assert_frame_equal(
        out.events,
        data.events.filter(
            ~((pl.col("user_id") == "u1") & (pl.col("item_id") == "a"))
            & ~((pl.col("user_id") == "u2") & (pl.col("item_id") == "c"))
        ),
    )  # time order kept
    assert out.users.equals(data.users) and out.items.equals(data.items)  # catalogue whole
    assert out.end == T0 + 6 * H
    assert pairs(out.engaged_pairs(s)) == {("u2", "b")}
    nothing = data.without(pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String}))
    assert_frame_equal(nothing.events, data.events)


def test_until_keeps_only_what_was_known_before() -> None:
    data = site(Settings())
    t = T0 + 2 * H
    before = data.until(t)
    assert before.end == t
    assert before.events["timestamp"].max() < t  # type: ignore[operator]
    assert before.events.height == 3  # the two events at t itself are not known before t
    # a existed; b's creation time is unknown (kept, not invented); c is created later
    assert before.items["item_id"].to_list() == ["a", "b"]
    assert before.items["created_at"].to_list() == [T0 - H, None]
    assert before.time_span == (T0, T0 + H)
    empty = data.until(T0)
    assert empty.events.is_empty() and empty.time_span == (None, None)
