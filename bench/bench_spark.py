"""Local vs Spark on one machine: ALS training and scoring every user (top-100), on generated
events, with Spark in local mode on 1 and on 2 cores.

    .venv/bin/python bench/bench_spark.py                   # 1M events
    .venv/bin/python bench/bench_spark.py --events 10000000 # 10M (tens of minutes; not yet run)
    .venv/bin/python bench/bench_spark.py --small           # 100k, to smoke-test

Events: users = events / 40, 2,000 items drawn by a Zipf-like popularity, types view (70%),
click (20%), like (10%) over 30 days; stored once in a SQLite store (what local training and
scoring read) and exported once as Parquet by day (what Spark reads, `feedrank export`).

Each (engine, step) runs in a fresh process, so its time and peak memory are its own: peak
driver memory is the Python process's VmHWM plus, for Spark, the driver JVM's (in local mode the
JVM runs the executors too). Spark's session start-up is reported apart from the step. Both
engines score the same fitted model (the local fit's). The machine load (1-minute average) is
printed beside every figure: on a shared machine the times are only as good as it is quiet."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from feedrank.schema import EVENT_COLUMNS

ALS = {"factors": 32, "iterations": 10, "regularization": 0.05, "alpha": 2.0}
K = 100


def generate(n_events: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n_users, n_items = max(n_events // 40, 10), 2_000
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = rng.choice(n_items, n_events, p=pop / pop.sum())
    users = rng.integers(0, n_users, n_events)
    start = np.datetime64("2026-01-01T00:00:00", "us").astype(np.int64)
    ts = np.sort(start + rng.integers(0, 30 * 86_400_000_000, n_events))
    types = rng.choice(np.array(["view", "click", "like"]), n_events, p=[0.7, 0.2, 0.1])
    frame = pl.DataFrame(
        {
            "event_id": pl.int_range(n_events, eager=True).cast(pl.String),
            "user_id": pl.Series(users).cast(pl.String).str.zfill(7),
            "item_id": pl.Series(items).cast(pl.String).str.zfill(5),
            "type": types,
            "timestamp": pl.Series(ts).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        }
    )
    defaults = {"value": 1.0}
    return frame.with_columns(
        pl.lit(defaults.get(c), dtype).alias(c)
        for c, dtype in EVENT_COLUMNS.items()
        if c not in frame.columns
    ).select(list(EVENT_COLUMNS))


def prepare(n_events: int, root: Path) -> None:
    from feedrank.export import export
    from feedrank.store.sqlite import SQLiteStore

    with SQLiteStore(str(root / "store.db")) as store:
        events = generate(n_events)
        for s in range(0, events.height, 500_000):
            store.add_events(events.slice(s, 500_000))
        export(store, "interactions", root / "events")


def _hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_one(engine: str, step: str, root: Path) -> dict[str, float]:
    """One step in this process: seconds, Spark's start-up, peak memory."""
    from feedrank.models.factorization import ALSRecommender
    from feedrank.pipeline.score import every_user, serving
    from feedrank.store.sqlite import SQLiteStore
    from feedrank.views.site import read_site

    store = SQLiteStore(str(root / "store.db"))
    settings = store.settings()
    out: dict[str, float] = {"start_s": 0.0, "jvm_mb": 0.0}
    spark = None
    if engine != "local":
        from feedrank.spark.data import SparkSite, read_events
        from feedrank.spark.session import spark_session

        t0 = time.perf_counter()
        spark = spark_session(engine)
        out["start_s"] = time.perf_counter() - t0
        site = SparkSite(read_events(spark, root / "events"), store.users(), store.items())
    t0 = time.perf_counter()
    if step == "train":
        if spark is None:
            model = ALSRecommender(**ALS).fit(read_site(store), settings)
            model.save(root / "model")
        else:
            from feedrank.spark.matrix import fit_als

            fit_als(spark, site, settings, ALS)
    else:
        model = ALSRecommender.load(root / "model")
        if spark is None:
            recs = serving(store, model).recommend(every_user(store), K)
        else:
            from feedrank.spark.score import recommend_on_spark

            recs = recommend_on_spark(spark, site, store, model, None, K)
        out["rows"] = recs.height
    out["seconds"] = time.perf_counter() - t0
    out["py_mb"] = _hwm_mb(os.getpid())
    if spark is not None:
        out["jvm_mb"] = _hwm_mb(spark.sparkContext._gateway.proc.pid)  # type: ignore[union-attr]
        spark.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--small", action="store_true", help="100k events")
    parser.add_argument("--run", nargs=3, help=argparse.SUPPRESS)  # engine step root
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_one(args.run[0], args.run[1], Path(args.run[2]))))
        return
    n = 100_000 if args.small else args.events
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        prepare(n, root)
        print(f"{n:,} events generated, stored and exported in {time.perf_counter() - t0:.0f} s")
        print(
            f"{'step':<6} {'engine':<9} {'seconds':>8} {'start-up':>9} {'driver MB':>10} "
            f"{'events/core-s':>14} {'load':>5}"
        )
        for step in ("train", "score"):
            for engine in ("local", "local[1]", "local[2]"):
                load = os.getloadavg()[0]
                got = (
                    subprocess.run(
                        [sys.executable, __file__, "--run", engine, step, str(root)],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    .stdout.strip()
                    .splitlines()[-1]
                )
                r = json.loads(got)
                cores = 2 if engine != "local[1]" else 1
                print(
                    f"{step:<6} {engine:<9} {r['seconds']:>8.1f} {r['start_s']:>9.1f} "
                    f"{r['py_mb'] + r['jvm_mb']:>10.0f} {n / (r['seconds'] * cores):>14,.0f} "
                    f"{max(load, os.getloadavg()[0]):>5.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
