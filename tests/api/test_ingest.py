"""POST /events and /impressions, PUT users/items, DELETE users: per-item errors, idempotence,
PII reduction, erasure."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from feedrank.store import open_store

from .conftest import ADMIN, INGEST, READ
from .sitebuild import DB


def _events(site: Path, user: str) -> list[dict[str, object]]:
    return open_store(f"sqlite:///{site / DB}").events(user_ids=[user]).to_dicts()


def test_batch_stores_good_items_and_reports_bad_ones(client: TestClient, site: Path) -> None:
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
    assert (body["received"], body["stored"], body["rejected"]) == (6, 2, 4)
    errors = {(e["index"], e["field"]) for e in body["errors"]}
    assert errors == {(1, "type"), (2, "user_id"), (3, "value"), (4, "event")}
    assert "clik" in body["errors"][0]["reason"] and "click" in body["errors"][0]["reason"]
    stored = _events(site, "api-u")
    assert sorted(e["event_id"] for e in stored) == ["b1", "b6"]
    b6 = next(e for e in stored if e["event_id"] == "b6")
    assert json.loads(str(b6["context"])) == {"page": "home"}
    # Idempotent by event_id: the same batch again stores nothing new.
    again = client.post("/events", json={"events": batch}, headers=INGEST).json()
    assert (again["stored"], again["duplicates"]) == (0, 2)
    assert len(_events(site, "api-u")) == 2


def test_strict_and_all_bad_store_nothing(client: TestClient, site: Path) -> None:
    batch = [
        {"event_id": "s1", "user_id": "strict-u", "item_id": "p00001", "type": "click"},
        {"event_id": "s2", "user_id": "strict-u", "item_id": "p00001", "type": "nope"},
    ]
    r = client.post("/events", params={"strict": True}, json=batch, headers=INGEST)
    assert r.status_code == 422 and r.json()["stored"] == 0
    r = client.post("/events", json=batch[1:], headers=INGEST)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "type"
    assert _events(site, "strict-u") == []


def test_request_level_defects_are_400_or_413(client: TestClient, make_client, site: Path) -> None:  # type: ignore[no-untyped-def]
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
    assert _events(site, "big-u") == []


def test_impressions_become_positioned_impression_events(client: TestClient, site: Path) -> None:
    body = {"user_id": "imp-u", "items": ["p00003", {"item_id": "p00009", "position": 7}],
            "request_id": "req-1", "timestamp": "2026-01-06T08:00:00Z", "lat": 48.85}  # fmt: skip
    r = client.post("/impressions", json=body, headers=INGEST)
    assert r.status_code == 200 and r.json()["stored"] == 2
    stored = sorted(_events(site, "imp-u"), key=lambda e: e["position"])  # type: ignore[arg-type, return-value]
    assert [(e["type"], e["item_id"], e["position"]) for e in stored] == [
        ("impression", "p00003", 1),
        ("impression", "p00009", 7),
    ]
    again = client.post("/impressions", json=body, headers=INGEST).json()
    assert again["duplicates"] == 2
    r = client.post("/impressions", json={"user_id": "imp-u", "items": []}, headers=INGEST)
    assert r.status_code == 400 and "items" in r.json()["detail"]


def test_pii_is_reduced_at_ingestion(client: TestClient, site: Path) -> None:
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
    users = open_store(f"sqlite:///{site / DB}").users().filter(user_id="pii-u").to_dicts()[0]
    assert users["age_band"] == "35-44"
    assert all(users.get(k) is None for k in ("age", "city", "latitude", "postal_code"))
    ev = {"user_id": "pii-u", "item_id": "p00001", "type": "click", "ip": "10.1.2.3",
          "context": {"lon": 2.35, "referrer": "mail"}}  # fmt: skip
    assert client.post("/events", json=ev, headers=INGEST).status_code == 200
    assert json.loads(str(_events(site, "pii-u")[0]["context"])) == {"referrer": "mail"}
    bad = client.put("/users/pii-u", json={"age": "old"}, headers=INGEST)
    assert bad.status_code == 422 and bad.json()["field"] == "age"


def test_put_item_then_recommendable_after_reload(make_client, site: Path) -> None:  # type: ignore[no-untyped-def]
    with make_client() as client:
        r = client.put(
            "/items/new-post", json={"content_type": "video", "lang": "go"}, headers=INGEST
        )
        assert r.status_code == 200 and r.json()["item"]["item_id"] == "new-post"
        bad = client.put("/items/x", json={"created_at": "yesterday"}, headers=INGEST)
        assert bad.status_code == 422 and bad.json()["field"] == "created_at"
    items = open_store(f"sqlite:///{site / DB}").items()
    assert "new-post" in items["item_id"].to_list()


def test_delete_erases_everywhere_and_says_what(client: TestClient, site: Path) -> None:
    store = open_store(f"sqlite:///{site / DB}")
    u = str(store.events(types=["like"])["user_id"][0])
    n_events = store.events(user_ids=[u]).height
    n_recs = store.recommendations(u).height
    assert client.get(f"/users/{u}/recommendations", headers=READ).json()["cold_start"] is False
    r = client.delete(f"/users/{u}", headers=ADMIN)
    assert r.status_code == 200
    assert r.json()["removed"] == {"events": n_events, "recommendations": n_recs, "users": 1}
    assert store.events(user_ids=[u]).is_empty() and store.recommendations(u).is_empty()
    after = client.get(f"/users/{u}/recommendations", headers=READ).json()
    assert after["cold_start"] is True and after["served_from"] == "live"
    assert client.delete(f"/users/{u}", headers=INGEST).status_code == 403
