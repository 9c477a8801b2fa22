"""Two server processes on one SQLite store: what one of them writes (events, a new item, an
erasure) the other serves — fresh events at once (a live user's events are read by index),
the rest within a refresh of its state (the store's change feed, every 0.5 s) — and then
answers exactly as a server started afresh on the store would."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from feedrank.api.recommending import Recommending, RecRequest
from feedrank.api.state import load_state
from feedrank.pipeline.registry import Registry
from feedrank.store import open_store

from .server import Server

DEADLINE = 10.0  # seconds; the design says about one: generous, and never a pass bar itself
K = 100  # more than the catalogue: every candidate the user has not seen, in order
SCORE_TOL = 1e-12


def _recs(c: httpx.Client, user: str, k: int = K) -> dict[str, Any]:
    r = c.get(f"/users/{user}/recommendations", params={"k": k})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _scores(body: dict[str, Any]) -> dict[str, float]:
    return {x["item_id"]: x["score"] for x in body["items"]}


def _same(got: dict[str, float], want: dict[str, float]) -> bool:
    return got.keys() == want.keys() and all(abs(got[i] - want[i]) <= SCORE_TOL for i in want)


def test_a_second_server_sees_events_items_and_erasures(
    make_server: Callable[..., Server], rel_site: Path
) -> None:
    writer, follower = make_server(), make_server()
    store = open_store(writer.store_url)
    liked = store.events(types=["like"])["user_id"].unique(maintain_order=True).to_list()
    u, v = str(liked[0]), str(liked[1])  # u acts, v is erased
    with writer.client() as a, follower.client() as b:
        before = {user: _recs(b, user) for user in (u, v, "never-seen")}  # warm b's state
        top = before[u]["items"][0]["item_id"]

        # a fresh engagement, written through the other server: b's very next answer has it
        r = a.post("/events", json={"user_id": u, "item_id": top, "type": "like"})
        assert r.status_code == 200 and r.json()["stored"] == 1
        now = _recs(b, u)
        assert now["served_from"] == "live" and top not in _scores(now)

        # a new item and an erasure, written through the other server
        assert a.put("/items/new-post", json={"content_type": "video"}).status_code == 200
        erased = a.delete(f"/users/{v}")
        assert erased.status_code == 200 and erased.json()["removed"]["events"] > 0

        # what a server started now on the store serves
        registry = Registry(rel_site / "site.models")
        fresh = load_state(store, registry, None)
        service = Recommending(store, registry)
        want = {
            user: {x["item_id"]: x["score"] for x in service.live(fresh, RecRequest(user, K)).items}
            for user in (u, v, "never-seen")
        }
        assert "new-post" in want["never-seen"]
        assert want[v] == pytest.approx(want["never-seen"], abs=SCORE_TOL, rel=0)

        def answers() -> dict[str, dict[str, float]]:
            return {user: _scores(_recs(b, user)) for user in (u, v, "never-seen")}

        stop = time.monotonic() + DEADLINE
        got = answers()
        while not all(_same(got[x], want[x]) for x in want) and time.monotonic() < stop:
            time.sleep(0.05)
            got = answers()
        assert "new-post" in got["never-seen"] and "new-post" in got[u]  # the new item
        # nothing of the erased user is left: answered like a user never seen
        assert got[v] == pytest.approx(got["never-seen"], abs=SCORE_TOL, rel=0)
        assert top not in got[u]
        for user in want:
            assert got[user] == pytest.approx(want[user], abs=SCORE_TOL, rel=0), user
        health = b.get("/health").json()
        assert health["status"] == "ok"
    store.close()
