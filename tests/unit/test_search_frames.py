"""Frames -> engine documents -> JSON -> frames, without a server: what the store writes
(search_queries) and what it reads back (search_frames) are inverse, with exact ids, types and
microsecond times. The JSON goes through the official client's own serializer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from feedrank.schema import EVENT_COLUMNS
from feedrank.store.base import RECOMMENDATION_COLUMNS
from feedrank.store.search_frames import (
    EVENT_SOURCE,
    ITEM_SOURCE,
    event_stats,
    events_frame,
    items_frame,
    recommendations_frame,
    users_frame,
)
from feedrank.store.search_layout import Names
from feedrank.store.search_queries import (
    event_actions,
    item_actions,
    recommendation_actions,
    user_actions,
)

T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)
COOKIE = "20239734541707312813871963623233721188"


@pytest.fixture(params=["elasticsearch", "opensearchpy"])
def wire(request: pytest.FixtureRequest) -> Any:
    """JSON as the client sends it (bytes or str), parsed back as the server returns _source."""
    module = pytest.importorskip(f"{request.param}.serializer")
    serializer = module.JSONSerializer()

    def through(doc: dict[str, Any]) -> dict[str, Any]:
        out = serializer.dumps(doc)
        return json.loads(out.decode() if isinstance(out, bytes) else out)

    return through


def _stored(action: dict[str, Any]) -> dict[str, Any]:
    """The document an action leaves in the index (an item upsert's doc is its `upsert`)."""
    src = action["_source"]
    return dict(src.get("upsert", src))


def test_users_round_trip_with_types(wire: Any) -> None:
    users = pl.DataFrame(
        {
            "user_id": ["u2", COOKIE, "0042"],
            "country": ["SE", None, "NO"],
            "zip": ["1000", "0001", "0042"],
            "age": [51, None, 34],
            "score": [-1.5, 1e-9, 0.25],
        }
    )
    docs = [wire(_stored(a)) for a in user_actions(users, Names())]
    assert users_frame(docs).equals(users.sort("user_id"))
    bare = pl.DataFrame({"user_id": ["a", "b"]})
    assert users_frame([wire(_stored(a)) for a in user_actions(bare, Names())]).equals(bare)
    assert users_frame([]).columns == ["user_id"]


def test_items_round_trip_to_the_microsecond(wire: Any) -> None:
    items = pl.DataFrame(
        {
            "item_id": ["007", "7"],
            "created_at": [
                datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
                datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
            ],
            "title": ["A", "B"],
            "price": [9.5, 3.0],
            "embedding": [[0.25, -1.0], [1.0, 0.0]],
        }
    )
    docs = [wire(_stored(a)) for a in item_actions(items, Names())]
    got = items_frame([{k: d[k] for k in ITEM_SOURCE if k in d} for d in docs])
    assert got["created_at"].dtype == pl.Datetime("us", "UTC")
    assert got.equals(items)
    assert items_frame([]).schema == pl.Schema(
        {"item_id": pl.String, "created_at": pl.Datetime("us", "UTC")}
    )


def test_events_round_trip_sorted_by_time_then_arrival(wire: Any) -> None:
    us = timedelta(microseconds=1)
    rows = [
        ("e-1", "u1", "i1", "impression", T0, 0.0, 7, "mobile", '{"page":"home"}'),
        (None, COOKIE, "", "login", T0 - us, 1.0, None, None, None),
        (None, "u1", "i2", "rating", T0, 4.5, None, None, None),  # same time: after e-1
        (
            None,
            "u2",
            "i3",
            "view",
            datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            1.0,
            None,
            None,
            None,
        ),
    ]
    frame = pl.DataFrame(rows, schema=EVENT_COLUMNS, orient="row")
    docs = [wire(a["_source"]) for a in event_actions(frame, Names(), seq0=10)]
    assert set(docs[0]) == set(EVENT_SOURCE)
    got = events_frame(list(reversed(docs)))  # the engine returns any order
    assert got.schema == pl.Schema(EVENT_COLUMNS)
    assert got.equals(frame.sort("timestamp", maintain_order=True))
    assert events_frame([]).schema == pl.Schema(EVENT_COLUMNS)


def test_recommendations_round_trip_in_rank_order(wire: Any) -> None:
    recs = pl.DataFrame(
        {
            "user_id": ["u1", "u1", "u1"],
            "rank": [2, 1, 3],
            "item_id": ["b", "a", "c"],
            "score": [0.5, 0.9, 0.1],
            "source": ["glm", "glm", None],
        },
        schema=RECOMMENDATION_COLUMNS,
    )
    (action,) = recommendation_actions(recs, "p_recs-g000001")
    doc = wire(action["_source"])
    assert recommendations_frame(doc).equals(recs.sort("rank"))
    assert recommendations_frame(doc, k=2)["item_id"].to_list() == ["a", "b"]
    empty = recommendations_frame(None)
    assert empty.height == 0 and list(empty.columns) == list(RECOMMENDATION_COLUMNS)


def test_event_stats_from_aggregations() -> None:
    first = datetime(2024, 2, 28, 11, 59, 59, 999750, tzinfo=UTC)
    aggs = {
        "types": {"buckets": [{"key": "like", "doc_count": 1}, {"key": "click", "doc_count": 3}]},
        "first": {"value": float(int(first.timestamp()) * 1_000_000 + 999750)},
        "last": {"value": None},
    }
    stats = event_stats(aggs)
    assert stats["events"] == 4
    assert list(stats["events_per_type"]) == ["click", "like"]
    assert datetime.fromisoformat(stats["first_event"]) == first
    assert stats["last_event"] is None
    assert event_stats({}) == {
        "events": 0,
        "events_per_type": {},
        "first_event": None,
        "last_event": None,
    }
