"""The pure parts of the search store's change feed, counters, settings and windowed scans: the
watermark read from the feed document, request bodies, bucket parsing, the plan of time windows.
No server here; tests/contract/test_search_feed.py runs them against the real node."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import polars as pl
import pytest

from feedrank.exceptions import StoreError
from feedrank.store.base import ITEM_COUNT_COLUMNS, USER_COUNT_COLUMNS, Watermark
from feedrank.store.search_connect import parse_url
from feedrank.store.search_counts import (
    composite_body,
    counted,
    item_counts_frame,
    seen_body,
    stats_body,
    user_counts_frame,
)
from feedrank.store.search_feed import (
    PUBLISH_SCRIPT,
    RESERVE_SCRIPT,
    horizon,
    move_body,
    new_feed_doc,
    seq_range,
    watermark_of,
)
from feedrank.store.search_layout import Names, feed_mapping, items_mapping, settings_mapping
from feedrank.store.search_queries import candidate_query, item_actions
from feedrank.store.search_settings import settings_doc, version_id
from feedrank.store.search_windows import Rechunk, histogram_body, plan_windows, within


def test_the_watermark_stops_below_the_oldest_pending_block() -> None:
    assert watermark_of(None) == Watermark(0, 0, 0)
    assert watermark_of(new_feed_doc()) == Watermark(0, 0, 0)
    doc = {"next": 40, "pending": [], "erasures": [], "erased": 7}
    assert watermark_of(doc) == Watermark(40, 40, 7)
    # a slow block [11, 20] and a fast one [31, 40] still pending: nothing past 10 is delivered
    doc["pending"] = [{"lo": 31, "hi": 40, "at": 2}, {"lo": 11, "hi": 20, "at": 1}]
    assert horizon(doc) == 10
    # an erasure published above the horizon counts once the horizon reaches it
    doc["erasures"] = [25]
    assert watermark_of(doc) == Watermark(10, 10, 7)
    doc["pending"] = [{"lo": 31, "hi": 40, "at": 2}]
    assert watermark_of(doc) == Watermark(30, 30, 25)


def test_scripts_keep_the_document_as_its_mapping_says() -> None:
    fields = set(feed_mapping()["properties"])
    for script in (RESERVE_SCRIPT, PUBLISH_SCRIPT):
        assert set(re.findall(r"\bs\.(\w+)", script)) <= fields
    assert "ctx._now" in RESERVE_SCRIPT  # leases are judged by the server's clock
    assert set(re.findall(r"params\.(\w+)", RESERVE_SCRIPT)) == {"k", "lease_ms"}
    assert set(re.findall(r"params\.(\w+)", PUBLISH_SCRIPT)) == {"lo", "hi", "erasure"}
    assert "ctx.op = 'noop'" in PUBLISH_SCRIPT  # an expired block: the writer moves it
    assert set(new_feed_doc()) == fields


def test_reads_by_number_are_half_open_and_a_block_moves_whole() -> None:
    assert seq_range(3, 9) == {"range": {"seq": {"gt": 3, "lte": 9}}}
    body = move_body(11, 20, 30)
    assert body["query"] == {"range": {"seq": {"gte": 11, "lte": 20}}}
    assert body["script"]["params"] == {"shift": 30}
    assert "longValue()" in body["script"]["source"]  # no int overflow on big numbers


def test_counters_count_published_events_only() -> None:
    q = counted(42, {"terms": {"user_id": ["u1"]}})
    assert q["bool"]["filter"][0] == {"range": {"seq": {"lte": 42}}}
    body = composite_body(q, ["item_id", "type", "value"], after={"item_id": "a"}, size=10)
    comp = body["aggs"]["c"]["composite"]
    assert [next(iter(s)) for s in comp["sources"]] == ["item_id", "type", "value"]
    assert comp["after"] == {"item_id": "a"} and comp["size"] == 10 and body["size"] == 0
    assert stats_body(5)["query"] == counted(5)


def test_buckets_become_the_sqlite_stores_counter_frames() -> None:
    t = datetime(2024, 3, 1, 12, 0, 0, 123457, tzinfo=UTC)
    t_us = int(pl.Series([t]).dt.epoch("us")[0])
    items = item_counts_frame(
        [{"key": {"item_id": "007", "type": "rating", "value": 4.0}, "doc_count": 3}]
    )
    assert items.schema == pl.Schema(ITEM_COUNT_COLUMNS)
    assert items.rows() == [("007", "rating", 4.0, 3)]
    bucket = {
        "key": {"user_id": "0042", "type": "click", "value": 1.0},
        "doc_count": 2,
        "first": {"value": float(t_us)},
        "last": {"value": float(t_us + 1)},
    }
    users = user_counts_frame([bucket])
    assert users.schema == pl.Schema(USER_COUNT_COLUMNS)
    assert users["first_ts"].to_list() == [t] and users["n"].to_list() == [2]
    assert item_counts_frame([]).schema == pl.Schema(ITEM_COUNT_COLUMNS)
    assert user_counts_frame([]).schema == pl.Schema(USER_COUNT_COLUMNS)


def test_seen_items_are_one_search_without_impressions_with_the_newest_of_all() -> None:
    body = seen_body("u1")
    assert body["size"] == 0
    must_not = body["query"]["bool"]["must_not"]
    assert {"term": {"type": "impression"}} in must_not and {"term": {"item_id": ""}} in must_not
    # the newest event of any type: under `global`, filtered to the user again
    newest = body["aggs"]["all"]
    assert newest["global"] == {} and newest["aggs"]["user"]["filter"] == {
        "term": {"user_id": "u1"}
    }


def test_settings_are_stored_as_the_sqlite_store_stores_them() -> None:
    doc = settings_doc({"b": 1, "a": {"y"}}, 3, 17)  # a set is stored as a list, as in SQLite
    assert doc == {"version": 3, "stored_at_us": 17, "body": '{"a": ["y"], "b": 1}'}
    assert json.loads(doc["body"]) == {"a": ["y"], "b": 1}
    assert version_id(3) == "v3"
    assert settings_mapping()["properties"]["body"]["index"] is False


def test_layout_names_and_fields_of_the_feed() -> None:
    n = Names("p_")
    assert (n.feed, n.settings) == ("p_feed", "p_settings")
    assert items_mapping("opensearch")["properties"]["seq"] == {"type": "long"}


def test_feed_lease_is_a_url_option() -> None:
    assert parse_url("opensearch+http://h").feed_lease == 300.0
    assert parse_url("opensearch+http://h/?feed_lease=0").feed_lease == 0.0
    with pytest.raises(StoreError, match="feed_lease must be >= 0"):
        parse_url("opensearch+http://h/?feed_lease=-1")


def test_items_without_created_at_are_candidates_at_any_time() -> None:
    items = pl.DataFrame({"item_id": ["a"], "lang": ["en"]})
    (action,) = item_actions(items, Names(), seq=9)
    row = action["_source"]["upsert"]
    assert row["created_at_us"] is None and row["seq"] == 9
    (exists,) = candidate_query(100)["bool"]["filter"]
    should = exists["bool"]["should"]
    assert {"range": {"created_at_us": {"lte": 100}}} in should
    assert {"bool": {"must_not": [{"exists": {"field": "created_at_us"}}]}} in should
    # a recency limit needs a known creation time
    (recent,) = candidate_query(100, max_age_days=1)["bool"]["filter"]
    assert "range" in recent


def test_windows_tile_the_span_without_gaps() -> None:
    # buckets of 10 microseconds from 0: (start, events)
    buckets = [(0, 3), (10, 2), (20, 9), (40, 1), (90, 4), (95, 2)]
    plan = plan_windows(buckets, 0, 100, 5, budget=5)
    assert plan == [
        (0, 20, 5, False),
        (20, 25, 9, True),  # over the budget: cut again
        (25, 95, 5, False),
        (95, 100, 2, False),
    ]
    starts = [w[0] for w in plan] + [100]
    assert all(w[1] == nxt for w, nxt in zip(plan, starts[1:], strict=True))
    # a microsecond over the budget cannot be cut: one window
    assert plan_windows([(5, 9)], 5, 6, 1, budget=4) == [(5, 6, 9, False)]
    # a big first bucket after an empty stretch: the stretch is its own (empty) window
    assert plan_windows([(50, 9)], 0, 100, 10, budget=4) == [
        (0, 50, 0, False),
        (50, 60, 9, True),
        (60, 100, 0, False),
    ]
    body, interval = histogram_body({"match_all": {}}, -1_000, 1_000_001)
    assert interval == 1_002 and body["aggs"]["h"]["histogram"]["offset"] == -1_000 % 1_002
    assert body["query"] == within({"match_all": {}}, -1_000, 1_000_001)


def test_rechunk_hands_out_exact_batches() -> None:
    r = Rechunk(3)
    frames = [pl.DataFrame({"x": list(range(a, b))}) for a, b in ((0, 2), (2, 2), (2, 7))]
    out = [f for frame in frames for f in r.add(frame)] + list(r.flush())
    assert [f["x"].to_list() for f in out] == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError, match="batch_rows must be >= 1"):
        Rechunk(0)
