"""GET/PUT /settings: the data settings stored with the data (admin only), versioned, in effect
at once on the server that stored them and within a refresh on every other server on the
store; a bad body is a 4xx naming the field, and stores nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from feedrank.settings import Settings
from feedrank.store import Store

from .conftest import ADMIN, INGEST, READ, eventually

NEW = {
    "rating_threshold": 4,
    "type_weights": {"bookmark": 2.5},
    "experiments": {"home": {"glm": 1.0}},
}


def _settings(client: TestClient) -> dict[str, Any]:
    r = client.get("/settings", headers=ADMIN)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_settings_need_the_admin_scope(client: TestClient) -> None:
    for headers, code in ((None, 401), ({"X-API-Key": "wrong"}, 401), (READ, 403), (INGEST, 403)):
        assert client.get("/settings", headers=headers).status_code == code
        assert client.put("/settings", json=NEW, headers=headers).status_code == code
    assert client.get("/settings", headers=ADMIN).status_code == 200


def test_the_defaults_until_settings_are_stored(client: TestClient) -> None:
    got = _settings(client)
    assert (got["versions"], got["in_effect"]) == ([], None)
    assert got["settings"] == json.loads(json.dumps(Settings().to_dict()))


def test_put_stores_a_new_version_in_effect_at_once(client: TestClient, store: Store) -> None:
    expected = Settings.from_dict(NEW)
    r = client.put("/settings", json=NEW, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1
    assert Settings.from_dict(r.json()["settings"]) == expected
    stored = store.stored_settings()
    assert stored is not None and Settings.from_dict(stored) == expected
    got = _settings(client)
    assert Settings.from_dict(got["settings"]) == expected
    assert [v["version"] for v in got["versions"]] == [1] and got["in_effect"] == 1
    # In effect on this server without a restart: the experiment serves, the new type is known.
    rec = client.get("/users/u00001/recommendations", params={"experiment": "home"}, headers=READ)
    assert rec.status_code == 200 and rec.json()["variant"] == "glm"
    ev = {"user_id": "s-u", "item_id": "p00001", "type": "bookmark"}
    assert client.post("/events", json=ev, headers=INGEST).json()["notes"] == []
    # A second PUT is a second version; the newest is the one in effect.
    r = client.put("/settings", json={"rating_threshold": 3}, headers=ADMIN)
    assert r.json()["version"] == 2
    got = _settings(client)
    assert [v["version"] for v in got["versions"]] == [1, 2]
    assert got["settings"]["rating_threshold"] == 3 and got["settings"]["experiments"] == {}


def test_another_server_on_the_store_follows_new_settings(
    make_client: Callable[..., AbstractContextManager[TestClient]],
) -> None:
    with make_client() as a, make_client() as b:
        missing = b.get(
            "/users/u00001/recommendations", params={"experiment": "home"}, headers=READ
        )
        assert missing.status_code == 404
        assert a.put("/settings", json=NEW, headers=ADMIN).status_code == 200
        got = _settings(b)  # what is stored, read from the store
        assert Settings.from_dict(got["settings"]) == Settings.from_dict(NEW)
        assert [v["version"] for v in got["versions"]] == [1]

        def home() -> Any:
            return b.get(
                "/users/u00001/recommendations", params={"experiment": "home"}, headers=READ
            )

        rec = eventually(home, lambda r: r.status_code == 200)  # in effect within a refresh
        assert rec.status_code == 200 and rec.json()["variant"] == "glm"
        assert _settings(b)["in_effect"] == 1


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"colour": 1}, "colour"),
        ({"rating_threshold": "high"}, "rating_threshold"),
        ({"type_weights": {"click": -1}}, "type_weights.click"),
        ({"type_weights": ["click"]}, "type_weights"),
        ({"itemless_types": "login"}, "itemless_types"),
        ({"engagement_types": ["nope"]}, "engagement_types"),
        ({"label_window_seconds": 0}, "label_window_seconds"),
        ({"negative_ratio": "many"}, "negative_ratio"),
        ({"experiments": 5}, "experiments"),
        ({"experiments": {"home": {"glm": 0.3}}}, "home"),
        ({"age_bands": ["young", "old"]}, "age_bands"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_a_bad_settings_body_is_a_4xx_naming_the_field(
    client: TestClient, store: Store, body: dict[str, Any], named: str
) -> None:
    r = client.put("/settings", json=body, headers=ADMIN)
    assert 400 <= r.status_code < 500, r.text
    assert named in r.json()["detail"]
    assert store.settings_versions() == []  # nothing stored
    assert _settings(client)["versions"] == []


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b'"rating_threshold"'])
def test_a_body_that_is_not_an_object_is_a_400(
    client: TestClient, store: Store, raw: bytes
) -> None:
    r = client.put("/settings", content=raw, headers={**ADMIN, "content-type": "application/json"})
    assert r.status_code == 400 and "must" in r.json()["detail"]
    assert store.settings_versions() == []


def test_unreadable_stored_settings_do_not_stop_following_the_store(
    client: TestClient, store: Store
) -> None:
    """Settings another tool stored that this version cannot read are not applied (the server
    keeps the ones it has), and the server keeps following events and items."""
    u = str(store.events(types=["like"])["user_id"][0])
    store.put_settings({"colour": "blue"})
    assert client.put("/items/late-post", json={}, headers=INGEST).status_code == 200

    def candidates() -> list[str]:
        r = client.get(f"/users/{u}/recommendations", params={"k": 100}, headers=READ)
        assert r.status_code == 200, r.text
        return [x["item_id"] for x in r.json()["items"]]

    assert "late-post" in eventually(candidates, lambda items: "late-post" in items)
    ev = {"user_id": "s-u", "item_id": "p00001", "type": "click"}
    assert client.post("/events", json=ev, headers=INGEST).status_code == 200
