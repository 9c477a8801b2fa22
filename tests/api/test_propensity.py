"""POST /impressions with the logging policy's propensities: stored in each impression's context
as numbers, checked like imported ones, and refused where they would be ambiguous."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from feedrank.store import Store

from .conftest import INGEST


def _stored(store: Store, user: str) -> list[dict[str, object]]:
    return store.events(user_ids=[user]).sort("position").to_dicts()


def test_item_propensities_are_stored_in_the_impression_context(
    client: TestClient, store: Store
) -> None:
    body = {
        "user_id": "ope-u",
        "items": [
            {"item_id": "p00003", "position": 1, "propensity": 0.125},
            {"item_id": "p00009", "position": 2, "propensity": 1 / 3},
            {"item_id": "p00011", "position": 3, "propensity": 1},
            {"item_id": "p00012", "position": 4},  # no propensity: an ordinary impression
        ],
        "timestamp": "2026-01-06T08:00:00Z",
        "context": {"page": "home"},
    }
    r = client.post("/impressions", json=body, headers=INGEST)
    assert r.status_code == 200, r.text
    assert r.json()["stored"] == 4
    stored = _stored(store, "ope-u")
    assert [(e["type"], e["item_id"], e["position"]) for e in stored] == [
        ("impression", "p00003", 1),
        ("impression", "p00009", 2),
        ("impression", "p00011", 3),
        ("impression", "p00012", 4),
    ]
    contexts = [json.loads(str(e["context"])) for e in stored]
    assert contexts == [
        {"page": "home", "propensity": 0.125},
        {"page": "home", "propensity": 1 / 3},
        {"page": "home", "propensity": 1.0},
        {"page": "home", "propensity": None},  # a batch's context keys are shared
    ]


def test_a_bad_propensity_is_a_per_item_error_and_strict_stores_nothing(
    client: TestClient, store: Store
) -> None:
    one_bad = {"user_id": "bad-ope", "items": [{"item_id": "p00003", "propensity": 1.5}]}
    r = client.post("/impressions", json=one_bad, headers=INGEST)
    assert r.status_code == 422
    (err,) = r.json()["errors"]
    assert (err["index"], err["field"]) == (0, "propensity")
    assert err["reason"] == "propensity must be a number in (0, 1]; got '1.5'"
    slate = {
        "user_id": "bad-ope",
        "items": [
            {"item_id": "p00003", "propensity": 0.5},
            {"item_id": "p00004", "propensity": 0},
            {"item_id": "p00005", "propensity": "often"},
        ],
    }
    r = client.post("/impressions", params={"strict": True}, json=slate, headers=INGEST)
    assert r.status_code == 422 and r.json()["stored"] == 0
    assert [(e["index"], e["field"]) for e in r.json()["errors"]] == [
        (1, "propensity"),
        (2, "propensity"),
    ]
    assert "'often'" in r.json()["errors"][1]["reason"]
    assert _stored(store, "bad-ope") == []


def test_a_request_level_propensity_is_refused(client: TestClient, store: Store) -> None:
    bodies = [
        {"user_id": "lvl-u", "items": ["p00003", "p00004"], "propensities": [0.5, 0.5]},
        {"user_id": "lvl-u", "items": ["p00003"], "context": {"propensity": 0.5}},
    ]
    for body in bodies:
        r = client.post("/impressions", json=body, headers=INGEST)
        assert r.status_code == 400, body
        assert "per item" in r.json()["detail"] and "propensit" in r.json()["detail"]
    assert _stored(store, "lvl-u") == []
