"""A server's memory follows the catalogue, not the events: two server processes on the same
site, one store holding a million more events (of other users, on the same items), end up with
about the same resident set after serving the same requests. A server that held the events
would need at least their size as a frame (tens of MB) more."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
from api.sitebuild import MODELS, copy_site, store_url

from feedrank.schema import EVENT_COLUMNS
from feedrank.store import open_store

from .server import Server

N_EVENTS = 1_000_000
N_USERS = 20_000
SHARE = 0.4  # of the extra events' in-memory size: what the bigger store may cost at most


def _more_events(items: list[str], n: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    offsets = np.sort(rng.integers(0, 7 * 86_400 * 10**6, n))
    return pl.DataFrame(
        {
            "event_id": [f"bulk-{i}" for i in range(n)],
            "user_id": [f"bulk-u{i % N_USERS}" for i in range(n)],
            "item_id": np.asarray(items, dtype=object)[rng.integers(0, len(items), n)],
            "type": np.array(["impression", "impression", "click"])[rng.integers(0, 3, n)],
            "timestamp": pl.Series(offsets).cast(pl.Duration("us")) + start,
            "value": np.ones(n),
            "position": rng.integers(1, 9, n).astype(np.int32),
            "device": None,
            "context": None,
        },
        schema=EVENT_COLUMNS,
    )


def _serve(server: Server, users: list[str]) -> int:
    """The same requests on either server (live scoring, explanations, the fast path), then
    the resident set."""
    with server.client() as c:
        for u in users:
            for params in ({"k": 100}, {"k": 5, "explain": True}, {"k": 10}):
                r = c.get(f"/users/{u}/recommendations", params=params)
                assert r.status_code == 200, r.text
        assert c.get("/models").status_code == 200
    return server.rss_bytes()


def test_memory_follows_the_catalogue_not_the_events(
    make_server: Callable[..., Server], rel_template: Path, tmp_path: Path
) -> None:
    big = copy_site(rel_template, tmp_path / "big")
    with open_store(store_url(big)) as store:
        before = store.stats()["events"]
        extra = _more_events(store.items()["item_id"].to_list(), N_EVENTS)
        assert store.add_events(extra) == N_EVENTS
        assert store.stats()["events"] == before + N_EVENTS
        users = store.users()["user_id"].to_list()[:5]
    events_bytes = extra.estimated_size()
    del extra
    small_server = make_server()
    big_server = Server(store_url(big), big / MODELS, tmp_path / "big.log").start()
    try:
        small = _serve(small_server, users)
        large = _serve(big_server, users)
    finally:
        big_server.stop()
    assert large - small < SHARE * events_bytes, (
        f"a store with {N_EVENTS:,} more events ({events_bytes / 1e6:.0f} MB as a frame) costs "
        f"the server {(large - small) / 1e6:.1f} MB more resident memory "
        f"({small / 1e6:.0f} MB -> {large / 1e6:.0f} MB)"
    )
