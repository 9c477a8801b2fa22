"""POST /events and /impressions, PUT users/items, DELETE users: per-item errors, idempotence,
notes on types the settings do not name, PII reduction, new items served without a reload,
erasure."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from feedrank.store import Store

from .conftest import ADMIN, INGEST, READ, eventually


def _events(store: Store, user: str) -> list[dict[str, object]]:
    return store.events(user_ids=[user]).to_dicts()


def _recs(client: TestClient, user: str, **params: Any) -> dict[str, Any]:
    r = client.get(f"/users/{user}/recommendations", params=params, headers=READ)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _items(body: dict[str, Any]) -> list[str]:
    return [x["item_id"] for x in body["items"]]


def test_batch_stores_good_items_and_reports_bad_ones(client: TestClient, store: Store) -> None:
    batch = [
        {"event_id": "b1", "user_id": "api-u", "item_id": "p00001", "type": "click",
         "timestamp": "2026-01-05T10:00:00Z", "position": 2, "device": "mobile"},
        {"event_id": "b2", "user_id": "api-u", "item_id": "p00002", "type": "clik"},
        {"event_id": "b3", "user_id": {"nested": 1}, "item_id": "p00002", "type": "click"},
        {"event_id": "b4", "user_id": "api-u", "item_id": "p00003", "type": "like", "value": "lots"},
        "not an event",
        {"event_id": "b6", "user_id": "api-u", "item_id": "p00004", "type": "view", "page": "home"},
    ]  # fmt: skip
    r = client.post("/events", json=batch, headers=INGEST)
    assert r.status_code == 207
    body = r.json()
    # Types are open: 'clik' is stored, and the answer says the settings do not name it.
    assert (body["received"], body["stored"], body["rejected"]) == (6, 3, 3)
    errors = {(e["index"], e["field"]) for e in body["errors"]}
    assert errors == {(2, "user_id"), (3, "value"), (4, "event")}
    (note,) = body["notes"]
    assert "'clik'" in note and "'click'" in note and "unknown_type_weight" in note
    stored = _events(store, "api-u")
    assert sorted(e["event_id"] for e in stored) == ["b1", "b2", "b6"]
    b6 = next(e for e in stored if e["event_id"] == "b6")
    assert json.loads(str(b6["context"])) == {"page": "home"}
    # Idempotent by event_id: the same batch again stores nothing new.
    again = client.post("/events", json={"events": batch}, headers=INGEST).json()
    assert (again["stored"], again["duplicates"]) == (0, 3)
    assert len(_events(store, "api-u")) == 3


def test_configured_types_get_no_note(client: TestClient) -> None:
    ev = {"user_id": "n-u", "item_id": "p00001", "type": "click"}
    body = client.post("/events", json=ev, headers=INGEST).json()
    assert body["stored"] == 1 and body["notes"] == []


def test_strict_and_all_bad_store_nothing(client: TestClient, store: Store) -> None:
    batch = [
        {"event_id": "s1", "user_id": "strict-u", "item_id": "p00001", "type": "click"},
        {"event_id": "s2", "user_id": "strict-u", "item_id": "p00001", "type": "click",
         "timestamp": "yesterday"},
    ]  # fmt: skip
    r = client.post("/events", params={"strict": True}, json=batch, headers=INGEST)
    assert r.status_code == 422 and r.json()["stored"] == 0
    r = client.post("/events", json=batch[1:], headers=INGEST)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "timestamp"
    assert _events(store, "strict-u") == []


def test_request_level_defects_are_400_or_413(
    client: TestClient,
    make_client: Callable[..., AbstractContextManager[TestClient]],
    store: Store,
) -> None:
    cases = [b"{not json", b"", b"42", b"[]"]
    for body in cases:
        r = client.post(
            "/events", content=body, headers={**INGEST, "content-type": "application/json"}
        )
        assert r.status_code == 400, body
        assert "must" in r.json()["detail"]
    with make_client(max_body_bytes=2048) as small:
        big = [
            {"user_id": "big-u", "item_id": "p00001", "type": "click", "event_id": f"e{i}"}
            for i in range(100)
        ]
        r = small.post("/events", json=big, headers=INGEST)
        assert r.status_code == 413 and "2048 bytes" in r.json()["detail"]
    assert _events(store, "big-u") == []


def test_impressions_become_positioned_impression_events(client: TestClient, store: Store) -> None:
    body = {"user_id": "imp-u", "items": ["p00003", {"item_id": "p00009", "position": 7}],
            "request_id": "req-1", "timestamp": "2026-01-06T08:00:00Z", "lat": 48.85}  # fmt: skip
    r = client.post("/impressions", json=body, headers=INGEST)
    assert r.status_code == 200 and r.json()["stored"] == 2
    stored = sorted(_events(store, "imp-u"), key=lambda e: e["position"])  # type: ignore[arg-type, return-value]
    assert [(e["type"], e["item_id"], e["position"]) for e in stored] == [
        ("impression", "p00003", 1),
        ("impression", "p00009", 7),
    ]
    again = client.post("/impressions", json=body, headers=INGEST).json()
    assert again["duplicates"] == 2
    r = client.post("/impressions", json={"user_id": "imp-u", "items": []}, headers=INGEST)
    assert r.status_code == 400 and "items" in r.json()["detail"]


def test_pii_is_reduced_at_ingestion(client: TestClient, store: Store) -> None:
    r = client.put(
        "/users/pii-u",
        json={
            "age": 37,
            "gender": "female",
            "country": "FR",
            "region": "IDF",
            "city": "Paris",
            "latitude": 48.85,
            "postal_code": "75011",
        },
        headers=INGEST,
    )
    assert r.status_code == 200
    assert r.json()["user"] == {
        "user_id": "pii-u", "gender": "female", "country": "FR", "region": "IDF", "age_band": "35-44"
    }  # fmt: skip
    users = store.users(["pii-u"]).to_dicts()[0]
    assert users["age_band"] == "35-44"
    assert all(users.get(k) is None for k in ("age", "city", "latitude", "postal_code"))
    ev = {"user_id": "pii-u", "item_id": "p00001", "type": "click", "ip": "10.1.2.3",
          "context": {"lon": 2.35, "referrer": "mail"}}  # fmt: skip
    assert client.post("/events", json=ev, headers=INGEST).status_code == 200
    assert json.loads(str(_events(store, "pii-u")[0]["context"])) == {"referrer": "mail"}
    bad = client.put("/users/pii-u", json={"age": "old"}, headers=INGEST)
    assert bad.status_code == 422 and bad.json()["field"] == "age"


def test_put_item_is_served_within_a_refresh_without_reloading(
    client: TestClient, store: Store
) -> None:
    u = str(store.events(types=["like"])["user_id"][0])
    before = _recs(client, u, k=100)  # every candidate the user has not seen (live, cached)
    assert "new-post" not in _items(before)
    r = client.put("/items/new-post", json={"content_type": "video", "lang": "go"}, headers=INGEST)
    assert r.status_code == 200 and r.json()["item"]["item_id"] == "new-post"
    assert "new-post" in store.items()["item_id"].to_list()
    # The same server, no restart: the item is a candidate once the change is applied.
    after = eventually(lambda: _recs(client, u, k=100), lambda b: "new-post" in _items(b))
    assert "new-post" in _items(after)
    assert set(_items(before)) < set(_items(after))
    bad = client.put("/items/x", json={"created_at": "yesterday"}, headers=INGEST)
    assert bad.status_code == 422 and bad.json()["field"] == "created_at"


def test_delete_erases_everywhere_and_says_what(client: TestClient, store: Store) -> None:
    u = str(store.events(types=["like"])["user_id"][0])
    n_events = store.events(user_ids=[u]).height
    n_recs = store.recommendations(u).height
    known = _recs(client, u, k=10)
    assert known["served_from"] == "generation" and known["cold_start"] is False
    r = client.delete(f"/users/{u}", headers=ADMIN)
    assert r.status_code == 200
    removed = {"events": n_events, "recommendations": n_recs, "users": 1, "files": 0}
    assert r.json()["removed"] == removed  # a GLM holds no user: no model file rewritten
    assert store.events(user_ids=[u]).is_empty() and store.recommendations(u).is_empty()
    assert store.users([u]).is_empty()
    after = _recs(client, u)
    assert after["cold_start"] is True and after["served_from"] == "live"
    assert client.delete(f"/users/{u}", headers=INGEST).status_code == 403


def test_an_erased_user_disappears_from_answers(client: TestClient, store: Store) -> None:
    """Nothing of an erased user is left to personalise with: their answer is the one a user
    never seen gets, from the same server state, and no longer the precomputed one."""
    u = str(store.events(types=["like"])["user_id"][0])
    personal = _recs(client, u, k=10)
    assert client.delete(f"/users/{u}", headers=ADMIN).status_code == 200

    def pair() -> tuple[dict[str, Any], dict[str, Any]]:
        return _recs(client, u, k=10), _recs(client, "never-seen", k=10)

    erased, stranger = eventually(pair, lambda p: _items(p[0]) == _items(p[1]))
    assert erased["served_from"] == "live" and erased["generation"] is None
    assert _items(erased) == _items(stranger)
    assert [x["score"] for x in erased["items"]] == pytest.approx(
        [x["score"] for x in stranger["items"]], abs=1e-12, rel=0
    )
    assert _items(erased) != _items(personal)
