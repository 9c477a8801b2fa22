"""The HTTP API over an OpenSearch store (the session's real node) beside the same site in SQLite:
recommendations served from the active generation and live are the same, erasing a user
removes them everywhere, a server's state follows another writer through the change feed to
what a fresh start serves, and a store that stops answering is 503 with one line."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

from feedrank.api import create_app
from feedrank.api.recommending import Recommending, RecRequest
from feedrank.api.settings import ApiSettings
from feedrank.api.state import ServingState, load_state, refresh
from feedrank.pipeline.registry import Registry
from feedrank.store import open_store
from feedrank.store.search import SearchStore

from .conftest import ADMIN, KEYS, READ
from .sitebuild import DB, MODELS

pytestmark = pytest.mark.opensearch


@pytest.fixture
def os_url(site: Path, opensearch_url: str) -> Iterator[str]:
    """The SQLite site's users, items, events and active generation, copied into OpenSearch."""
    src = open_store(f"sqlite:///{site / DB}")
    url = f"{opensearch_url}/?prefix=fra{uuid.uuid4().hex[:12]}_&replicas=0"
    dst = open_store(url)
    assert isinstance(dst, SearchStore)
    dst.upsert_users(src.users())
    dst.upsert_items(src.items())
    dst.add_events(src.events())
    active = src.active_generation()
    assert active is not None
    users = src.users()["user_id"].to_list()
    recs = pl.concat([src.recommendations(u) for u in users])
    dst.write_generation(recs, active.model)
    src.close()
    yield url
    dst.drop()
    dst.close()


def app_client(site: Path, store_url: str) -> TestClient:
    settings = ApiSettings(store_url=store_url, models_dir=str(site / MODELS), keys_spec=KEYS)
    return TestClient(create_app(settings))


def answer(client: TestClient, user: str, **params: Any) -> dict[str, Any]:
    r = client.get(f"/users/{user}/recommendations", params={"k": 5, **params}, headers=READ)
    assert r.status_code == 200, r.text
    got: dict[str, Any] = r.json()
    return {k: got[k] for k in ("items", "served_from", "cold_start")}


def test_the_same_answers_as_sqlite(site: Path, os_url: str) -> None:
    users = ["u00001", "u00007", "u00042", "nobody"]
    with app_client(site, f"sqlite:///{site / DB}") as sq, app_client(site, os_url) as os_:
        for u in users:
            assert answer(sq, u) == answer(os_, u), u
            live = {"exclude_seen": "false"}
            assert answer(sq, u, **live) == answer(os_, u, **live), u


def test_erasing_a_user_removes_them_everywhere(site: Path, os_url: str) -> None:
    store = open_store(os_url)
    u = str(store.events(types=["like"])["user_id"][0])
    n_events, n_recs = store.events(user_ids=[u]).height, store.recommendations(u).height
    with app_client(site, os_url) as client:
        assert answer(client, u)["served_from"] == "generation"
        r = client.delete(f"/users/{u}", headers=ADMIN)
        assert r.status_code == 200
        removed = {"events": n_events, "recommendations": n_recs, "users": 1, "files": 0}
        assert r.json()["removed"] == removed
        assert answer(client, u)["cold_start"] is True
    assert store.events(user_ids=[u]).is_empty() and store.recommendations(u).is_empty()
    store.close()


def _served(service: Recommending, state: ServingState, users: list[str]) -> dict[str, Any]:
    return {u: service.live(state, RecRequest(u, 100)).items for u in users}


def _counts(state: ServingState) -> pl.DataFrame:
    return state.catalogue.counts.sort("item_id", "type", "value")


def test_a_servers_state_follows_another_writer_through_the_feed(site: Path, os_url: str) -> None:
    """No timing: the state is refreshed by hand (a server does it every 0.5 s) after another
    store object (as another process) wrote, and must equal a state loaded afresh."""
    store, writer = open_store(os_url), open_store(os_url)
    registry = Registry(site / MODELS)
    service = Recommending(store, registry)
    state = load_state(store, registry, None)
    liked = store.events(types=["like"])["user_id"].unique(maintain_order=True).to_list()
    u, v = str(liked[0]), str(liked[1])
    users = [u, v, "never-seen"]
    top = service.live(state, RecRequest(u, 5)).items[0]["item_id"]
    # new events and a new item: applied incrementally from the feed
    event = (
        store.events(user_ids=[u])
        .tail(1)
        .with_columns(item_id=pl.lit(top), type=pl.lit("like"), event_id=pl.lit("follow-1"))
    )
    assert writer.add_events(event) == 1
    new_item = pl.DataFrame(
        {"item_id": ["new-post"], "created_at": event["timestamp"], "content_type": ["video"]}
    )
    assert writer.upsert_items(new_item) == 1
    followed = refresh(state, store, registry, None, check_models=False)
    assert followed is not None and followed.watermark == store.watermark()
    fresh = load_state(store, registry, None)
    assert _counts(followed).equals(_counts(fresh))
    assert _served(service, followed, users) == _served(service, fresh, users)
    assert "new-post" in {
        x["item_id"] for x in _served(service, followed, ["never-seen"])["never-seen"]
    }
    # an erasure: the counters are read again
    assert writer.delete_user(v)["events"] > 0
    erased = refresh(followed, store, registry, None, check_models=False)
    assert erased is not None and erased.watermark.erasures > followed.watermark.erasures
    fresh = load_state(store, registry, None)
    assert _counts(erased).equals(_counts(fresh))
    assert _served(service, erased, users) == _served(service, fresh, users)
    assert refresh(erased, store, registry, None, check_models=False) is None  # nothing new
    writer.close()
    store.close()


def test_a_store_that_stops_answering_is_503_in_one_line(site: Path, os_url: str) -> None:
    store = open_store(os_url)
    assert isinstance(store, SearchStore)
    with app_client(site, os_url) as client:
        assert client.get("/health").status_code == 200
        store.drop()  # every index of the store is gone under the running app
        r = client.get("/health")
        assert r.status_code == 503
        assert "must exist" in r.json()["detail"] and "\n" not in r.json()["detail"]
    store.close()


def test_rules_sessions_rerank_and_similar_as_on_sqlite(site: Path, os_url: str) -> None:
    """The same rule suite on both backends: rules on the generation path and live, a session,
    a re-rank and similar items answer the same."""
    rules = {"filter": ["content_type=video", "content_type=image"], "max_per": "author=2"}
    variants: list[dict[str, Any]] = [
        {},
        {"boost": "lang=python:2"},
        {"offset": 2, "exclude": "p00003,p00007"},
        {"filter": "age<30d", "exclude_seen": "false"},
    ]
    session = {"items": ["p00001", "p00002"], "k": 4, "filter": ["lang=python"]}
    rerank = {"user_id": "u00007", "items": ["p00005", "p00001", "p00009", "nope"]}
    with app_client(site, f"sqlite:///{site / DB}") as sq, app_client(site, os_url) as os_:
        for u in ["u00001", "u00007", "nobody"]:
            for extra in variants:
                params = {**rules, **extra}
                assert answer(sq, u, **params) == answer(os_, u, **params), (u, extra)
        for path, body in (("/sessions/recommendations", session), ("/rerank", rerank)):
            a = sq.post(path, json=body, headers=READ)
            b = os_.post(path, json=body, headers=READ)
            assert a.status_code == b.status_code == 200 and a.json() == b.json(), path
        sim = {"k": 3, "filter": "content_type=article"}
        a = sq.get("/items/p00001/similar", params=sim, headers=READ)
        b = os_.get("/items/p00001/similar", params=sim, headers=READ)
        assert a.status_code == 200 and a.json() == b.json()
