"""What the server holds: the models and the catalogue (items and counters), never the events.
More events make the store bigger, not the serving state (tests/reliability/test_memory.py
checks the same on a real process's RSS)."""

from __future__ import annotations

import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import anyio.to_thread
import numpy as np
import polars as pl
from fastapi.testclient import TestClient

from feedrank.store import Store
from feedrank.store.sqlite import SERVING_CACHE_KIB

from .conftest import INGEST, READ, eventually
from .sitebuild import MODELS, store_url

EVENT_COLUMNS = {"event_id", "user_id", "item_id", "type", "timestamp"}


def _reachable(root: object) -> Iterator[object]:
    """Every object reachable from `root` through attributes and containers (each once)."""
    seen: set[int] = set()
    todo: deque[object] = deque([root])
    while todo:
        obj = todo.popleft()
        if id(obj) in seen or isinstance(obj, str | bytes | int | float | type):
            continue
        seen.add(id(obj))
        yield obj
        if isinstance(obj, pl.DataFrame | pl.Series | np.ndarray):
            continue
        if isinstance(obj, dict):
            todo.extend(obj.keys())
            todo.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset | deque):
            todo.extend(obj)
        for name in getattr(type(obj), "__slots__", ()):
            todo.extend([getattr(obj, name)] if hasattr(obj, name) else [])
        if hasattr(obj, "__dict__"):
            todo.extend(vars(obj).values())


def _held(client: TestClient) -> tuple[int, list[pl.DataFrame]]:
    """Rows of every frame and elements of every array the serving state holds, and the
    frames."""
    state = client.app.state.runtime.state  # type: ignore[attr-defined]
    frames: list[pl.DataFrame] = []
    size = 0
    for obj in _reachable(state):
        if isinstance(obj, pl.DataFrame):
            frames.append(obj)
            size += obj.height
        elif isinstance(obj, pl.Series | np.ndarray):
            size += len(obj) if isinstance(obj, pl.Series) else obj.size
    return size, frames


def _serve_some(client: TestClient, users: list[str]) -> None:
    for u in users:
        for params in ({"k": 10}, {"k": 10, "model": "glm"}, {"k": 3, "explain": True}):
            r = client.get(f"/users/{u}/recommendations", params=params, headers=READ)
            assert r.status_code == 200, r.text


def test_the_state_holds_models_and_catalogue_not_events(client: TestClient, store: Store) -> None:
    users = store.users()["user_id"].to_list()[:5]
    items = store.items()["item_id"].to_list()
    _serve_some(client, users)
    before, frames = _held(client)
    n_events = store.stats()["events"]
    assert frames, "the walk found the catalogue's frames"
    assert not any(set(f.columns) >= EVENT_COLUMNS for f in frames)  # no frame of events
    assert before < n_events  # all it holds is smaller than the event table alone

    # 3,000 more events of known users, items and types: the store grows, the state does not.
    batch = [
        {"event_id": f"grow-{i}", "user_id": users[i % len(users)],
         "item_id": items[i % len(items)], "type": ("click", "impression")[i % 2]}
        for i in range(3000)
    ]  # fmt: skip
    r = client.post("/events", json=batch, headers=INGEST)
    assert r.status_code == 200 and r.json()["stored"] == 3000
    target = store.watermark()
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    applied = eventually(lambda: rt.state.watermark, lambda w: w == target)
    assert applied == target  # the server has counted them
    _serve_some(client, users)
    after, frames = _held(client)
    assert not any(set(f.columns) >= EVENT_COLUMNS for f in frames)
    assert after - before < 3000 / 10, (before, after)


def test_the_servers_connections_keep_a_small_page_cache(client: TestClient) -> None:
    """Every thread of the server reads through its own SQLite connection. With the 256 MiB
    page cache an import wants, each one kept the pages it had read, and the resident set grew
    with the store served (bench/bench_api.py: +200 MB after 12k recommendations from a
    5M-event store, +10 MB from a 0.5M one)."""
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    users = rt.store.users()["user_id"].to_list()[:3]
    _serve_some(client, users)  # the live path's worker threads have opened theirs

    def cache_kib() -> int:
        return -int(rt.store._conn().execute("PRAGMA cache_size").fetchone()[0])

    portal = client.portal  # the server's event loop: its thread runs the fast path
    assert portal is not None
    on_loop = portal.call(cache_kib)
    on_worker = portal.call(anyio.to_thread.run_sync, cache_kib)  # where live scoring runs
    on_writer = rt.writer.submit(cache_kib).result(timeout=10)
    assert max(on_loop, on_worker, on_writer) <= SERVING_CACHE_KIB, (on_loop, on_worker, on_writer)


SERVE_AND_LIST_MODULES = """
import sys
from fastapi.testclient import TestClient
from feedrank.api import create_app
from feedrank.api.settings import ApiSettings

settings = ApiSettings(store_url=sys.argv[1], models_dir=sys.argv[2], keys_spec="k=read")
with TestClient(create_app(settings)) as client:
    for params in ("k=10", "k=10&exclude_seen=false", "k=3&explain=true"):
        r = client.get(f"/users/u00001/recommendations?{params}", headers={"X-API-Key": "k"})
        assert r.status_code == 200, r.text
print(" ".join(m for m in ("glum", "tabmat", "sklearn") if m in sys.modules))
"""


def test_serving_a_glm_imports_no_fitting_library(site: Path) -> None:
    """Fitting needs glum and scikit-learn, serving a fitted GLM does not: imported at start-up
    they cost the server ~1 s (a third of its start-up). A fresh interpreter, so that what
    this test session imported does not count."""
    done = subprocess.run(
        [sys.executable, "-c", SERVE_AND_LIST_MODULES, store_url(site), str(site / MODELS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "", done.stdout
