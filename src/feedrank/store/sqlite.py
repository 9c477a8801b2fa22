"""The embedded store: one SQLite file in WAL mode. Nothing to start, safe for one writer and
many readers; generations of recommendations are swapped by one UPDATE in one transaction."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from feedrank.exceptions import NotFoundError, StoreError
from feedrank.schema import EVENT_COLUMNS
from feedrank.store.base import RECOMMENDATION_COLUMNS, Generation, Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (user_id TEXT PRIMARY KEY, attributes TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, attributes TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT, user_id TEXT NOT NULL, item_id TEXT NOT NULL, type TEXT NOT NULL,
    ts INTEGER NOT NULL, value REAL NOT NULL, position INTEGER, device TEXT, context TEXT);
-- Idempotence: an event is the same event by its id, or, without one, by who/what/which/when.
CREATE UNIQUE INDEX IF NOT EXISTS events_id ON events (event_id) WHERE event_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS events_natural ON events (user_id, item_id, type, ts)
    WHERE event_id IS NULL;
CREATE INDEX IF NOT EXISTS events_user_ts ON events (user_id, ts);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS generations (
    id INTEGER PRIMARY KEY, model TEXT NOT NULL, created_at INTEGER NOT NULL,
    n_users INTEGER NOT NULL, n_rows INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS recommendations (
    generation INTEGER NOT NULL, user_id TEXT NOT NULL, rank INTEGER NOT NULL,
    item_id TEXT NOT NULL, score REAL NOT NULL, source TEXT,
    PRIMARY KEY (generation, user_id, rank)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
"""

_EVENT_SELECT = (
    "SELECT event_id, user_id, item_id, type, ts, value, position, device, context FROM events"
)


def _us(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1_000_000)


def _attributes_json(df: pl.DataFrame, id_cols: Sequence[str]) -> pl.Expr:
    attrs = [c for c in df.columns if c not in id_cols]
    if not attrs:
        return pl.lit(None, pl.String)
    return pl.struct(attrs).struct.json_encode()


def _decode_attributes(df: pl.DataFrame) -> pl.DataFrame:
    nonnull = df["attributes"].drop_nulls()
    if nonnull.is_empty():
        return df.drop("attributes")
    decoded = df["attributes"].fill_null("{}").str.json_decode(infer_schema_length=None)
    if not isinstance(decoded.dtype, pl.Struct) or not decoded.dtype.fields:
        return df.drop("attributes")
    return df.drop("attributes").with_columns(decoded.struct.unnest())


class SQLiteStore(Store):
    def __init__(self, path: str) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self._local = threading.local()
        if path != ":memory:":
            parent = Path(path).parent
            if not parent.exists():
                raise StoreError(f"store directory {parent} does not exist (url {self.url})")
        self._memory_conn: sqlite3.Connection | None = None
        # An in-memory database is one connection; this lock keeps its statements from
        # interleaving across threads (a file store gives each thread its own connection).
        self._memory_lock = threading.RLock()
        with self._read() as c:
            c.executescript(_SCHEMA)

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        rest = url.split("://", 1)[1]
        path = rest[1:] if rest.startswith("/") else rest  # sqlite:///rel.db, sqlite:////abs.db
        return cls(path or ":memory:")

    # -- connections: one per thread (sqlite3 objects are not shared across threads) -----------
    def _conn(self) -> sqlite3.Connection:
        if self.path == ":memory:":
            if self._memory_conn is None:
                self._memory_conn = sqlite3.connect(
                    ":memory:", check_same_thread=False, isolation_level=None
                )
            return self._memory_conn
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a commit survives a killed process (WAL), not a power cut; durable_writes()
            # asks for a full fsync per commit.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA cache_size=-262144")  # 256 MiB: index inserts stay in memory
            conn.execute("PRAGMA foreign_keys=OFF")
            self._local.conn = conn
        return conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        if self.path == ":memory:":
            with self._memory_lock:
                yield self._conn()
        else:
            yield self._conn()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._read() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def durable_writes(self) -> None:
        with self._read() as c:
            c.execute("PRAGMA synchronous=FULL")  # this thread's connection only

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self._memory_conn is not None:
            self._memory_conn.close()
            self._memory_conn = None

    # -- writes ----------------------------------------------------------------------------------
    def upsert_users(self, users: pl.DataFrame) -> int:
        rows = users.select("user_id", _attributes_json(users, ["user_id"]).alias("a"))
        with self._tx() as c:
            c.executemany("INSERT OR REPLACE INTO users VALUES (?, ?)", rows.iter_rows())
        return rows.height

    def upsert_items(self, items: pl.DataFrame) -> int:
        rows = items.select(
            "item_id",
            pl.col("created_at").dt.epoch("us"),
            _attributes_json(items, ["item_id", "created_at"]).alias("a"),
        )
        with self._tx() as c:
            c.executemany("INSERT OR REPLACE INTO items VALUES (?, ?, ?)", rows.iter_rows())
        return rows.height

    def add_events(self, events: pl.DataFrame) -> int:
        if events.is_empty():
            return 0
        rows = events.select(
            "event_id",
            "user_id",
            "item_id",
            "type",
            pl.col("timestamp").dt.epoch("us"),
            "value",
            "position",
            "device",
            "context",
        ).sort("user_id", "item_id", "type", "timestamp")
        # Sorted by the unique key: index pages are filled in order instead of at random, which
        # makes large imports several times faster. (Rows with the same timestamp are read
        # back in this order too.)
        with self._tx() as c:
            before = c.total_changes
            c.executemany(
                "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows.iter_rows(),
            )
            return c.total_changes - before

    # -- reads -----------------------------------------------------------------------------------
    def _frame(self, sql: str, params: Sequence[Any], schema: dict[str, Any]) -> pl.DataFrame:
        with self._read() as c:
            rows = c.execute(sql, params).fetchall()
        return pl.DataFrame(rows, schema=schema, orient="row")

    def users(self) -> pl.DataFrame:
        df = self._frame(
            "SELECT user_id, attributes FROM users ORDER BY user_id",
            (),
            {"user_id": pl.String, "attributes": pl.String},
        )
        return _decode_attributes(df)

    def items(self) -> pl.DataFrame:
        df = self._frame(
            "SELECT item_id, created_at, attributes FROM items ORDER BY item_id",
            (),
            {"item_id": pl.String, "created_at": pl.Int64, "attributes": pl.String},
        )
        df = df.with_columns(
            pl.col("created_at").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        )
        return _decode_attributes(df)

    def events(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        user_ids: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        where: list[str] = []
        params: list[Any] = []
        if start is not None:
            where.append("ts >= ?")
            params.append(_us(start))
        if end is not None:
            where.append("ts < ?")
            params.append(_us(end))
        if user_ids is not None:
            where.append(f"user_id IN ({','.join('?' * len(user_ids))})")
            params.extend(user_ids)
        if types is not None:
            where.append(f"type IN ({','.join('?' * len(types))})")
            params.extend(types)
        sql = _EVENT_SELECT + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY ts, rowid"
        schema = {**EVENT_COLUMNS, "timestamp": pl.Int64}
        df = self._frame(sql, params, schema)
        return df.with_columns(
            pl.col("timestamp").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        )

    def delete_user(self, user_id: str) -> dict[str, int]:
        with self._tx() as c:
            counts = {
                "events": c.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount,
                "recommendations": c.execute(
                    "DELETE FROM recommendations WHERE user_id = ?", (user_id,)
                ).rowcount,
                "users": c.execute("DELETE FROM users WHERE user_id = ?", (user_id,)).rowcount,
            }
        return counts

    # -- generations -----------------------------------------------------------------------------
    def write_generation(self, recs: pl.DataFrame, model: str, activate: bool = True) -> int:
        recs = recs.select(
            [
                pl.col(c).cast(t) if c in recs.columns else pl.lit(None, t).alias(c)
                for c, t in RECOMMENDATION_COLUMNS.items()
            ]
        )
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO generations (model, created_at, n_users, n_rows) VALUES (?, ?, ?, ?)",
                (model, int(time.time() * 1e6), recs["user_id"].n_unique(), recs.height),
            )
            gen = int(cur.lastrowid or 0)
            c.executemany(
                "INSERT INTO recommendations VALUES (?, ?, ?, ?, ?, ?)",
                recs.select(pl.lit(gen), *RECOMMENDATION_COLUMNS).iter_rows(),
            )
        if activate:
            self.activate_generation(gen)
        return gen

    def activate_generation(self, generation_id: int) -> None:
        with self._tx() as c:
            if not c.execute("SELECT 1 FROM generations WHERE id = ?", (generation_id,)).fetchone():
                raise NotFoundError(f"generation {generation_id} does not exist")
            previous = c.execute(
                "SELECT value FROM meta WHERE key = 'active_generation'"
            ).fetchone()
            c.execute(
                "INSERT OR REPLACE INTO meta VALUES ('active_generation', ?)", (str(generation_id),)
            )
            # Keep the new one, the one it replaces (for rollback) and any written after it
            # and not yet activated; drop the rest.
            keep = [generation_id, *([int(previous[0])] if previous else [])]
            keep += [
                r[0] for r in c.execute("SELECT id FROM generations WHERE id > ?", (generation_id,))
            ]
            marks = ",".join("?" * len(keep))
            c.execute(f"DELETE FROM recommendations WHERE generation NOT IN ({marks})", keep)
            c.execute(f"DELETE FROM generations WHERE id NOT IN ({marks})", keep)

    def _active_id(self) -> int | None:
        with self._read() as c:
            row = c.execute("SELECT value FROM meta WHERE key = 'active_generation'").fetchone()
        return int(row[0]) if row else None

    def generations(self) -> list[Generation]:
        active = self._active_id()
        with self._read() as c:
            rows = c.execute(
                "SELECT id, model, created_at, n_users, n_rows FROM generations ORDER BY id"
            ).fetchall()
        return [
            Generation(
                id=r[0],
                model=r[1],
                created_at=datetime.fromtimestamp(r[2] / 1e6, tz=UTC),
                n_users=r[3],
                n_rows=r[4],
                active=r[0] == active,
            )
            for r in rows
        ]

    def recommendations(self, user_id: str, k: int | None = None) -> pl.DataFrame:
        # One statement reads the active pointer and the rows: a consistent snapshot under WAL.
        sql = (
            "SELECT user_id, rank, item_id, score, source FROM recommendations WHERE generation = "
            "(SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'active_generation') "
            "AND user_id = ? ORDER BY rank"
        )
        params: list[Any] = [user_id]
        if k is not None:
            sql += " LIMIT ?"
            params.append(k)
        return self._frame(sql, params, dict(RECOMMENDATION_COLUMNS))

    # -- housekeeping ----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        with self._read() as c:
            return self._stats(c)

    def _stats(self, c: sqlite3.Connection) -> dict[str, Any]:
        per_type = dict(
            c.execute("SELECT type, COUNT(*) FROM events GROUP BY type ORDER BY type").fetchall()
        )
        lo, hi = c.execute("SELECT MIN(ts), MAX(ts) FROM events").fetchone()

        def iso(us: int | None) -> str | None:
            return datetime.fromtimestamp(us / 1e6, tz=UTC).isoformat() if us is not None else None

        return {
            "store": self.url,
            "users": c.execute("SELECT COUNT(*) FROM users").fetchone()[0],
            "items": c.execute("SELECT COUNT(*) FROM items").fetchone()[0],
            "events": sum(per_type.values()),
            "events_per_type": per_type,
            "first_event": iso(lo),
            "last_event": iso(hi),
        }


__all__ = ["SQLiteStore"]
