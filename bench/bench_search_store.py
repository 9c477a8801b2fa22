"""feedrank's OpenSearch store beside its SQLite store, in the same run, on the demo site:
importing events, scoring every user into a generation (swapped in through the alias),
recommendations over HTTP (p50/p99 at a fixed rate), and the GLM ranked inside the engine (the
painless script) beside Python scoring of the same candidates.

    .venv/bin/python bench/bench_search_store.py [--small]

The OpenSearch server is the single-node 2.19 of tools/opensearch (started here on 127.0.0.1 and
stopped at the end; needs Java and Maven, built by `make setup`), or FEEDRANK_OPENSEARCH_URL.
The node and the benchmark share the machine's 2 cores, so the engine's numbers are a lower
bound on what a server of its own does. Checks: the same events stored, the same served
answers from both stores, and the engine's top-10 equal to Python's (probabilities within 1e-6).
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
from pathlib import Path
from typing import Any

import numpy as np
from _common import Row, check, parse_args, print_table, timed
from bench_api import fetch, free_port, open_loop, report, start_server

from feedrank.datasets.demo import generate_site
from feedrank.io import import_frame
from feedrank.pipeline.registry import Registry
from feedrank.pipeline.train import train_glm
from feedrank.serving.service import RecommendationService
from feedrank.settings import Settings
from feedrank.store import open_store
from feedrank.store.search import SearchStore
from feedrank.store.search_ranking import GLMSplit

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
    check(
        sqlite.stats()["events_per_type"] == search.stats()["events_per_type"],
        "the same events stored in both",
    )
    rows = [
        Row("import events", what, os_events, "SQLite store", sq_events, n_events, "events/s"),
        Row("import users + items", what, os_meta, "SQLite store", sq_meta, n_meta, "rows/s"),
    ]

    # One model for both stores (trained from SQLite); scoring is the same Python for both.
    data = sqlite.load()
    model = train_glm(data, Settings(), test_days=3 if small else 7).model.serve_with(data)
    rec = Registry(root / "bench.models").save(model, "glm")
    users = data.users["user_id"].to_list()
    t_score, recs = timed(lambda: RecommendationService(model).recommend(users, 100))
    label = f"{rec.name}/{rec.version}"
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
    warm = [u for u in users if RecommendationService(model).has_history(u)]
    r_os, a_os = http_latency(os_url, root, warm, rate, seconds)
    r_sq, a_sq = http_latency(sqlite_url, root, warm, rate, seconds)
    same = all(
        [i["item_id"] for i in a_os[u]["items"]] == [i["item_id"] for i in a_sq[u]["items"]]
        for u in a_os
    )
    check(same, f"the same served top-10 from both stores for {len(a_os)} users")
    report("HTTP recommendations, OpenSearch", r_os)
    report("HTTP recommendations, SQLite", r_sq)

    # The GLM inside the engine vs Python scoring of the same candidates, one user per request.
    split = GLMSplit(model)
    search.publish_item_features(split)
    sample = warm[:: max(1, len(warm) // (20 if small else 50))]

    def engine() -> list[Any]:
        return [search.glm_recommend(split, u, k=10, from_store=False) for u in sample]

    def python() -> list[Any]:
        return [model.recommend([u], k=10, exclude_seen=True) for u in sample]

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
            "GLMRecommender.recommend",
            t_python,
            len(sample),
            "requests/s",
        )
    )
    print_table("OpenSearch store (feedrank column) vs SQLite store / Python (peer column)", rows)
    for name, r in (("OpenSearch", r_os), ("SQLite", r_sq)):
        print(f"HTTP {name}: p50 {r.pct(50):.2f} ms, p99 {r.pct(99):.2f} ms at {rate} req/s")
    sqlite.close()
    search.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
