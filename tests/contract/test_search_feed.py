"""The OpenSearch store's change feed, counters and settings on the session's real node, beyond
the contract: what a reader sees while two writers interleave, a block whose lease ran out,
a writer that died, another process following the feed, an older layout upgraded at open, the
same answers as the SQLite store on one site, and one-line errors for the new indices.

Writers are interleaved deterministically: the slow writer's write function runs the fast
writer to completion inside it (nothing depends on timing)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import polars as pl
import pytest

from feedrank.datasets.demo import generate_site
from feedrank.exceptions import StoreError
from feedrank.io import import_frame
from feedrank.settings import Settings
from feedrank.store import open_store
from feedrank.store.base import Store, Watermark
from feedrank.store.search import SearchStore
from feedrank.store.search_connect import as_json
from feedrank.store.search_layout import items_mapping
from feedrank.store.search_queries import event_doc_ids
from feedrank.store.sqlite import SQLiteStore

from .store_contract import T0, ev, events_frame

pytestmark = pytest.mark.opensearch
S = timedelta(seconds=1)


def _url(opensearch_url: str, **options: object) -> str:
    extra = "".join(f"&{k}={v}" for k, v in options.items())
    return f"{opensearch_url}/?prefix=frf{uuid.uuid4().hex[:12]}_&replicas=0{extra}"


@pytest.fixture
def store(opensearch_url: str) -> Iterator[SearchStore]:
    s = open_store(_url(opensearch_url))
    assert isinstance(s, SearchStore)
    yield s
    s.drop()
    s.close()


def _other(store: SearchStore, **changes: Any) -> SearchStore:
    """Another client on the same indices (as another process has), with config changes."""
    return SearchStore(dataclasses.replace(store.config, **changes))


def _prepared(events: pl.DataFrame) -> pl.DataFrame:
    return events.with_columns(__id=event_doc_ids(events))


def _users(changes_events: pl.DataFrame) -> list[str]:
    return sorted(changes_events["user_id"].to_list())


def test_a_reader_never_passes_a_block_still_being_written(store: SearchStore) -> None:
    slow, fast, reader = store, _other(store), _other(store)
    start = reader.watermark()
    slow_events = events_frame([ev("ua", "i1", "click", T0), ev("ua", "i2", "click", T0 + S)])
    seen: dict[str, Any] = {}

    def write_slow(lo: int) -> int:
        # The fast writer reserves after the slow one, writes and publishes first.
        assert fast.add_events(events_frame([ev("ub", "i1", "like", T0 + 2 * S)])) == 1
        seen["watermark"] = reader.watermark()
        seen["changes"] = reader.changes(start)
        seen["counts"] = reader.item_counts()
        seen["visible"] = reader.events()
        return slow._write_events(_prepared(slow_events), lo, lines=[])

    assert slow._in_block(2, write_slow, slow._move_events) == 2
    # While the slow block was pending the feed stood still, and the counters with it...
    assert seen["watermark"] == start
    assert seen["changes"].events.is_empty() and seen["counts"].is_empty()
    # ...though the fast writer's event was readable at once (a user's history, read-your-writes)
    assert seen["visible"]["user_id"].to_list() == ["ub"]
    # Once the slow block is published, both blocks are delivered, each event once.
    got = reader.changes(seen["changes"].until)
    assert _users(got.events) == ["ua", "ua", "ub"]
    assert reader.changes(got.until).events.is_empty()
    assert reader.item_counts().sort("item_id", "type")["n"].to_list() == [1, 1, 1]
    for s in (fast, reader):
        s.close()


def test_a_block_whose_lease_ran_out_is_delivered_again_under_new_numbers(
    store: SearchStore,
) -> None:
    # feed_lease=0: every pending block expires at the next reservation by anyone.
    slow, fast, reader = _other(store, feed_lease=0), _other(store, feed_lease=0), _other(store)
    start = reader.watermark()
    seen: dict[str, Any] = {}

    def write_slow(lo: int) -> int:
        fast.add_events(events_frame([ev("ub", "i1", "like", T0)]))  # expires the slow block
        seen["changes"] = reader.changes(start)  # the reader moves past the slow block's numbers
        rows = [ev("ua", "i1", "click", T0 + S), ev("ua", "i2", "click", T0 + 2 * S)]
        return slow._write_events(_prepared(events_frame(rows)), lo, lines=[])

    slow._in_block(2, write_slow, slow._move_events)
    assert _users(seen["changes"].events) == ["ub"]
    # Publishing found the block gone: its events moved to new numbers, delivered after all.
    later = reader.changes(seen["changes"].until)
    assert _users(later.events) == ["ua", "ua"]
    assert reader.changes(later.until).events.is_empty()
    assert reader.stats()["events"] == 3
    for s in (slow, fast, reader):
        s.close()


def test_a_dead_writers_block_expires_and_what_it_wrote_is_delivered(store: SearchStore) -> None:
    dead, alive = _other(store, feed_lease=0), _other(store, feed_lease=0)
    start = store.watermark()
    lo, _ = dead._reserve(1)
    dead._write_events(_prepared(events_frame([ev("ua", "i1", "click", T0)])), lo, lines=[])
    assert store.watermark() == start  # never published: the process died here
    alive.add_events(events_frame([ev("ub", "i1", "click", T0 + S)]))  # the lease ran out
    got = store.changes(start)
    assert _users(got.events) == ["ua", "ub"]
    assert got.until == store.watermark()
    dead.close()
    alive.close()


def test_another_process_follows_the_feed_and_reads_the_settings(store: SearchStore) -> None:
    store.add_events(events_frame([ev("u1", "i1", "click", T0)]))
    version = store.put_settings({"negative_ratio": 5})
    code = """
import json, sys
from feedrank.store import open_store
from feedrank.store.base import Watermark
import polars as pl
s = open_store(sys.argv[1])
ch = s.changes(Watermark())
before = s.stored_settings()
versions = [x for x, _ in s.settings_versions()]
s.add_events(pl.DataFrame({"event_id": ["x"], "user_id": ["u2"], "item_id": ["i2"],
    "type": ["like"], "timestamp": [ch.events["timestamp"][0]], "value": [1.0],
    "position": [None], "device": [None], "context": [None]},
    schema=ch.events.schema))
v = s.put_settings({"negative_ratio": 6})
print(json.dumps({"users": ch.events["user_id"].to_list(), "until": ch.until.events,
    "settings": before, "versions": versions, "v": v}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code, f"{store.url}&replicas=0"],
        capture_output=True,
        text=True,
        check=True,
    )
    other = json.loads(done.stdout.strip().splitlines()[-1])
    assert other["users"] == ["u1"] and other["settings"] == {"negative_ratio": 5}
    assert other["versions"] == [version] and other["v"] == version + 1
    got = store.changes(Watermark(other["until"], other["until"], 0))
    assert got.events["user_id"].to_list() == ["u2"]
    assert store.stored_settings() == {"negative_ratio": 6}
    assert store.stored_settings(version) == {"negative_ratio": 5}


def test_an_older_layout_is_upgraded_at_open(store: SearchStore) -> None:
    """A store written before the change feed: no feed document, items without `seq`, events
    numbered by the writer's clock (~1.7e18)."""
    s, n = store, store.names
    s.upsert_items(pl.DataFrame({"item_id": ["a"], "created_at": [T0]}))
    s.add_events(events_frame([ev("u1", "a", "click", T0), ev("u2", "a", "click", T0 + S)]))
    old_items = s.items()
    s.client.indices.delete(index=f"{n.feed},{n.settings},{n.items}")
    old_mapping = items_mapping("opensearch")
    old_mapping["properties"].pop("seq")
    s.client.indices.create(
        index=n.items,
        body={"settings": {"number_of_replicas": 0, "knn": True}, "mappings": old_mapping},
    )
    s.client.index(
        index=n.items,
        id="a",
        body={"item_id": "a", "created_at_us": int(T0.timestamp() * 1e6), "attrs": {}, "lv": {}},
        refresh="true",
    )
    clock = 1_700_000_000_000_000_000
    s.client.update_by_query(
        index=n.events_pattern,
        body={"script": {"source": f"ctx._source.seq = ctx._source.seq + {clock}L"}},
        refresh=True,
    )
    upgraded = _other(s)
    w = upgraded.watermark()
    assert w.events >= clock + 2 and w.erasures == 0  # what was there counts as delivered
    assert upgraded.changes(w).events.is_empty()
    assert upgraded.item_counts()["n"].to_list() == [2]
    assert "seq" in upgraded._properties(n.items)
    assert upgraded.items().equals(old_items)
    upgraded.add_events(events_frame([ev("u3", "a", "like", T0 + 2 * S)]))
    upgraded.upsert_items(pl.DataFrame({"item_id": ["b"], "created_at": [T0]}))
    got = upgraded.changes(w)
    assert got.events["user_id"].to_list() == ["u3"] and got.items["item_id"].to_list() == ["b"]
    assert upgraded.put_settings({"a": 1}) == 1
    upgraded.close()


def test_missing_feed_or_settings_index_is_one_line_and_nothing_is_written(
    store: SearchStore,
) -> None:
    s, n = store, store.names
    s.client.indices.delete(index=n.feed)
    for call in (
        s.watermark,
        s.item_counts,
        lambda: s.add_events(events_frame([ev("u1", "i1", "click", T0)])),
        lambda: s.upsert_items(pl.DataFrame({"item_id": ["a"]})),
        lambda: s.delete_user("u1"),
    ):
        with pytest.raises(StoreError, match=f"index '{n.feed}' must exist") as e:
            call()
        assert "\n" not in str(e.value) and "open the store again" in str(e.value)
    assert s.events().is_empty() and s.items().is_empty()  # nothing half-written
    s.client.indices.delete(index=n.settings)
    for call in (s.settings_versions, lambda: s.put_settings({"a": 1}), s.stored_settings):
        with pytest.raises(StoreError, match=f"index '{n.settings}' must exist"):
            call()
    assert not s.client.indices.exists(index=n.settings)  # not created on the fly
    reopened = _other(s)
    assert reopened.watermark() == Watermark(0, 0, 0) and reopened.stored_settings() is None
    reopened.close()


def test_a_conflicting_feed_index_is_refused_at_open(opensearch_url: str) -> None:
    url = _url(opensearch_url)
    prefix = url.split("prefix=")[1].split("&")[0]
    probe = open_store(_url(opensearch_url))
    assert isinstance(probe, SearchStore)
    feed = f"{prefix}feed"
    probe.client.indices.create(
        index=feed, body={"mappings": {"properties": {"next": {"type": "keyword"}}}}
    )
    try:
        with pytest.raises(StoreError, match="must have feedrank's mapping") as e:
            open_store(url)
        assert "next: want long, got keyword" in str(e.value) and "\n" not in str(e.value)
        made = as_json(probe.client.indices.get(index=f"{prefix}*"))
        assert list(made) == [feed]  # nothing else of that prefix was created
    finally:
        probe.client.indices.delete(index=feed)
        probe.drop()
        probe.close()


def test_windows_of_a_scan_tile_time_exactly(
    store: SearchStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feedrank.store import search_windows

    us = timedelta(microseconds=1)
    rows = [ev(f"u{n % 3}", f"i{n}", "click", T0 + n * 37 * S + (n % 2) * us) for n in range(40)]
    rows += [ev(f"v{n}", "same", "view", T0 + 5 * S) for n in range(9)]  # 9 at one microsecond
    rows += [ev("u0", "old", "view", T0 - timedelta(days=400))]  # another month, a year before
    store.add_events(events_frame(rows))
    whole = store.events()
    monkeypatch.setattr(search_windows, "WINDOW_EVENTS", 4)  # windows of at most 4 events
    windows = list(store._windows({"match_all": {}}))
    assert len(windows) >= 13
    assert all(a[1] == b[0] for a, b in itertools.pairwise(windows))  # no gap
    batches = list(store.scan_events(batch_rows=6))
    assert [b.height for b in batches] == [6] * 8 + [2]
    assert pl.concat(batches).equals(whole)
    assert whole.height == 50 and whole["timestamp"].is_sorted()
    part = store.events(T0, T0 + 100 * S, types=["click", "view"])
    assert part.equals(
        whole.filter((pl.col("timestamp") >= T0) & (pl.col("timestamp") < T0 + 100 * S))
    )


# -- the same answers as the SQLite store -------------------------------------------------------
def _both(store: SearchStore) -> tuple[Store, SearchStore]:
    site = generate_site(n_users=60, n_items=30, days=5, seed=11)
    sqlite = SQLiteStore(":memory:")
    for s in (sqlite, store):
        for kind, frame in (("users", site.users), ("items", site.items)):
            assert import_frame(s, kind, frame, Settings()).bad == 0  # type: ignore[arg-type]
        half = site.events.height // 2  # two imports: two blocks in the feed
        for part in (site.events.head(half), site.events.slice(half)):
            assert import_frame(s, "interactions", part, Settings()).bad == 0
    return sqlite, store


KEYS = ("timestamp", "user_id", "item_id", "type", "event_id")


def _same(a: pl.DataFrame, b: pl.DataFrame, *keys: str) -> None:
    assert a.columns == b.columns
    assert a.sort(keys).equals(b.sort(keys))


def _same_answers(sqlite: Store, search: SearchStore) -> None:
    _same(sqlite.item_counts(), search.item_counts(), "item_id", "type", "value")
    _same(sqlite.user_counts(), search.user_counts(), "user_id", "type", "value")
    ids = sorted(sqlite.user_counts()["user_id"].unique().to_list())[::5]
    _same(sqlite.user_counts(ids), search.user_counts(ids), "user_id", "type", "value")
    fields = ("users", "users_with_events", "items", "events", "events_per_type")
    a, b = sqlite.stats(), search.stats()
    assert {k: a[k] for k in (*fields, "first_event", "last_event")} == {
        k: b[k] for k in (*fields, "first_event", "last_event")
    }
    for u in [*ids, "nobody"]:
        assert sqlite.seen_items(u) == search.seen_items(u), u
    assert sqlite.events().equals(search.events())
    assert pl.concat(list(search.scan_events(batch_rows=700))).equals(sqlite.events())


def test_the_sqlite_and_opensearch_stores_give_the_same_answers(store: SearchStore) -> None:
    sqlite, search = _both(store)
    _same_answers(sqlite, search)
    # the change feed from the start: every event once, every item, no erasure
    a, b = sqlite.changes(Watermark()), search.changes(Watermark())
    _same(a.events, b.events, *KEYS)
    assert a.items.equals(b.items.select(a.items.columns))
    assert (a.erased, b.erased) == (False, False)
    assert sqlite.items(["p00003", "zz"]).equals(
        search.items(["p00003", "zz"]).select(a.items.columns)
    )
    assert sqlite.users(["u00002"]).equals(search.users(["u00002"]).select(sqlite.users().columns))
    # resumed in pieces, the same events as in one piece
    pieces, at = [], Watermark()
    while True:
        got = search.changes(at, max_events=997)
        if got.events.is_empty():
            break
        pieces.append(got.events)
        at = got.until
    _same(pl.concat(pieces), b.events, *KEYS)
    # an erasure: counters, stats and the feed follow in both
    user = str(sqlite.events(types=["click"])["user_id"][0])
    wa, wb = sqlite.watermark(), search.watermark()
    assert sqlite.delete_user(user) == search.delete_user(user)
    _same_answers(sqlite, search)
    assert sqlite.changes(wa).erased and search.changes(wb).erased
    assert sqlite.put_settings({"k": [1, 2]}) == search.put_settings({"k": [1, 2]}) == 1
    assert sqlite.stored_settings() == search.stored_settings() == {"k": [1, 2]}


def test_a_server_gone_after_open_is_one_line_for_the_new_calls(store: SearchStore) -> None:
    from feedrank.store.search_connect import client_module, connect

    gone = dataclasses.replace(store.config, host_url="http://127.0.0.1:1", timeout=5)
    calls = {
        "watermark": store.watermark,
        "changes": lambda: store.changes(Watermark()),
        "item counts": store.item_counts,
        "user counts": store.user_counts,
        "seen items": lambda: store.seen_items("u1"),
        "stats": store.stats,
        "put settings": lambda: store.put_settings({"a": 1}),
        "settings versions": store.settings_versions,
        "stored settings": store.stored_settings,
        "add events": lambda: store.add_events(events_frame([ev("u1", "i1", "click", T0)])),
        "upsert items": lambda: store.upsert_items(pl.DataFrame({"item_id": ["a"]})),
        "delete user": lambda: store.delete_user("u1"),
        "scan events": lambda: list(store.scan_events()),
        "events": store.events,  # through scan_events
    }
    live = store.client
    store.client = connect(gone, client_module("opensearch"))  # a real client; nothing listens
    try:
        for what, call in calls.items():
            # the line names the call made (not one made inside it), with what to check
            with pytest.raises(StoreError, match=f"cannot reach .* while {what}: is it running"):
                call()
    finally:
        store.client.close()
        store.client = live  # for the fixture's drop
