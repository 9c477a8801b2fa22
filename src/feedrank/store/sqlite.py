"""The embedded store: one SQLite file in WAL mode. Nothing to start, safe for one writer and
many readers; generations of recommendations are swapped by one UPDATE in one transaction.

Events carry an AUTOINCREMENT `seq`: ids are never reused, so `seq` is the change feed's
watermark. The unique key (user, time, item, type, event id) doubles as the index of a user's
history. Counters are updated in the transaction that writes the events, from the new rows only
(aggregated in Polars, one upsert per key)."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from feedrank.exceptions import NotFoundError, StoreError
from feedrank.schema import EVENT_COLUMNS
from feedrank.store.base import (
    ITEM_COUNT_COLUMNS,
    RECOMMENDATION_COLUMNS,
    USER_COUNT_COLUMNS,
    Changes,
    Generation,
    Store,
    Watermark,
)

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (user_id TEXT PRIMARY KEY, attributes TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY, created_at INTEGER, attributes TEXT, seq INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_seq ON items (seq);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT, user_id TEXT NOT NULL, item_id TEXT NOT NULL, type TEXT NOT NULL,
    ts INTEGER NOT NULL, value REAL NOT NULL, position INTEGER, device TEXT, context TEXT);
-- Idempotence: an event is the same event by its id, or, without one, by who/when/what/which.
-- The second index is also how a user's history is read (user_id, then time).
CREATE UNIQUE INDEX IF NOT EXISTS events_id ON events (event_id) WHERE event_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS events_key ON events (user_id, ts, item_id, type, ifnull(event_id, ''));
CREATE TABLE IF NOT EXISTS item_counts (
    item_id TEXT NOT NULL, type TEXT NOT NULL, value REAL NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (item_id, type, value)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_counts (
    user_id TEXT NOT NULL, type TEXT NOT NULL, value REAL NOT NULL, n INTEGER NOT NULL,
    first_ts INTEGER NOT NULL, last_ts INTEGER NOT NULL,
    PRIMARY KEY (user_id, type, value)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS erasures (seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS settings (
    version INTEGER PRIMARY KEY AUTOINCREMENT, stored_at INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS generations (
    id INTEGER PRIMARY KEY, model TEXT NOT NULL, created_at INTEGER NOT NULL,
    n_users INTEGER NOT NULL, n_rows INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS recommendations (
    generation INTEGER NOT NULL, user_id TEXT NOT NULL, rank INTEGER NOT NULL,
    item_id TEXT NOT NULL, score REAL NOT NULL, source TEXT,
    PRIMARY KEY (generation, user_id, rank)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
"""
# Parameters bound per statement by _insert_rows (SQLite's limit is 32766 since 3.32, 999 before).
MAX_PARAMS = 900
STAGE_ROWS = 100_000
MIN_FREE_BYTES = 1 << 20  # less free space on the store's disk: check_writable says it is full
# Page cache per connection: small for reads (a scan of the whole table would otherwise keep
# its pages, counted in the process's memory), large while a big batch fills the indexes, and
# SQLite's default in a server, whose threads each hold a connection (bounded_cache).
CACHE_KIB = 32 * 1024
BULK_CACHE_KIB = 256 * 1024
SERVING_CACHE_KIB = 2_000
_EVENT_FIELDS = "event_id, user_id, item_id, type, ts, value, position, device, context"
_READ_SCHEMA = {**EVENT_COLUMNS, "timestamp": pl.Int64()}


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def _us(t: datetime) -> int:
    """Exact epoch microseconds (float seconds would lose the last microsecond)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - EPOCH) // MICROSECOND


def _time(us: int) -> datetime:
    return EPOCH + us * MICROSECOND


# Times are read back within what every reader can hold (a Python datetime, years 1 to 9999):
# a row an older version let in outside the time range loads, and `stats` counts it.
_LO_US = _us(datetime(1, 1, 2, tzinfo=UTC))
_HI_US = _us(datetime(9999, 12, 30, tzinfo=UTC))


def _clamped(col: str) -> str:
    return f"min(max({col}, {_LO_US}), {_HI_US})"


_EVENT_READ = _EVENT_FIELDS.replace(" ts,", f" {_clamped('ts')} AS ts,")


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


def _to_time(df: pl.DataFrame, *cols: str) -> pl.DataFrame:
    return df.with_columns(
        pl.col(c).cast(pl.Datetime("us")).dt.replace_time_zone("UTC") for c in cols
    )


def _in(column: str, values: Sequence[str]) -> tuple[str, list[Any]]:
    return f"{column} IN ({','.join('?' * len(values))})", list(values)


class SQLiteStore(Store):
    def __init__(self, path: str) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self._local = threading.local()
        self._cache_kib = CACHE_KIB  # of each connection opened from now on
        if path != ":memory:":
            parent = Path(path).parent
            if not parent.exists():
                raise StoreError(f"store directory {parent} does not exist (url {self.url})")
            _check_store_file(Path(path))
        self._memory_conn: sqlite3.Connection | None = None
        # An in-memory database is one connection; this lock keeps its statements from
        # interleaving across threads (a file store gives each thread its own connection).
        self._memory_lock = threading.RLock()
        with self._tx() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            old = version < SCHEMA_VERSION and _has_table(c, "events")
            if old:
                _migrate_v1(c)
            _run_script(c, _SCHEMA)
            if old:
                _rebuild_counters(c)
            c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

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
            # asks for a full fsync per commit. secure_delete: an erased user's bytes are
            # overwritten in the pages they leave, not only unlinked.
            sync = "FULL" if getattr(self._local, "durable", False) else "NORMAL"
            conn.execute(f"PRAGMA synchronous={sync}")
            conn.execute("PRAGMA main.secure_delete=ON")
            conn.execute(f"PRAGMA cache_size=-{self._cache_kib}")
            self._local.conn = conn
        return conn

    def _drop_conn(self) -> None:
        """After a fault this thread opens a new connection: one opened while the file was
        read-only stays read-only after the file is writable again."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        try:
            if self.path == ":memory:":
                with self._memory_lock:
                    yield self._conn()
            else:
                yield self._conn()
        except sqlite3.DatabaseError as exc:
            # Faults of the file (read-only, disk full, I/O, not a database), not of a query
            # (those are DatabaseError's subclasses IntegrityError, ProgrammingError, ...).
            if type(exc) not in (sqlite3.OperationalError, sqlite3.DatabaseError):
                raise
            self._drop_conn()
            raise StoreError(f"the store failed: {exc}") from exc

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._read() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # a failed COMMIT (disk full) may have rolled back
                    conn.execute("ROLLBACK")
                raise

    def durable_writes(self) -> None:
        # This thread's connections, now and after a fault reopens one.
        self._local.durable = True
        self._drop_conn()

    def check_writable(self) -> None:
        # A small write can fit in pages the WAL already has while a real batch needs new
        # ones: below MIN_FREE_BYTES the disk counts as full.
        if self.path != ":memory:":
            free = shutil.disk_usage(Path(self.path).resolve().parent).free
            if free < MIN_FREE_BYTES:
                raise StoreError(f"the store failed: its disk is full ({free} bytes free)")
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO meta VALUES ('write_check', ?)", (str(time.time()),))

    def bounded_cache(self) -> None:
        # Each thread has its own connection, and with the import-sized cache each one kept up
        # to 256 MiB of the pages it had read: a server's RSS grew with the store it read.
        if self.path == ":memory:":
            return  # the cache is the database
        self._cache_kib = SERVING_CACHE_KIB
        with self._read() as c:  # this thread's connection: shrinks to the new size
            c.execute(f"PRAGMA cache_size=-{SERVING_CACHE_KIB}")

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
        rows = users.select("user_id", _attributes_json(users, ["user_id"]).alias("attributes"))
        with self._tx() as c:
            _insert_rows(c, "INSERT OR REPLACE INTO users", rows)
        return rows.height

    def upsert_items(self, items: pl.DataFrame) -> int:
        created = (
            pl.col("created_at").dt.epoch("us")
            if "created_at" in items.columns
            else pl.lit(None, pl.Int64)
        )
        with self._tx() as c:
            seq = _next_seq(c, "items_seq")
            rows = items.select(
                "item_id",
                created.alias("created_at"),
                _attributes_json(items, ["item_id", "created_at"]).alias("attributes"),
                pl.lit(seq).alias("seq"),
            )
            _insert_rows(c, "INSERT OR REPLACE INTO items", rows)
        return rows.height

    def add_events(self, events: pl.DataFrame) -> int:
        if events.is_empty():
            return 0
        rows = events.select(
            "event_id",
            "user_id",
            "item_id",
            "type",
            pl.col("timestamp").dt.epoch("us").alias("ts"),
            "value",
            "position",
            "device",
            "context",
        ).sort("user_id", "ts", "item_id", "type")
        few = rows.height * rows.width <= MAX_PARAMS  # a live request's events: one statement
        with self._cache(None if few else BULK_CACHE_KIB), self._tx() as c:
            before_seq = c.execute("SELECT ifnull(max(seq), 0) FROM events").fetchone()[0]
            if few:
                before = c.total_changes
                _insert_rows(c, "INSERT OR IGNORE INTO events", rows)
                new = c.total_changes - before
            else:
                new = _insert_staged(c, rows)
            if new == 0:
                return 0
            # The new rows are the batch itself when nothing was a duplicate; else read them back.
            fresh = rows if new == rows.height else self._select_events(c, "seq > ?", [before_seq])
            _count(c, fresh, +1)
            return new

    @contextmanager
    def _cache(self, kib: int | None) -> Iterator[None]:
        """This thread's page cache at `kib` meanwhile (None: unchanged), set back after the
        commit: shrinking it inside a transaction would spill dirty pages."""
        if kib is None or self.path == ":memory:":
            yield
            return
        with self._read() as c:
            c.execute(f"PRAGMA cache_size=-{kib}")
            try:
                yield
            finally:
                c.execute(f"PRAGMA cache_size=-{self._cache_kib}")

    def delete_user(self, user_id: str) -> dict[str, int]:
        with self._tx() as c:
            gone = self._select_events(c, "user_id = ?", [user_id])
            _count(c, gone, -1)
            counts = {
                "events": c.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount,
                "recommendations": c.execute(
                    "DELETE FROM recommendations WHERE user_id = ?", (user_id,)
                ).rowcount,
                "users": c.execute("DELETE FROM users WHERE user_id = ?", (user_id,)).rowcount,
            }
            c.execute("INSERT INTO erasures (at) VALUES (?)", (int(time.time() * 1e6),))
        self._checkpoint()
        return counts

    def _checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it: the erased rows' old pages leave
        the -wal file (secure_delete has zeroed them in the database). A reader mid-snapshot
        can hold the WAL; a later erasure or checkpoint then finishes the job."""
        if self.path != ":memory:":
            with self._read() as c:
                c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

    # -- reads -----------------------------------------------------------------------------------
    def _frame(self, sql: str, params: Sequence[Any], schema: dict[str, Any]) -> pl.DataFrame:
        with self._read() as c:
            rows = c.execute(sql, params).fetchall()
        return pl.DataFrame(rows, schema=schema, orient="row")

    def users(self, user_ids: Sequence[str] | None = None) -> pl.DataFrame:
        where, params = _in("user_id", user_ids) if user_ids is not None else ("1", [])
        df = self._frame(
            f"SELECT user_id, attributes FROM users WHERE {where} ORDER BY user_id",
            params,
            {"user_id": pl.String, "attributes": pl.String},
        )
        return _decode_attributes(df)

    def items(self, item_ids: Sequence[str] | None = None) -> pl.DataFrame:
        where, params = _in("item_id", item_ids) if item_ids is not None else ("1", [])
        return self._items(f"WHERE {where}", params)

    def _items(self, where: str, params: Sequence[Any]) -> pl.DataFrame:
        df = self._frame(
            f"SELECT item_id, {_clamped('created_at')}, attributes FROM items {where} "
            "ORDER BY item_id",
            params,
            {"item_id": pl.String, "created_at": pl.Int64, "attributes": pl.String},
        )
        return _decode_attributes(_to_time(df, "created_at"))

    def _select_events(
        self,
        c: sqlite3.Connection,
        where: str,
        params: Sequence[Any],
        limit: int | None = None,
    ) -> pl.DataFrame:
        """Events in seq order with the store's raw columns: seq, ..., ts (epoch microseconds)."""
        sql = f"SELECT seq, {_EVENT_READ} FROM events WHERE {where} ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = c.execute(sql, params).fetchall()
        schema = {"seq": pl.Int64(), **_READ_SCHEMA}
        return pl.DataFrame(rows, schema=schema, orient="row").rename({"timestamp": "ts"})

    def scan_events(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        user_ids: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        batch_rows: int = 100_000,
    ) -> Iterator[pl.DataFrame]:
        where: list[str] = []
        params: list[Any] = []
        if start is not None:
            where.append("ts >= ?")
            params.append(_us(start))
        if end is not None:
            where.append("ts < ?")
            params.append(_us(end))
        if user_ids is not None:
            clause, ids = _in("user_id", user_ids)
            where.append(clause)
            params.extend(ids)
        if types is not None:
            clause, ts = _in("type", types)
            where.append(clause)
            params.extend(ts)
        sql = f"SELECT {_EVENT_READ} FROM events"
        sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY ts, seq"
        with self._read() as c:
            cur = c.execute(sql, params)
            while rows := cur.fetchmany(batch_rows):
                yield _to_time(pl.DataFrame(rows, schema=_READ_SCHEMA, orient="row"), "timestamp")

    def seen_items(self, user_id: str) -> tuple[set[str], datetime | None]:
        with self._read() as c:
            rows = c.execute(
                f"SELECT item_id, type, {_clamped('ts')} FROM events WHERE user_id = ?", (user_id,)
            ).fetchall()
        if not rows:
            return set(), None
        seen = {i for i, t, _ in rows if i and t != "impression"}
        return seen, _time(max(ts for _, _, ts in rows))

    def item_counts(self) -> pl.DataFrame:
        return self._frame(
            "SELECT item_id, type, value, n FROM item_counts", (), dict(ITEM_COUNT_COLUMNS)
        )

    def user_counts(self, user_ids: Sequence[str] | None = None) -> pl.DataFrame:
        where, params = _in("user_id", user_ids) if user_ids is not None else ("1", [])
        df = self._frame(
            f"SELECT user_id, type, value, n, {_clamped('first_ts')}, {_clamped('last_ts')} "
            f"FROM user_counts WHERE {where}",
            params,
            {**USER_COUNT_COLUMNS, "first_ts": pl.Int64, "last_ts": pl.Int64},
        )
        return _to_time(df, "first_ts", "last_ts")

    def newest_event_time(self) -> datetime | None:
        with self._read() as c:
            (us,) = c.execute(f"SELECT {_clamped('MAX(last_ts)')} FROM user_counts").fetchone()
        return None if us is None else _time(us)

    # -- change feed -------------------------------------------------------------------------------
    def watermark(self) -> Watermark:
        with self._read() as c:
            return _watermark(c)

    def changes(self, since: Watermark, max_events: int = 100_000) -> Changes:
        with self._read() as c:
            c.execute("BEGIN")  # one snapshot for every read below
            try:
                now = _watermark(c)
                events = self._select_events(
                    c, "seq > ? AND seq <= ?", [since.events, now.events], limit=max_events
                )
                items = self._items("WHERE seq > ? AND seq <= ?", [since.items, now.items])
            finally:
                c.execute("COMMIT")
        # More than max_events new: resume after the last one read.
        upto = int(events["seq"].max()) if events.height == max_events else now.events  # type: ignore[arg-type]
        events = _to_time(events.drop("seq").rename({"ts": "timestamp"}), "timestamp")
        return Changes(
            events, items, now.erasures > since.erasures, Watermark(upto, now.items, now.erasures)
        )

    # -- settings ------------------------------------------------------------------------------------
    def put_settings(self, settings: dict[str, Any]) -> int:
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO settings (stored_at, body) VALUES (?, ?)",
                (int(time.time() * 1e6), json.dumps(settings, sort_keys=True, default=list)),
            )
            return int(cur.lastrowid or 0)

    def settings_versions(self) -> list[tuple[int, datetime]]:
        with self._read() as c:
            rows = c.execute("SELECT version, stored_at FROM settings ORDER BY version").fetchall()
        return [(v, _time(t)) for v, t in rows]

    def stored_settings(self, version: int | None = None) -> dict[str, Any] | None:
        with self._read() as c:
            row = (
                c.execute("SELECT body FROM settings ORDER BY version DESC LIMIT 1").fetchone()
                if version is None
                else c.execute("SELECT body FROM settings WHERE version = ?", (version,)).fetchone()
            )
        if row is None and version is not None:
            raise NotFoundError(f"settings version {version} does not exist")
        return json.loads(row[0]) if row else None

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
                created_at=_time(r[2]),
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
        """From the counters: no scan of the event table."""
        with self._read() as c:
            per_type = dict(
                c.execute(
                    "SELECT type, SUM(n) FROM user_counts GROUP BY type ORDER BY type"
                ).fetchall()
            )
            lo, hi = c.execute(
                f"SELECT {_clamped('MIN(first_ts)')}, {_clamped('MAX(last_ts)')} FROM user_counts"
            ).fetchone()
            # Cheap first (the counters), exact only when some user has such a time.
            start, end = (_us(t) for t in self.settings().time_bounds())
            outside = "first_ts < ? OR last_ts >= ?"
            out_of_range = (
                c.execute(
                    "SELECT COUNT(*) FROM events WHERE ts < ? OR ts >= ?", (start, end)
                ).fetchone()[0]
                if c.execute(
                    f"SELECT 1 FROM user_counts WHERE {outside} LIMIT 1", (start, end)
                ).fetchone()
                else 0
            )
            n_users = c.execute("SELECT COUNT(*) FROM users").fetchone()[0]
            n_items = c.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            active_users = c.execute("SELECT COUNT(DISTINCT user_id) FROM user_counts").fetchone()[
                0
            ]

        def iso(us: int | None) -> str | None:
            return _time(us).isoformat() if us is not None else None

        return {
            "store": self.url,
            "users": n_users,
            "users_with_events": active_users,
            "items": n_items,
            "events": sum(per_type.values()),
            "events_per_type": per_type,
            "first_event": iso(lo),
            "last_event": iso(hi),
            "events_out_of_time_range": out_of_range,
        }


# -- helpers ----------------------------------------------------------------------------------------


def _check_store_file(path: Path) -> None:
    """An existing file must be a feedrank store (or an older one) before anything is written
    to it: SQLite would take an empty file for an empty database and fill it."""
    if not path.exists():
        return  # a new store
    name = path.name
    wal = Path(f"{path}-wal")
    if path.is_dir():
        raise StoreError(f"{name} is not a feedrank store: it is a directory")
    if path.stat().st_size == 0 and not (wal.exists() and wal.stat().st_size):
        raise StoreError(f"{name} is not a feedrank store: it is an empty file (0 bytes)")
    try:
        uri = f"{path.resolve().as_uri()}?mode=ro"  # read only: a foreign file stays as it was
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as c:
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{name} is not a feedrank store: {exc}") from exc
    if tables and "events" not in tables:
        raise StoreError(
            f"{name} is not a feedrank store: an SQLite database with other tables "
            f"({', '.join(sorted(tables)[:5])})"
        )


def _run_script(c: sqlite3.Connection, script: str) -> None:
    """executescript would COMMIT the open transaction; run the statements one by one."""
    for stmt in script.split(";"):
        if stmt.strip():
            c.execute(stmt)


def _has_table(c: sqlite3.Connection, name: str) -> bool:
    return bool(
        c.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone()
    )


def _next_seq(c: sqlite3.Connection, key: str) -> int:
    row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    seq = (int(row[0]) if row else 0) + 1
    c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(seq)))
    return seq


def _watermark(c: sqlite3.Connection) -> Watermark:
    seqs = dict(c.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
    row = c.execute("SELECT value FROM meta WHERE key = 'items_seq'").fetchone()
    return Watermark(
        int(seqs.get("events", 0)), int(row[0]) if row else 0, int(seqs.get("erasures", 0))
    )


def _insert_staged(c: sqlite3.Connection, rows: pl.DataFrame) -> int:
    """INSERT OR IGNORE of many events; the number new. Staged first: binding many rows per
    statement into a table without indexes is cheap, and one INSERT ... SELECT in key order
    then fills the indexes' pages in order (3x faster than binding row by row into the
    indexed table)."""
    c.execute(f"CREATE TEMP TABLE IF NOT EXISTS staged_events ({_EVENT_FIELDS})")
    c.execute("DELETE FROM temp.staged_events")
    for start in range(0, rows.height, STAGE_ROWS):  # Python objects for a slice at a time
        _insert_rows(c, "INSERT INTO temp.staged_events", rows.slice(start, STAGE_ROWS))
    before = c.total_changes
    c.execute(
        f"INSERT OR IGNORE INTO events ({_EVENT_FIELDS}) "
        f"SELECT {_EVENT_FIELDS} FROM temp.staged_events ORDER BY rowid"
    )
    new = c.total_changes - before
    c.execute("DELETE FROM temp.staged_events")
    return new


def _insert_rows(c: sqlite3.Connection, into: str, rows: pl.DataFrame, tail: str = "") -> None:
    """`into` (columns) VALUES (...), (...), ... `tail` for every row of the frame, as many
    rows per statement as MAX_PARAMS allows (SQLite steps once per statement, not per row).
    Columns null in every row are left to their default, NULL, instead of bound: a bound
    NULL costs as much as a value."""
    cols = [col for col in rows.columns if rows[col].null_count() < rows.height]
    if rows.is_empty() or not cols:
        return
    width = len(cols)
    per = max(1, MAX_PARAMS // width)
    flat: list[Any] = [None] * (rows.height * width)
    for j, col in enumerate(cols):  # row-major, by strided slice assignment (no tuples)
        flat[j::width] = rows[col].to_list()
    full, rest = divmod(rows.height, per)
    one = "(" + ", ".join("?" * width) + ")"
    head = f"{into} ({', '.join(cols)}) VALUES"
    if full:
        step = per * width
        c.executemany(
            f"{head} {', '.join([one] * per)} {tail}",
            (flat[i : i + step] for i in range(0, full * step, step)),
        )
    if rest:
        c.execute(f"{head} {', '.join([one] * rest)} {tail}", flat[full * per * width :])


def _count(c: sqlite3.Connection, events: pl.DataFrame, sign: int) -> None:
    """Add (sign +1) or remove (-1) the events' contribution to the counters. Events carry the
    store's raw columns (ts as epoch microseconds)."""
    if events.is_empty():
        return
    items = (
        events.filter(pl.col("item_id") != "")
        .group_by("item_id", "type", "value")
        .agg(n=pl.len() * sign)
        .sort("item_id", "type", "value")  # in key order: the upserts walk the b-tree once
    )
    users = (
        events.group_by("user_id", "type", "value")
        .agg(n=pl.len() * sign, first_ts=pl.col("ts").min(), last_ts=pl.col("ts").max())
        .sort("user_id", "type", "value")
    )
    _insert_rows(
        c,
        "INSERT INTO item_counts",
        items,
        "ON CONFLICT DO UPDATE SET n = n + excluded.n",
    )
    if sign > 0:
        _insert_rows(
            c,
            "INSERT INTO user_counts",
            users,
            "ON CONFLICT DO UPDATE SET n = n + excluded.n, first_ts = min(first_ts, "
            "excluded.first_ts), last_ts = max(last_ts, excluded.last_ts)",
        )
    else:  # only whole users are removed: their counters go with them
        c.executemany(
            "DELETE FROM user_counts WHERE user_id = ?",
            users.select("user_id").unique().iter_rows(),
        )
    c.execute("DELETE FROM item_counts WHERE n <= 0")


def _migrate_v1(c: sqlite3.Connection) -> None:
    """A store written before schema 2: events get a never-reused seq and the new key, items
    may have no created_at and carry a seq. Rows keep their order."""
    for index in ("events_id", "events_natural", "events_user_ts", "events_ts"):
        c.execute(f"DROP INDEX IF EXISTS {index}")
    c.execute("ALTER TABLE events RENAME TO events_v1")
    c.execute("ALTER TABLE items RENAME TO items_v1")
    _run_script(c, _SCHEMA)
    c.execute(
        f"INSERT INTO events ({_EVENT_FIELDS}) SELECT {_EVENT_FIELDS} FROM events_v1 ORDER BY rowid"
    )
    c.execute("INSERT INTO items SELECT item_id, created_at, attributes, 0 FROM items_v1")
    c.execute("DROP TABLE events_v1")
    c.execute("DROP TABLE items_v1")


def _rebuild_counters(c: sqlite3.Connection) -> None:
    c.execute("DELETE FROM item_counts")
    c.execute("DELETE FROM user_counts")
    c.execute(
        "INSERT INTO item_counts SELECT item_id, type, value, COUNT(*) FROM events "
        "WHERE item_id != '' GROUP BY item_id, type, value"
    )
    c.execute(
        "INSERT INTO user_counts SELECT user_id, type, value, COUNT(*), MIN(ts), MAX(ts) "
        "FROM events GROUP BY user_id, type, value"
    )


__all__ = ["SQLiteStore"]
