"""feedrank's OpenSearch store beside its SQLite store, in the same run, on the demo site:
importing events, the counters and stats (aggregations as of the watermark vs SQLite's counter
tables), following the change feed, one user's seen items, single-event writes (the API's
POST /events: a block of the feed each), scoring every user into a generation (swapped in
through the alias), recommendations over HTTP (p50/p99 at a fixed rate), and the GLM ranked
inside the engine (the painless script) beside Python scoring of the same candidates.

    .venv/bin/python bench/bench_search_store.py [--small]

The OpenSearch server is the single-node 2.19 of tools/opensearch (started here on 127.0.0.1 and
stopped at the end; needs Java and Maven, built by `make setup`), or FEEDRANK_OPENSEARCH_URL.
The node and the benchmark share the machine's 2 cores, so the engine's numbers are a lower
bound on what a server of its own does. Checks: the same counters, stats, change feed and seen
items from both stores, the same served answers, and the engine's top-10 equal to Python's
(probabilities within 1e-6).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from _common import Row, check, parse_args, print_table, timed
from bench_api import fetch, free_port, open_loop, report, start_server

from feedrank.datasets.demo import generate_site
from feedrank.io import import_frame
from feedrank.models.glm_export import GLMExport, epoch_us
from feedrank.pipeline.registry import Registry
from feedrank.pipeline.score import serving
from feedrank.pipeline.train import train
from feedrank.schema import EVENT_COLUMNS
from feedrank.settings import Settings
from feedrank.store import open_store
from feedrank.store.base import Store, Watermark
from feedrank.store.search import SearchStore
from feedrank.views.site import read_site
from feedrank.views.view import FrameView

NODE = Path(__file__).resolve().parents[1] / "tools" / "opensearch"


def start_node(state: Path) -> str:
    """The URL of FEEDRANK_OPENSEARCH_URL or of a node started here (it follows this process)."""
    if os.environ.get("FEEDRANK_OPENSEARCH_URL"):
        return os.environ["FEEDRANK_OPENSEARCH_URL"].removeprefix("opensearch+")
    done = subprocess.run(
        [str(NODE / "start.sh"), str(state), "--exit-with", str(os.getpid())],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the OpenSearch node must start (make setup builds it): {done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def import_site(url: str, site: Any) -> tuple[float, float]:
    """Seconds for users + items, and for the events."""
    store = open_store(url)
    t0 = time.perf_counter()
    import_frame(store, "users", site.users, strict=True)
    import_frame(store, "items", site.items, strict=True)
    t1 = time.perf_counter()
    import_frame(store, "interactions", site.events, strict=True)
    t2 = time.perf_counter()
    store.close()
    return t1 - t0, t2 - t1


def http_latency(
    url: str, root: Path, users: list[str], rate: float, seconds: float
) -> tuple[Any, dict[str, Any]]:
    """p50/p99 of GET /users/{u}/recommendations?k=10 at `rate` req/s, and a few answers."""
    port = free_port()
    with (root / "server.log").open("ab") as log:
        proc = start_server(url, root, port, log)
    rng = random.Random(5)
    paths = [f"/users/{rng.choice(users)}/recommendations?k=10" for _ in range(int(rate * seconds))]

    async def drive() -> tuple[Any, dict[str, Any]]:
        answers = {u: await fetch(port, f"/users/{u}/recommendations?k=10") for u in users[:20]}
        await open_loop(port, paths[: int(rate)], rate)  # warm-up
        return await open_loop(port, paths, rate), answers

    try:
        return asyncio.run(asyncio.wait_for(drive(), 300))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    size = dict(n_users=300, n_items=100, days=10) if args.small else {}
    with tempfile.TemporaryDirectory(prefix="feedrank-bench-search-") as tmp:
        root = Path(tmp)
        node_url = start_node(root / "node")
        sqlite_url = f"sqlite:///{root / 'bench.db'}"
        os_url = f"opensearch+{node_url}/?prefix=bench_{os.getpid()}_&replicas=0"
        try:
            return run(root, sqlite_url, os_url, size, args.small)
        finally:
            search = open_store(os_url)
            assert isinstance(search, SearchStore)
            search.drop()
            search.close()
            if not os.environ.get("FEEDRANK_OPENSEARCH_URL"):
                subprocess.run([str(NODE / "stop.sh"), str(root / "node")], check=False)


def follow(store: Store, max_events: int) -> int:
    """Reads the whole change feed from the start, max_events at a time; events read."""
    n, at = 0, Watermark()
    while True:
        got = store.changes(at, max_events)
        n += got.events.height
        if got.events.is_empty():
            return n
        at = got.until


def per_call(fn: Any, args: list[Any]) -> float:
    """Seconds per call, over the argument list."""
    t0 = time.perf_counter()
    for a in args:
        fn(a)
    return (time.perf_counter() - t0) / len(args)


def same_counts(a: pl.DataFrame, b: pl.DataFrame, keys: list[str]) -> bool:
    return a.columns == b.columns and a.sort(keys).equals(b.sort(keys))


def store_rows(sqlite: Store, search: SearchStore, users: list[str], what: str) -> list[Row]:
    """Counters, stats, the change feed and seen items: the same answers, and their times."""
    rows = []
    for name, fn, keys in (
        ("item_counts()", lambda s: s.item_counts(), ["item_id", "type", "value"]),
        ("user_counts() of all", lambda s: s.user_counts(), ["user_id", "type", "value"]),
    ):
        t_os, got = timed(lambda fn=fn: fn(search), repeat=3, warmup=True)
        t_sq, want = timed(lambda fn=fn: fn(sqlite), repeat=3, warmup=True)
        check(same_counts(want, got, keys), f"{name}: the same {want.height} rows")
        rows.append(Row(name, what, t_os, "SQLite store", t_sq, 1, "calls/s"))
    t_os, got = timed(search.stats, repeat=3, warmup=True)
    t_sq, want = timed(sqlite.stats, repeat=3, warmup=True)
    fields = ("users", "users_with_events", "items", "events", "events_per_type", "last_event")
    check(all(got[f] == want[f] for f in fields), "stats(): the same figures")
    rows.append(Row("stats()", what, t_os, "SQLite store", t_sq, 1, "calls/s"))
    n_events = sqlite.stats()["events"]
    t_os, got_n = timed(lambda: follow(search, 10_000))
    t_sq, want_n = timed(lambda: follow(sqlite, 10_000))
    check(got_n == want_n == n_events, f"changes() from the start: all {n_events} events once")
    rows.append(
        Row("changes() from 0, 10k a call", what, t_os, "SQLite store", t_sq, n_events, "events/s")
    )
    sample = users[:: max(1, len(users) // 200)]
    same = all(search.seen_items(u) == sqlite.seen_items(u) for u in sample)
    check(same, f"seen_items(): the same for {len(sample)} users")
    t_os = per_call(search.seen_items, sample)
    t_sq = per_call(sqlite.seen_items, sample)
    rows.append(
        Row("seen_items(user)", f"{len(sample)} users", t_os, "SQLite store", t_sq, 1, "calls/s")
    )
    t_os = per_call(lambda _: search.watermark(), sample)
    t_sq = per_call(lambda _: sqlite.watermark(), sample)
    rows.append(
        Row("watermark()", f"{len(sample)} calls", t_os, "SQLite store", t_sq, 1, "calls/s")
    )
    return rows


def one_event_writes(sqlite: Store, search: SearchStore, users: list[str], n: int) -> Row:
    """add_events of one event per call (the API's POST /events): a feed block each."""
    t = datetime(2026, 6, 1, tzinfo=UTC)
    frames = [
        pl.DataFrame(
            {
                "event_id": [f"one-{i}"],
                "user_id": [users[i % len(users)]],
                "item_id": ["p00001"],
                "type": ["click"],
                "timestamp": [t + timedelta(seconds=i)],
                "value": [1.0],
                "position": [None],
                "device": [None],
                "context": [None],
            },
            schema=EVENT_COLUMNS,
        )
        for i in range(n)
    ]
    t_os = per_call(search.add_events, frames)
    t_sq = per_call(sqlite.add_events, frames)
    return Row(
        "add_events, 1 event a call", f"{n} calls", t_os, "SQLite store", t_sq, 1, "events/s"
    )


def run(root: Path, sqlite_url: str, os_url: str, size: dict[str, int], small: bool) -> int:
    site = generate_site(seed=7, **size)  # type: ignore[arg-type]
    n_events, n_meta = site.events.height, site.users.height + site.items.height
    what = f"{site.users.height} users, {site.items.height} items, {n_events} events"
    print(f"site: {what}; OpenSearch at {os_url}")
    (sq_meta, sq_events), (os_meta, os_events) = (
        import_site(u, site) for u in (sqlite_url, os_url)
    )
    sqlite, search = open_store(sqlite_url), open_store(os_url)
    assert isinstance(search, SearchStore)
    rows = [
        Row("import events", what, os_events, "SQLite store", sq_events, n_events, "events/s"),
        Row("import users + items", what, os_meta, "SQLite store", sq_meta, n_meta, "rows/s"),
    ]
    users = site.users["user_id"].to_list()
    rows += store_rows(sqlite, search, users, what)

    # One model for both stores (trained from SQLite); scoring is the same Python for both.
    settings = Settings()
    data = read_site(sqlite)
    result = train(data, settings, "glm", test_days=3 if small else 7)
    model = result.model
    rec = Registry(root / "bench.models").save(model, "glm", fallback=result.fallback)
    label = f"{rec.name}/{rec.version}"
    t_score, recs = timed(lambda: serving(sqlite, model, result.fallback).recommend(users, 100))
    t_os_gen, _ = timed(lambda: search.write_generation(recs, label))
    t_sq_gen, _ = timed(lambda: sqlite.write_generation(recs, label))
    rows.append(
        Row(
            "score all + write generation",
            f"{len(users)} users x 100",
            t_score + t_os_gen,
            "SQLite store",
            t_score + t_sq_gen,
            len(users),
            "users/s",
        )
    )
    print(f"scoring (Python, the same for both): {t_score:.2f} s")

    # Recommendations over HTTP: `feedrank serve` on each store in turn, same model.
    rate, seconds = (50, 3) if small else (100, 10)
    warm = sorted(data.events["user_id"].unique().to_list())
    r_os, a_os = http_latency(os_url, root, warm, rate, seconds)
    r_sq, a_sq = http_latency(sqlite_url, root, warm, rate, seconds)
    same = all(
        [i["item_id"] for i in a_os[u]["items"]] == [i["item_id"] for i in a_sq[u]["items"]]
        for u in a_os
    )
    check(same, f"the same served top-10 from both stores for {len(a_os)} users")
    report("HTTP recommendations, OpenSearch", r_os)
    report("HTTP recommendations, SQLite", r_sq)

    # The GLM inside the engine vs Python scoring of the same candidates, one user per request:
    # the export is plain data (params per user, item fields) from the GLM serving the store.
    service = serving(search, model, result.fallback)
    export = GLMExport(model.at(service.view))
    fields = export.item_fields()
    search.publish_item_features(fields, epoch_us(export.at))
    sample = warm[:: max(1, len(warm) // (20 if small else 50))]
    frames = model.at(FrameView(data, settings, export.at))

    def engine() -> list[Any]:
        return [
            search.glm_recommend(export.user_params(u), u, export.seen_items(u), k=10)
            for u in sample
        ]

    def python() -> list[Any]:
        return [frames.recommend([u], k=10, exclude_seen=True) for u in sample]

    t_engine, got = timed(engine, warmup=True)
    t_python, want = timed(python, warmup=True)
    diff = max(
        float(np.abs(g["score"].to_numpy() - w["score"].to_numpy()).max())
        for g, w in zip(got, want, strict=True)
    )
    same_items = all(
        g["item_id"].to_list() == w["item_id"].to_list() for g, w in zip(got, want, strict=True)
    )
    check(same_items and diff < 1e-6, f"engine top-10 == Python top-10 (max |diff| {diff:.1e})")
    rows.append(
        Row(
            "GLM top-10 per request",
            f"{len(sample)} users x {site.items.height} items",
            t_engine,
            "GLM scorer.recommend",
            t_python,
            len(sample),
            "requests/s",
        )
    )
    # Last: single-event writes (they add events the checks above do not expect).
    rows.append(one_event_writes(sqlite, search, users, 20 if small else 100))
    print_table("OpenSearch store (feedrank column) vs SQLite store / Python (peer column)", rows)
    for name, r in (("OpenSearch", r_os), ("SQLite", r_sq)):
        print(f"HTTP {name}: p50 {r.pct(50):.2f} ms, p99 {r.pct(99):.2f} ms at {rate} req/s")
    sqlite.close()
    search.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
