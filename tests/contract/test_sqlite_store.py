"""The embedded SQLite store against the Store contract, plus what is SQLite-specific."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest

from feedrank.exceptions import StoreError
from feedrank.store import open_store
from feedrank.store.base import Store
from feedrank.store.sqlite import CACHE_KIB, SERVING_CACHE_KIB, SQLiteStore

from .store_contract import (
    T0,
    StoreContract,
    check_readers_see_whole_generations,
    ev,
    events_frame,
    recs_frame,
)


class TestSQLiteFileStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        s = SQLiteStore(str(tmp_path / "feedrank.db"))
        yield s
        s.close()

    def reader_for(self, store: Store) -> Store:
        # A second store object on the same file: its own connection, as another process has.
        assert isinstance(store, SQLiteStore)
        return SQLiteStore(store.path)


class TestSQLiteMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        s = open_store("sqlite:///:memory:")
        yield s
        s.close()

    def test_reader_sees_whole_generations_while_a_new_one_is_activated(self, store: Store) -> None:
        check_readers_see_whole_generations(store, store, n_generations=300)


def test_reader_thread_sharing_the_file_store_object_sees_whole_generations(
    tmp_path: Path,
) -> None:
    # the same SQLiteStore object used from two threads: one connection per thread
    store = SQLiteStore(str(tmp_path / "shared.db"))
    check_readers_see_whole_generations(store, store, n_generations=120)
    store.close()


def test_memory_url_forms_open_an_in_memory_store() -> None:
    for url in ("sqlite:///:memory:", "sqlite://:memory:"):
        s = open_store(url)
        assert isinstance(s, SQLiteStore)
        assert s.path == ":memory:"


def test_memory_stores_are_independent() -> None:
    a, b = open_store("sqlite:///:memory:"), open_store("sqlite:///:memory:")
    a.upsert_users(pl.DataFrame({"user_id": ["u1"]}))
    assert b.users().height == 0


def test_file_url_opens_the_same_file_again(tmp_path: Path) -> None:
    path = tmp_path / "site.db"
    s = open_store(f"sqlite:///{path}")  # absolute path: sqlite:////tmp/...
    assert isinstance(s, SQLiteStore)
    assert Path(s.path) == path
    s.add_events(events_frame([ev("0042", "i1", "click", T0)]))
    gen = s.write_generation(recs_frame([("0042", 1, "i9", 1.0)]), "m")
    s.close()
    assert path.exists()
    again = open_store(s.url)
    assert again.events()["user_id"].to_list() == ["0042"]
    assert again.events()["timestamp"].to_list() == [T0]
    active = again.active_generation()
    assert active is not None and active.id == gen
    assert again.recommendations("0042")["item_id"].to_list() == ["i9"]
    again.close()


def test_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(
        StoreError, match=r"\['elasticsearch', 'opensearch', 'sqlite'\].*'postgres://x/y'"
    ):
        open_store("postgres://x/y")
    with pytest.raises(StoreError, match="sqlite"):
        open_store("just-a-path.db")


def test_missing_directory_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        open_store(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    assert not (tmp_path / "no").exists()


def test_generations_are_pruned_to_the_active_and_the_previous_one() -> None:
    s = SQLiteStore(":memory:")
    ids = [s.write_generation(recs_frame([("u1", 1, f"g{n}", 1.0)]), f"m{n}") for n in range(4)]
    assert [g.id for g in s.generations()] == ids[-2:]
    s.activate_generation(ids[-2])  # roll back one generation
    assert s.recommendations("u1")["item_id"].to_list() == ["g2"]


def test_the_previously_served_generation_survives_for_rollback() -> None:
    s = SQLiteStore(":memory:")
    served = s.write_generation(recs_frame([("u1", 1, "served", 1.0)]), "m0")
    s.write_generation(recs_frame([("u1", 1, "draft", 1.0)]), "m1", activate=False)
    new = s.write_generation(recs_frame([("u1", 1, "new", 1.0)]), "m2", activate=False)
    s.activate_generation(new)
    s.activate_generation(served)
    assert s.recommendations("u1")["item_id"].to_list() == ["served"]


def test_durable_writes_sets_a_full_fsync_on_this_threads_connection(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = SQLiteStore(str(tmp_path / "d.db"))
    with store._read() as c:
        assert c.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    store.durable_writes()
    with store._read() as c:
        assert c.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_bounded_cache_shrinks_this_threads_connection_and_later_ones(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = SQLiteStore(str(tmp_path / "d.db"))

    def cache_kib() -> int:
        with store._read() as c:
            return -int(c.execute("PRAGMA cache_size").fetchone()[0])

    assert cache_kib() == CACHE_KIB  # a command's connection (a big import raises it meanwhile)
    store.bounded_cache()
    with ThreadPoolExecutor(1) as pool:
        later = pool.submit(cache_kib).result()
    assert (cache_kib(), later) == (SERVING_CACHE_KIB, SERVING_CACHE_KIB)


V1_SCHEMA = """
CREATE TABLE users (user_id TEXT PRIMARY KEY, attributes TEXT) WITHOUT ROWID;
CREATE TABLE items (item_id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, attributes TEXT) WITHOUT ROWID;
CREATE TABLE events (
    event_id TEXT, user_id TEXT NOT NULL, item_id TEXT NOT NULL, type TEXT NOT NULL,
    ts INTEGER NOT NULL, value REAL NOT NULL, position INTEGER, device TEXT, context TEXT);
CREATE UNIQUE INDEX events_id ON events (event_id) WHERE event_id IS NOT NULL;
CREATE UNIQUE INDEX events_natural ON events (user_id, item_id, type, ts) WHERE event_id IS NULL;
CREATE INDEX events_user_ts ON events (user_id, ts);
CREATE INDEX events_ts ON events (ts);
INSERT INTO users VALUES ('u1', '{"country": "NO"}');
INSERT INTO items VALUES ('i1', 1709294400000000, '{"lang": "en"}');
INSERT INTO events VALUES (NULL, 'u1', 'i1', 'click', 1709294400000000, 1.0, 1, NULL, NULL);
INSERT INTO events VALUES ('e2', 'u1', 'i1', 'like', 1709294401000000, 1.0, NULL, NULL, NULL);
"""


def test_a_store_written_by_the_previous_version_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as c:
        c.executescript(V1_SCHEMA)
    store = SQLiteStore(str(path))
    assert store.events()["type"].to_list() == ["click", "like"]
    assert store.item_counts().select("type", "n").sort("type").rows() == [
        ("click", 1),
        ("like", 1),
    ]
    assert store.stats()["events"] == 2
    # the new key still keeps events idempotent, and items may now lack a creation time
    store.add_events(events_frame([ev("u1", "i1", "click", T0)]))
    assert store.events().height == 2
    store.upsert_items(pl.DataFrame({"item_id": ["i2"]}))
    assert store.items(["i2"])["created_at"].to_list() == [None]
    store.close()
    assert SQLiteStore(str(path)).events().height == 2  # opening again migrates nothing
