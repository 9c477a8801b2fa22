"""Import throughput: a CSV of interactions into the embedded SQLite store.

feedrank: feedrank.io.import_file(store, "interactions", csv) -- reads with Polars,
validates every row (types, ids, ISO timestamps parsed to UTC), and writes to
SQLite with a UNIQUE key and two indexes. Then the same file again: every row is a duplicate.

Peers, the plain approaches a user would otherwise write:
- csv module + sqlite3.executemany into a table with no constraints (no validation, no dedup);
- pandas.read_csv + DataFrame.to_sql(method="multi", chunksize) (the same, through pandas);
- csv + executemany INSERT OR IGNORE into a table with UNIQUE(user_id, item_id, type,
  timestamp): the plain way to get dedup, so re-import is comparable.

    .venv/bin/python bench/bench_import.py [--small]
"""

from __future__ import annotations

import csv
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
from _common import Row, check, parse_args, print_table, timed

from feedrank.io import import_file, read_table
from feedrank.schema import validate_events
from feedrank.settings import Settings
from feedrank.store import open_store

FLOOR = 100_000  # events/s
PLAIN_SCHEMA = (
    "CREATE TABLE events (user_id TEXT, item_id TEXT, type TEXT, timestamp TEXT, "
    "position INTEGER, device TEXT{})"
)
TYPES = ["impression", "click", "like"]


def make_csv(path: Path, n: int, seed: int = 0) -> None:
    """n interactions, 50k users x 10k items over 30 days, time-ordered like a log; no two rows
    share (user, item, type, timestamp), so every row is a distinct event for every importer."""
    rng = np.random.default_rng(seed)
    m = int(n * 1.02) + 100  # a few rows collide on the dedup key and are dropped
    start = int(np.datetime64("2026-01-01T00:00:00", "s").astype(np.int64))
    raw = pl.DataFrame(
        {
            "u": rng.integers(0, 50_000, m),
            "i": rng.integers(0, 10_000, m),
            "t": rng.choice(3, m, p=[0.85, 0.12, 0.03]),
            "s": start + rng.integers(0, 30 * 86_400, m),
            "position": rng.integers(1, 21, m),
            "d": rng.choice(3, m, p=[0.55, 0.35, 0.10]),
        }
    )
    df = (
        raw.select(
            user_id=pl.format("u{}", pl.col("u").cast(pl.String).str.zfill(5)),
            item_id=pl.format("i{}", pl.col("i").cast(pl.String).str.zfill(5)),
            type=pl.col("t").replace_strict([0, 1, 2], TYPES),
            timestamp=pl.from_epoch("s", "s").dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            position="position",
            device=pl.col("d").replace_strict([0, 1, 2], ["mobile", "desktop", "tablet"]),
        )
        .unique(["user_id", "item_id", "type", "timestamp"], maintain_order=True)
        .head(n)
        .sort("timestamp", maintain_order=True)
    )
    assert df.height == n
    df.write_csv(path)


def connect(path: Path) -> sqlite3.Connection:
    # The same durability settings as feedrank's store.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def peer_csv(db: Path, csv_path: Path, dedup: bool) -> int:
    """csv + executemany in one transaction; returns rows inserted."""
    conn = connect(db)
    unique = ", UNIQUE (user_id, item_id, type, timestamp)" if dedup else ""
    conn.execute(PLAIN_SCHEMA.format(unique).replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
    verb = "INSERT OR IGNORE" if dedup else "INSERT"
    with open(csv_path, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        conn.execute("BEGIN")
        before = conn.total_changes
        conn.executemany(f"{verb} INTO events VALUES (?, ?, ?, ?, ?, ?)", reader)
        written = conn.total_changes - before
        conn.execute("COMMIT")
    conn.close()
    return written


def peer_pandas(db: Path, csv_path: Path) -> int:
    conn = connect(db)
    df = pd.read_csv(csv_path, dtype={"user_id": str, "item_id": str})
    # 6 columns x 5,000 rows stays under SQLite's limit on bound parameters per statement.
    df.to_sql("events", conn, index=False, method="multi", chunksize=5_000)
    conn.close()
    return len(df)


def type_counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    out = dict(conn.execute("SELECT type, COUNT(*) FROM events GROUP BY type").fetchall())
    conn.close()
    return out


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    with tempfile.TemporaryDirectory(prefix="feedrank-bench-import-") as tmp:
        run(Path(tmp), 50_000 if args.small else 1_000_000)


def run(tmp: Path, n: int) -> None:
    csv_path = tmp / "interactions.csv"
    make_csv(csv_path, n)
    size = f"{n:,} rows, {csv_path.stat().st_size / 1e6:.0f} MB"
    print(f"input: {csv_path} ({size}); each import runs once on a fresh database")

    # -- feedrank: import, then re-import the same file --------------------------------------
    store = open_store(f"sqlite:///{tmp / 'feedrank.db'}")
    t_fr, report = timed(lambda: import_file(store, "interactions", csv_path))
    t_fr2, report2 = timed(lambda: import_file(store, "interactions", csv_path))
    stats = store.stats()
    store.close()
    t_parse, _ = timed(lambda: validate_events(read_table(csv_path)[0], Settings()))

    # -- peers ------------------------------------------------------------------------------
    t_csv, n_csv = timed(lambda: peer_csv(tmp / "csv.db", csv_path, dedup=False))
    t_pd, n_pd = timed(lambda: peer_pandas(tmp / "pandas.db", csv_path))
    t_dd, n_dd = timed(lambda: peer_csv(tmp / "dedup.db", csv_path, dedup=True))
    t_dd2, n_dd2 = timed(lambda: peer_csv(tmp / "dedup.db", csv_path, dedup=True))

    check(report.written == n and report.bad == 0, f"feedrank wrote {report.written:,} of {n:,}")
    check(
        report2.written == 0 and report2.duplicates == n,
        f"feedrank re-import: {report2.written} new, {report2.duplicates:,} duplicates",
    )
    check(n_csv == n_pd == n_dd == n and n_dd2 == 0, "peers wrote n rows; dedup peer re-import 0")
    peer_counts = type_counts(tmp / "csv.db")
    check(
        stats["events_per_type"] == peer_counts == type_counts(tmp / "dedup.db"),
        f"events per type agree {peer_counts}",
    )

    unit = "events/s"
    print_table(
        "CSV -> SQLite import",
        [
            Row("import", size, t_fr, "csv+executemany (plain)", t_csv, n, unit),
            Row("import", size, t_fr, "pandas to_sql multi (plain)", t_pd, n, unit),
            Row("import", size, t_fr, "csv+executemany UNIQUE (dedup)", t_dd, n, unit),
            Row("re-import (0 new)", size, t_fr2, "csv+executemany UNIQUE (dedup)", t_dd2, n, unit),
        ],
    )
    rate = n / t_fr
    print(
        f"\nfeedrank breakdown: read + validate {t_parse:.2f} s, write to SQLite (rows sorted by "
        f"the idempotence key, partial UNIQUE indexes + 2 indexes) ~{t_fr - t_parse:.2f} s"
    )
    verdict = "meets" if rate >= FLOOR else "is BELOW"
    print(f"floor {FLOOR:,} events/s: feedrank imports {rate:,.0f} events/s and {verdict} it")
    fastest = min((t_csv, "csv+executemany"), (t_pd, "pandas to_sql multi"))
    print(f"fastest plain peer: {fastest[1]} ({n / fastest[0]:,.0f} events/s)")


if __name__ == "__main__":
    main()
