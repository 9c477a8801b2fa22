"""The Store conformance suite. Every backend subclasses `StoreContract` and provides a `store`
fixture that yields a fresh, empty store; the tests here are what "a feedrank store" means.

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store(self, tmp_path):
            s = MyStore(...)
            yield s
            s.close()

A backend whose readers should use their own connection overrides `reader_for`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import polars as pl
import pytest

from feedrank.exceptions import FeedrankError, NotFoundError
from feedrank.schema import EVENT_COLUMNS
from feedrank.store.base import RECOMMENDATION_COLUMNS, Store, Watermark
from feedrank.views.site import read_site

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
COOKIE = "20239734541707312813871963623233721188"  # 38 digits: beyond int64 and exact float


def ev(
    user_id: str,
    item_id: str,
    type_: str,
    timestamp: datetime,
    event_id: str | None = None,
    value: float = 1.0,
    position: int | None = None,
    device: str | None = None,
    context: str | None = None,
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "user_id": user_id,
        "item_id": item_id,
        "type": type_,
        "timestamp": timestamp,
        "value": value,
        "position": position,
        "device": device,
        "context": context,
    }


def events_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=EVENT_COLUMNS)


def recs_frame(rows: list[tuple[str, int, str, float]], source: str = "test") -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"user_id": u, "rank": r, "item_id": i, "score": s, "source": source}
            for u, r, i, s in rows
        ],
        schema=RECOMMENDATION_COLUMNS,
    )


def items_of(df: pl.DataFrame) -> list[str]:
    return df["item_id"].to_list()


def check_readers_see_whole_generations(
    store: Store, reader: Store, n_generations: int = 30, depth: int = 25
) -> None:
    """While `store` writes and activates generation after generation, a reader in another
    thread must always see one whole generation: every rank, all from the same one, in order.
    The loop is bounded; nothing depends on timing."""
    users = ["u0", "u1", "u2"]

    def generation(g: int) -> pl.DataFrame:
        return recs_frame(
            [(u, r, f"g{g}-{r}", float(depth - r)) for u in users for r in range(1, depth + 1)]
        )

    store.write_generation(generation(0), "m0")
    expected = {g: [f"g{g}-{r}" for r in range(1, depth + 1)] for g in range(n_generations)}
    done = threading.Event()
    problems: list[str] = []
    reads = [0]

    def read() -> None:
        try:
            for n in range(1_000_000):  # bounded; normally stopped by `done`
                if done.is_set() and n > 0:
                    return
                got = items_of(reader.recommendations(users[n % len(users)]))
                reads[0] += 1
                gens = {item.split("-")[0] for item in got}
                if len(gens) != 1:
                    problems.append(f"mixed or empty read: {got[:3]}... ({len(got)} rows)")
                    return
                g = int(gens.pop()[1:])
                if got != expected[g]:
                    problems.append(f"incomplete generation {g}: {len(got)} of {depth} rows")
                    return
        except Exception as exc:  # reported below, not swallowed
            problems.append(repr(exc))

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for g in range(1, n_generations):
            if g % 2:
                store.write_generation(generation(g), f"m{g}")
            else:
                gen = store.write_generation(generation(g), f"m{g}", activate=False)
                store.activate_generation(gen)
    finally:
        done.set()
        thread.join()
    assert problems == []
    assert reads[0] >= 1
    assert items_of(store.recommendations("u0")) == expected[n_generations - 1]


class StoreContract:
    """Tests every Store backend must pass. Subclasses provide the `store` fixture."""

    @pytest.fixture
    def store(self) -> Iterator[Store]:
        raise NotImplementedError("a StoreContract subclass must provide a `store` fixture")

    def reader_for(self, store: Store) -> Store:
        """A store to read from another thread (default: the same object)."""
        return store

    # -- empty store ---------------------------------------------------------------------------
    def test_new_store_is_empty(self, store: Store) -> None:
        assert store.users().height == 0
        assert store.items().height == 0
        events = store.events()
        assert events.height == 0
        assert events.schema == pl.Schema(EVENT_COLUMNS)
        assert store.generations() == []
        assert store.active_generation() is None
        recs = store.recommendations("u1")
        assert recs.height == 0
        assert list(recs.columns) == list(RECOMMENDATION_COLUMNS)

    # -- users and items -------------------------------------------------------------------------
    def test_upsert_users_is_idempotent_by_id(self, store: Store) -> None:
        store.upsert_users(pl.DataFrame({"user_id": ["u1", "u2"], "country": ["NO", "SE"]}))
        store.upsert_users(pl.DataFrame({"user_id": ["u1", "u2"], "country": ["NO", "SE"]}))
        assert store.users().height == 2
        store.upsert_users(pl.DataFrame({"user_id": ["u2"], "country": ["DK"]}))
        users = store.users().sort("user_id")
        assert users["user_id"].to_list() == ["u1", "u2"]
        assert users["country"].to_list() == ["NO", "DK"]
        assert store.stats()["users"] == 2

    def test_upsert_items_is_idempotent_by_id(self, store: Store) -> None:
        items = pl.DataFrame(
            {"item_id": ["a", "b"], "created_at": [T0, T0 + timedelta(days=1)], "topic": ["x", "y"]}
        )
        store.upsert_items(items)
        store.upsert_items(items)
        assert store.items().height == 2
        store.upsert_items(
            pl.DataFrame(
                {"item_id": ["a"], "created_at": [T0 - timedelta(hours=1)], "topic": ["z"]}
            )
        )
        got = store.items().sort("item_id")
        assert got.height == 2
        assert got["topic"].to_list() == ["z", "y"]
        assert got["created_at"].to_list() == [T0 - timedelta(hours=1), T0 + timedelta(days=1)]

    def test_user_attributes_round_trip(self, store: Store) -> None:
        users = pl.DataFrame(
            {
                "user_id": ["u1", "u2", "u3"],
                "country": ["NO", "SE", None],
                "zip": ["0042", "1000", "0001"],  # a string that looks like a number stays text
                "age": [34, 51, None],
                "score": [0.25, -1.5, 1e-9],
            }
        )
        store.upsert_users(users)
        got = store.users().sort("user_id")
        assert got["user_id"].to_list() == ["u1", "u2", "u3"]
        assert got["country"].to_list() == ["NO", "SE", None]
        assert got["zip"].to_list() == ["0042", "1000", "0001"]
        assert got["age"].to_list() == [34, 51, None]
        assert got["score"].to_list() == [0.25, -1.5, 1e-9]

    def test_item_attributes_and_created_at_round_trip(self, store: Store) -> None:
        created = [
            datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
            datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
        ]
        items = pl.DataFrame(
            {"item_id": ["i1", "i2"], "created_at": created, "title": ["A", "B"], "price": [9.5, 3]}
        )
        store.upsert_items(items)
        got = store.items().sort("item_id")
        assert got["created_at"].dtype == pl.Datetime("us", "UTC")
        assert got["created_at"].to_list() == created
        assert got["title"].to_list() == ["A", "B"]
        assert got["price"].to_list() == [9.5, 3.0]

    def test_opaque_ids_stay_exact(self, store: Store) -> None:
        ids = ["0042", COOKIE, "42"]  # '0042' and '42' are different users
        store.upsert_users(pl.DataFrame({"user_id": ids}))
        store.upsert_items(pl.DataFrame({"item_id": ["007", "7"], "created_at": [T0, T0]}))
        store.add_events(
            events_frame(
                [ev(u, "007", "click", T0 + timedelta(seconds=n)) for n, u in enumerate(ids)]
            )
        )
        store.write_generation(recs_frame([(COOKIE, 1, "007", 1.0), ("0042", 1, "7", 1.0)]), "m")
        assert sorted(store.users()["user_id"].to_list()) == sorted(ids)
        assert sorted(store.items()["item_id"].to_list()) == ["007", "7"]
        assert store.events()["user_id"].to_list() == ids
        assert store.events(user_ids=[COOKIE])["user_id"].to_list() == [COOKIE]
        assert store.events(user_ids=["42"]).height == 1
        assert store.seen_items("0042")[0] == {"007"}
        assert items_of(store.recommendations(COOKIE)) == ["007"]
        assert items_of(store.recommendations("0042")) == ["7"]
        assert store.recommendations("42").height == 0

    # -- events: idempotence -------------------------------------------------------------------
    def test_same_event_id_is_stored_once(self, store: Store) -> None:
        assert store.add_events(events_frame([ev("u1", "i1", "click", T0, event_id="e1")])) == 1
        # the same id again, even with other fields changed, is the same event
        again = ev("u1", "i2", "like", T0 + timedelta(hours=1), event_id="e1", value=5.0)
        assert store.add_events(events_frame([again])) == 0
        got = store.events()
        assert got.height == 1
        assert got.row(0, named=True)["item_id"] == "i1"

    def test_event_without_id_is_keyed_by_user_item_type_time(self, store: Store) -> None:
        row = ev("u1", "i1", "click", T0)
        assert store.add_events(events_frame([row, row])) == 1  # duplicate inside one batch
        assert store.add_events(events_frame([row])) == 0
        assert store.events().height == 1
        # any of user, item, type or time (to the microsecond) different: a new event
        others = [
            ev("u2", "i1", "click", T0),
            ev("u1", "i2", "click", T0),
            ev("u1", "i1", "like", T0),
            ev("u1", "i1", "click", T0 + timedelta(microseconds=1)),
        ]
        assert store.add_events(events_frame(others)) == 4
        assert store.events().height == 5

    def test_different_event_ids_are_different_events(self, store: Store) -> None:
        rows = [
            ev("u1", "i1", "click", T0, event_id="e1"),
            ev("u1", "i1", "click", T0, event_id="e2"),
        ]
        assert store.add_events(events_frame(rows)) == 2
        assert sorted(store.events()["event_id"].to_list()) == ["e1", "e2"]

    def test_add_events_counts_only_new_events(self, store: Store) -> None:
        store.add_events(events_frame([ev("u1", "i1", "click", T0, event_id="e1")]))
        batch = [
            ev("u1", "i1", "click", T0, event_id="e1"),
            ev("u1", "i2", "click", T0, event_id="e2"),
            ev("u2", "i2", "view", T0),
        ]
        assert store.add_events(events_frame(batch)) == 2
        assert store.add_events(events_frame([])) == 0
        assert store.events().height == 3

    # -- events: reading -----------------------------------------------------------------------
    def test_events_are_sorted_by_time(self, store: Store) -> None:
        offsets = [5, 1, 4, 0, 3, 2]
        store.add_events(
            events_frame([ev("u1", f"i{o}", "click", T0 + timedelta(minutes=o)) for o in offsets])
        )
        got = store.events()
        assert items_of(got) == [f"i{o}" for o in sorted(offsets)]
        assert got["timestamp"].is_sorted()

    def test_events_window_is_start_inclusive_end_exclusive(self, store: Store) -> None:
        us = timedelta(microseconds=1)
        start, end = T0, T0 + timedelta(hours=1)
        rows = [
            ev("u1", "before", "click", start - us),
            ev("u1", "at_start", "click", start),
            ev("u1", "inside", "click", start + timedelta(minutes=30)),
            ev("u1", "last", "click", end - us),
            ev("u1", "at_end", "click", end),
        ]
        store.add_events(events_frame(rows))
        assert items_of(store.events(start, end)) == ["at_start", "inside", "last"]
        assert items_of(store.events(start=start)) == ["at_start", "inside", "last", "at_end"]
        assert items_of(store.events(end=end)) == ["before", "at_start", "inside", "last"]
        assert store.events(start, start).height == 0

    def test_events_window_bounds_in_other_time_zones(self, store: Store) -> None:
        oslo = timezone(timedelta(hours=1))
        store.add_events(
            events_frame([ev("u1", f"i{h}", "click", T0 + timedelta(hours=h)) for h in range(4)])
        )
        # 14:00+01:00 is 13:00 UTC; 15:00+01:00 is 14:00 UTC
        start = datetime(2024, 3, 1, 14, 0, tzinfo=oslo)
        end = datetime(2024, 3, 1, 15, 0, tzinfo=oslo)
        assert items_of(store.events(start, end)) == ["i1"]

    def test_events_filter_by_users_and_types(self, store: Store) -> None:
        rows = [
            ev("u1", "a", "click", T0),
            ev("u2", "b", "like", T0 + timedelta(seconds=1)),
            ev("u3", "c", "click", T0 + timedelta(seconds=2)),
            ev("u1", "d", "view", T0 + timedelta(seconds=3)),
            ev("u2", "e", "click", T0 + timedelta(seconds=4)),
        ]
        store.add_events(events_frame(rows))
        assert items_of(store.events(user_ids=["u1"])) == ["a", "d"]
        assert items_of(store.events(user_ids=["u1", "u2"])) == ["a", "b", "d", "e"]
        assert items_of(store.events(types=["click"])) == ["a", "c", "e"]
        assert items_of(store.events(types=["click", "like"])) == ["a", "b", "c", "e"]
        assert items_of(store.events(user_ids=["u2"], types=["click"])) == ["e"]
        assert items_of(
            store.events(
                T0 + timedelta(seconds=1), T0 + timedelta(seconds=4), user_ids=["u1", "u2"]
            )
        ) == ["b", "d"]
        assert store.events(user_ids=["nobody"]).height == 0
        assert store.events(user_ids=[]).height == 0
        assert store.events(types=[]).height == 0

    def test_timestamps_round_trip_to_the_microsecond_in_utc(self, store: Store) -> None:
        times = [
            datetime(2024, 3, 1, 12, 0, 0, 123457, tzinfo=UTC),
            datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
            datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
            datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            datetime(2099, 12, 31, 23, 59, 59, 654321, tzinfo=UTC),
        ]
        store.add_events(events_frame([ev("u1", f"i{n}", "view", t) for n, t in enumerate(times)]))
        got = store.events()
        assert got["timestamp"].dtype == pl.Datetime("us", "UTC")
        assert got["timestamp"].to_list() == sorted(times)
        # a microsecond-exact bound finds exactly the event at it
        t = times[0]
        assert items_of(store.events(t, t + timedelta(microseconds=1))) == ["i0"]

    def test_event_fields_round_trip(self, store: Store) -> None:
        rows = [
            ev(
                "u1",
                "i1",
                "impression",
                T0,
                event_id="e-1",
                value=0.0,
                position=7,
                device="mobile",
                context='{"page":"home","ab":"B"}',
            ),
            ev("u1", "i2", "rating", T0 + timedelta(seconds=1), value=4.5),
        ]
        store.add_events(events_frame(rows))
        got = store.events()
        assert got.schema == pl.Schema(EVENT_COLUMNS)
        assert got.to_dicts() == rows

    def test_itemless_events_are_stored(self, store: Store) -> None:
        rows = [
            ev("u1", "", "login", T0),
            ev("u1", "i1", "click", T0 + timedelta(seconds=1)),
            ev("u1", "", "logout", T0 + timedelta(seconds=2)),
        ]
        assert store.add_events(events_frame(rows)) == 3
        got = store.events()
        assert got["item_id"].to_list() == ["", "i1", ""]  # empty string, not null
        assert got["type"].to_list() == ["login", "click", "logout"]
        assert store.add_events(events_frame(rows[:1])) == 0  # keyed with the empty item too

    def test_a_users_history_is_in_time_order(self, store: Store) -> None:
        rows = [ev("u1", f"i{m}", "click", T0 + timedelta(minutes=m)) for m in (2, 0, 3, 1)]
        rows.append(ev("u2", "other", "click", T0 + timedelta(minutes=10)))
        store.add_events(events_frame(rows))
        assert items_of(store.events(user_ids=["u1"])) == ["i0", "i1", "i2", "i3"]
        assert store.events(user_ids=["nobody"]).height == 0

    def test_seen_items_are_a_users_items_but_impressions(self, store: Store) -> None:
        store.add_events(
            events_frame(
                [
                    ev("u1", "shown", "impression", T0),
                    ev("u1", "clicked", "click", T0 + timedelta(seconds=1)),
                    ev("u1", "", "login", T0 + timedelta(seconds=2)),
                    ev("u1", "rated", "rating", T0 + timedelta(seconds=3), value=1.0),
                    ev("u2", "other", "click", T0 + timedelta(seconds=9)),
                ]
            )
        )
        seen, newest = store.seen_items("u1")
        assert seen == {"clicked", "rated"}  # a low rating is still an item the user knows
        assert newest == T0 + timedelta(seconds=3)
        assert store.seen_items("nobody") == (set(), None)

    def test_scan_events_reads_in_bounded_batches(self, store: Store) -> None:
        rows = [ev("u1", f"i{m}", "click", T0 + timedelta(minutes=m)) for m in range(7)]
        store.add_events(events_frame(rows))
        batches = list(store.scan_events(batch_rows=3))
        assert [b.height for b in batches] == [3, 3, 1]
        assert pl.concat(batches).equals(store.events())

    # -- counters ------------------------------------------------------------------------------------
    def test_counters_follow_new_events_only(self, store: Store) -> None:
        rows = [
            ev("u1", "i1", "click", T0),
            ev("u1", "i1", "rating", T0 + timedelta(seconds=1), value=4.0),
            ev("u2", "i1", "click", T0 + timedelta(seconds=2), event_id="e"),
            ev("u2", "", "login", T0 + timedelta(seconds=3)),
        ]
        store.add_events(events_frame(rows))
        store.add_events(events_frame(rows))  # duplicates move nothing
        items = store.item_counts().sort("item_id", "type", "value")
        assert items.select("item_id", "type", "value", "n").rows() == [
            ("i1", "click", 1.0, 2),
            ("i1", "rating", 4.0, 1),
        ]
        users = store.user_counts().sort("user_id", "type")
        assert users.select("user_id", "type", "n").rows() == [
            ("u1", "click", 1),
            ("u1", "rating", 1),
            ("u2", "click", 1),
            ("u2", "login", 1),
        ]
        u1 = store.user_counts(["u1"])
        assert u1["first_ts"].min() == T0 and u1["last_ts"].max() == T0 + timedelta(seconds=1)
        store.delete_user("u1")
        assert store.item_counts().select("type", "n").rows() == [("click", 1)]
        assert store.user_counts(["u1"]).height == 0

    def test_newest_event_time_comes_from_the_counters(self, store: Store) -> None:
        assert store.newest_event_time() is None
        newest = T0 + timedelta(hours=2, microseconds=7)
        store.add_events(events_frame([ev("u1", "i1", "click", newest), ev("u2", "", "login", T0)]))
        assert store.newest_event_time() == newest
        store.delete_user("u1")
        assert store.newest_event_time() == T0

    def test_stats_come_from_the_counters(self, store: Store) -> None:
        store.add_events(
            events_frame(
                [ev("u1", "i1", "click", T0), ev("u2", "i1", "like", T0 + timedelta(hours=1))]
            )
        )
        stats = store.stats()
        assert stats["events"] == 2 and stats["events_per_type"] == {"click": 1, "like": 1}
        assert stats["users_with_events"] == 2
        assert stats["first_event"] == T0.isoformat()

    # -- change feed ---------------------------------------------------------------------------------
    def test_changes_since_a_watermark(self, store: Store) -> None:
        start = store.watermark()
        assert store.changes(start).events.height == 0
        store.add_events(events_frame([ev("u1", "i1", "click", T0), ev("u2", "i2", "click", T0)]))
        store.upsert_items(pl.DataFrame({"item_id": ["i9"], "created_at": [T0]}))
        got = store.changes(start)
        assert sorted(got.events["user_id"].to_list()) == ["u1", "u2"]
        assert got.items["item_id"].to_list() == ["i9"] and not got.erased
        assert got.until == store.watermark() != start
        # the same events again are no change; an erasure is
        store.add_events(events_frame([ev("u1", "i1", "click", T0)]))
        assert store.changes(got.until).events.height == 0
        store.delete_user("u2")
        erased = store.changes(got.until)
        assert erased.erased and erased.events.height == 0

    def test_changes_resume_after_max_events(self, store: Store) -> None:
        start = store.watermark()
        store.add_events(
            events_frame([ev(f"u{n}", "i", "click", T0 + timedelta(seconds=n)) for n in range(5)])
        )
        first = store.changes(start, max_events=3)
        second = store.changes(first.until, max_events=3)
        third = store.changes(second.until, max_events=3)
        assert first.events.height == 3 and second.events.height == 2
        assert third.events.height == 0 and third.until == second.until
        users = first.events["user_id"].to_list() + second.events["user_id"].to_list()
        assert sorted(users) == [f"u{n}" for n in range(5)]

    def test_watermarks_start_at_zero(self, store: Store) -> None:
        assert store.watermark() == Watermark(0, 0, 0)

    # -- settings ------------------------------------------------------------------------------------
    def test_settings_are_stored_in_versions(self, store: Store) -> None:
        assert store.stored_settings() is None and store.settings_versions() == []
        v1 = store.put_settings({"negative_ratio": 2})
        v2 = store.put_settings({"negative_ratio": 3, "type_weights": {"pv": 1.0}})
        assert [v for v, _ in store.settings_versions()] == [v1, v2]
        assert store.stored_settings() == {"negative_ratio": 3, "type_weights": {"pv": 1.0}}
        assert store.stored_settings(v1) == {"negative_ratio": 2}
        with pytest.raises(NotFoundError, match="settings version"):
            store.stored_settings(v2 + 10)

    # -- deleting a user -------------------------------------------------------------------------
    def test_delete_user_removes_everything_of_that_user_only(self, store: Store) -> None:
        store.upsert_users(pl.DataFrame({"user_id": ["u1", "u2"], "country": ["NO", "SE"]}))
        store.add_events(
            events_frame(
                [
                    ev("u1", "i1", "click", T0),
                    ev("u1", "", "login", T0 + timedelta(seconds=1)),
                    ev("u1", "i2", "like", T0 + timedelta(seconds=2), event_id="x"),
                    ev("u2", "i1", "click", T0 + timedelta(seconds=3)),
                ]
            )
        )
        old = store.write_generation(
            recs_frame([("u1", 1, "a", 0.9), ("u1", 2, "b", 0.8), ("u2", 1, "a", 0.7)]), "m1"
        )
        new = store.write_generation(
            recs_frame([("u1", 1, "c", 0.9), ("u2", 1, "c", 0.5), ("u2", 2, "d", 0.4)]),
            "m2",
            activate=False,
        )
        counts = store.delete_user("u1")
        assert counts == {"events": 3, "recommendations": 3, "users": 1}
        # u1 is gone from profile, events and every generation
        assert store.users()["user_id"].to_list() == ["u2"]
        assert store.events(user_ids=["u1"]).height == 0
        assert store.recommendations("u1").height == 0
        store.activate_generation(new)
        assert store.recommendations("u1").height == 0
        # u2 untouched in both generations
        assert store.events()["user_id"].to_list() == ["u2"]
        assert items_of(store.recommendations("u2")) == ["c", "d"]
        store.activate_generation(old)
        assert items_of(store.recommendations("u2")) == ["a"]
        # deleting again (or an unknown user) removes nothing
        assert store.delete_user("u1") == {"events": 0, "recommendations": 0, "users": 0}

    # -- recommendation generations ------------------------------------------------------------
    def test_recommendations_come_from_the_active_generation_in_rank_order(
        self, store: Store
    ) -> None:
        first = store.write_generation(
            recs_frame([("u1", 2, "b", 0.5), ("u1", 1, "a", 0.9), ("u1", 3, "c", 0.1)]), "m1"
        )
        got = store.recommendations("u1")
        assert got["rank"].to_list() == [1, 2, 3]
        assert items_of(got) == ["a", "b", "c"]
        assert got["score"].to_list() == [0.9, 0.5, 0.1]
        assert items_of(store.recommendations("u1", k=2)) == ["a", "b"]
        second = store.write_generation(
            recs_frame([("u1", 1, "z", 0.3), ("u2", 1, "y", 0.2)], source="als"), "m2"
        )
        assert second != first
        got = store.recommendations("u1")
        assert items_of(got) == ["z"]  # no row of the first generation leaks through
        assert got["source"].to_list() == ["als"]
        assert items_of(store.recommendations("u2")) == ["y"]
        assert store.recommendations("u3").height == 0

    def test_inactive_generation_is_invisible_until_activated(self, store: Store) -> None:
        old = store.write_generation(recs_frame([("u1", 1, "old", 1.0)]), "m1")
        new = store.write_generation(
            recs_frame([("u1", 1, "new", 1.0), ("u2", 1, "new2", 1.0)]), "m2", activate=False
        )
        assert items_of(store.recommendations("u1")) == ["old"]
        assert store.recommendations("u2").height == 0
        active = store.active_generation()
        assert active is not None and active.id == old
        store.activate_generation(new)
        assert items_of(store.recommendations("u1")) == ["new"]
        assert items_of(store.recommendations("u2")) == ["new2"]
        active = store.active_generation()
        assert active is not None and active.id == new

    def test_no_recommendations_before_any_activation(self, store: Store) -> None:
        gen = store.write_generation(recs_frame([("u1", 1, "a", 1.0)]), "m", activate=False)
        assert store.recommendations("u1").height == 0
        assert store.active_generation() is None
        assert [g.id for g in store.generations()] == [gen]

    def test_generations_mark_exactly_one_active(self, store: Store) -> None:
        a = store.write_generation(recs_frame([("u1", 1, "a", 1.0), ("u2", 1, "a", 1.0)]), "m1")
        b = store.write_generation(recs_frame([("u1", 1, "b", 1.0)]), "m2", activate=False)
        gens = {g.id: g for g in store.generations()}
        assert {a, b} <= set(gens)
        assert [g.id for g in gens.values() if g.active] == [a]
        assert gens[a].model == "m1"
        assert (gens[a].n_users, gens[a].n_rows) == (2, 2)
        assert (gens[b].n_users, gens[b].n_rows) == (1, 1)
        assert gens[a].created_at.tzinfo is not None
        store.activate_generation(b)
        assert [g.id for g in store.generations() if g.active] == [b]
        for n in range(3):
            store.write_generation(recs_frame([("u1", 1, f"x{n}", 1.0)]), f"m{n}")
            assert sum(g.active for g in store.generations()) == 1

    def test_activating_an_unknown_generation_fails_and_changes_nothing(self, store: Store) -> None:
        gen = store.write_generation(recs_frame([("u1", 1, "a", 1.0)]), "m")
        with pytest.raises(FeedrankError):
            store.activate_generation(gen + 1000)
        active = store.active_generation()
        assert active is not None and active.id == gen
        assert items_of(store.recommendations("u1")) == ["a"]

    def test_activating_an_unknown_generation_raises_not_found(self, store: Store) -> None:
        gen = store.write_generation(recs_frame([("u1", 1, "a", 1.0)]), "m")
        with pytest.raises(NotFoundError):
            store.activate_generation(gen + 1000)

    def test_reader_sees_whole_generations_while_a_new_one_is_activated(self, store: Store) -> None:
        check_readers_see_whole_generations(store, self.reader_for(store))

    # -- housekeeping --------------------------------------------------------------------------
    def test_stats_count_events_per_type_and_time_span(self, store: Store) -> None:
        store.upsert_users(pl.DataFrame({"user_id": ["u1", "u2"]}))
        store.upsert_items(pl.DataFrame({"item_id": ["i1"], "created_at": [T0]}))
        first = T0 - timedelta(days=2, microseconds=250)
        last = T0 + timedelta(days=1, microseconds=999)
        rows = [
            ev("u1", "i1", "click", T0),
            ev("u1", "i1", "click", first),
            ev("u2", "i1", "like", last),
            ev("u2", "", "login", T0),
            ev("u2", "i1", "click", T0, event_id="dup"),
            ev("u2", "i1", "click", T0, event_id="dup"),
        ]
        store.add_events(events_frame(rows))
        stats = store.stats()
        assert stats["users"] == 2
        assert stats["items"] == 1
        assert stats["events"] == 5
        assert stats["events_per_type"] == {"click": 3, "like": 1, "login": 1}
        assert datetime.fromisoformat(stats["first_event"]) == first
        assert datetime.fromisoformat(stats["last_event"]) == last

    def test_stats_of_an_empty_store(self, store: Store) -> None:
        stats = store.stats()
        assert (stats["users"], stats["items"], stats["events"]) == (0, 0, 0)
        assert stats["events_per_type"] == {}
        assert stats["first_event"] is None and stats["last_event"] is None

    def test_items_without_created_at_and_lookups_by_id(self, store: Store) -> None:
        store.upsert_items(pl.DataFrame({"item_id": ["a", "b"], "lang": ["en", "de"]}))
        store.upsert_users(pl.DataFrame({"user_id": ["u1", "u2"], "country": ["NO", "SE"]}))
        items = store.items(["b", "zz"])
        assert items["item_id"].to_list() == ["b"] and items["created_at"].to_list() == [None]
        assert store.users(["u2"])["country"].to_list() == ["SE"]
        assert store.items([]).height == 0

    def test_read_site_until_excludes_events_at_or_after_t(self, store: Store) -> None:
        t = T0 + timedelta(hours=1)
        us = timedelta(microseconds=1)
        store.upsert_users(pl.DataFrame({"user_id": ["u1"]}))
        store.upsert_items(
            pl.DataFrame({"item_id": ["old", "new"], "created_at": [T0, t]})  # 'new' appears at t
        )
        store.add_events(
            events_frame(
                [
                    ev("u1", "old", "click", T0),
                    ev("u1", "old", "like", t - us),
                    ev("u1", "old", "share", t),
                    ev("u1", "new", "click", t + us),
                ]
            )
        )
        data = read_site(store).until(t)
        assert data.events["type"].to_list() == ["click", "like"]
        assert data.items["item_id"].to_list() == ["old"]
        assert data.users["user_id"].to_list() == ["u1"]
        assert read_site(store, end=t).events.height == 2
        everything = read_site(store)
        assert everything.events.height == 4
        assert everything.items.height == 2
