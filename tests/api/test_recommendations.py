"""GET recommendations, similar items, models: generation path, live path, cold start, and the
state that follows the store (fresh events at once, new items within a refresh)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient

from feedrank.api import create_app
from feedrank.api.recommending import Recommending, RecRequest
from feedrank.api.settings import ApiSettings
from feedrank.api.state import load_state
from feedrank.models import make
from feedrank.pipeline.registry import Registry
from feedrank.settings import Settings
from feedrank.store import Store, open_store
from feedrank.views.site import read_site
from feedrank.views.view import StoreView, store_catalogue

from .conftest import INGEST, KEYS, READ, eventually
from .sitebuild import MODELS

SCORE_TOL = 1e-12  # the same arithmetic on the same data: equal up to rounding


def _warm_user(store: Store) -> str:
    return str(store.events(types=["like"])["user_id"][0])


def _recs(client: TestClient, user: str, **params: Any) -> dict[str, Any]:
    r = client.get(f"/users/{user}/recommendations", params=params, headers=READ)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _scores(body: dict[str, Any]) -> dict[str, float]:
    return {x["item_id"]: x["score"] for x in body["items"]}


def test_served_from_the_active_generation(client: TestClient, store: Store) -> None:
    u = _warm_user(store)
    got = _recs(client, u, k=5)
    stored = store.recommendations(u, 5)
    assert got["served_from"] == "generation"
    assert got["generation"] == 1
    assert [r["item_id"] for r in got["items"]] == stored["item_id"].to_list()
    assert [r["rank"] for r in got["items"]] == [1, 2, 3, 4, 5]
    assert all(r["source"] == "model" for r in got["items"]) and not got["cold_start"]


def test_live_answer_of_an_unchanged_user_is_the_generation(
    client: TestClient, store: Store
) -> None:
    """The live path (here forced by naming the model) and the batch scorer that wrote the
    generation are one computation: same items, same order, same scores."""
    u = _warm_user(store)
    batch = _recs(client, u, k=10)
    live = _recs(client, u, k=10, model="glm")
    assert (batch["served_from"], live["served_from"]) == ("generation", "live")
    assert [x["item_id"] for x in live["items"]] == [x["item_id"] for x in batch["items"]]
    for item, score in _scores(live).items():
        assert score == pytest.approx(_scores(batch)[item], abs=SCORE_TOL, rel=0)


def test_fresh_engagement_removes_item_and_moves_scores(client: TestClient, store: Store) -> None:
    u = _warm_user(store)
    before = _recs(client, u, k=5)
    top = before["items"][0]["item_id"]
    r = client.post(
        "/events",
        json={"event_id": "f1", "user_id": u, "item_id": top, "type": "like"},
        headers=INGEST,
    )
    assert r.status_code == 200 and r.json()["stored"] == 1
    after = _recs(client, u, k=5)  # at once: no waiting for a refresh
    assert after["served_from"] == "live"
    assert top not in [x["item_id"] for x in after["items"]]
    old = _scores(before)
    moved = [abs(x["score"] - old[x["item_id"]]) for x in after["items"] if x["item_id"] in old]
    assert moved and max(moved) > 1e-9  # history features moved without retraining
    # A second fresh engagement invalidates the live result computed after the first.
    second = after["items"][0]["item_id"]
    r = client.post(
        "/events",
        json={"event_id": "f2", "user_id": u, "item_id": second, "type": "click"},
        headers=INGEST,
    )
    assert r.status_code == 200
    again = _recs(client, u, k=5)
    assert again["served_from"] == "live"
    assert {top, second}.isdisjoint(x["item_id"] for x in again["items"])


def test_fresh_engagement_is_served_like_a_full_reload(
    client: TestClient, store: Store, site: Path
) -> None:
    """After a fresh engagement, the answer of the server that followed the store is the answer
    a server started afresh on the same store gives (features as of the new event, counters
    with it), once the follower has applied the change."""
    u = _warm_user(store)
    _recs(client, u, k=40)  # a live answer before the event, cached by the server
    item = _recs(client, u, k=1)["items"][0]["item_id"]
    r = client.post("/events", json={"user_id": u, "item_id": item, "type": "like"}, headers=INGEST)
    assert r.status_code == 200
    registry = Registry(site / MODELS)
    fresh = load_state(store, registry, None)  # what a server started now would serve
    expected = Recommending(store, registry).live(fresh, RecRequest(u, k=40)).items
    want = {x["item_id"]: x["score"] for x in expected}

    def close(body: dict[str, Any]) -> bool:
        got = _scores(body)
        return got.keys() == want.keys() and all(abs(got[i] - want[i]) <= SCORE_TOL for i in want)

    got = eventually(lambda: _recs(client, u, k=40), close)
    assert got["served_from"] == "live" and item not in _scores(got)
    assert _scores(got) == pytest.approx(want, abs=SCORE_TOL, rel=0)


def test_exclude_seen_false_keeps_engaged_items(client: TestClient, store: Store) -> None:
    u = _warm_user(store)
    liked = store.events(user_ids=[u], types=["like"])["item_id"]
    got = _recs(client, u, k=40, exclude_seen=False)
    assert set(liked.to_list()) <= {x["item_id"] for x in got["items"]}


def test_cold_start_is_marked(client: TestClient) -> None:
    got = _recs(client, "nobody-yet", k=4)
    assert got["cold_start"] is True and len(got["items"]) == 4
    assert {x["source"] for x in got["items"]} <= {"popular_in_segment", "popular_overall"}


def test_a_catalogue_without_engagements_is_served(tmp_path: Path) -> None:
    """A new site, no model trained yet: items and impressions, nobody engaged. Every user gets
    the newest items."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    api = ApiSettings(store_url=url, models_dir=str(tmp_path / "models"), keys_spec=KEYS)
    with TestClient(create_app(api), raise_server_exceptions=False) as client, open_store(url) as s:
        assert (
            client.put("/items/first-post", json={"lang": "go"}, headers=INGEST).status_code == 200
        )
        shown = {"user_id": "visitor", "items": ["first-post"]}
        assert client.post("/impressions", json=shown, headers=INGEST).status_code == 200
        rt = client.app.state.runtime  # type: ignore[attr-defined]
        target = s.watermark()
        assert eventually(lambda: rt.state.watermark, lambda w: w == target) == target
        r = client.get("/users/visitor/recommendations", params={"k": 3}, headers=READ)
        assert r.status_code == 200, r.text
        assert [x["item_id"] for x in r.json()["items"]] == ["first-post"]


def test_explain_gives_largest_contributions(client: TestClient, store: Store) -> None:
    u = _warm_user(store)
    got = _recs(client, u, k=3, explain=True)
    assert got["served_from"] == "live" and len(got["items"]) == 3
    for item in got["items"]:
        contrib = [abs(c["contribution"]) for c in item["reasons"]]
        assert contrib and contrib == sorted(contrib, reverse=True)
        assert all(isinstance(c["feature"], str) for c in item["reasons"])
    # Explained scores are the generation's scores (the same model, same data).
    plain = _recs(client, u, k=3)
    assert plain["served_from"] == "generation"
    assert [x["item_id"] for x in got["items"]] == [x["item_id"] for x in plain["items"]]
    assert _scores(got) == pytest.approx(_scores(plain), abs=SCORE_TOL, rel=0)


def test_named_model_and_unknown_model(client: TestClient, store: Store) -> None:
    u = _warm_user(store)
    got = client.get(f"/users/{u}/recommendations", params={"model": "glm"}, headers=READ)
    assert got.status_code == 200 and got.json()["model"].startswith("glm/")
    bad = client.get(f"/users/{u}/recommendations", params={"model": "nope"}, headers=READ)
    assert bad.status_code == 422 and "nope" in bad.json()["detail"]  # a bad parameter
    assert bad.json()["field"] == "model"


def test_similar_items_from_the_glm_are_its_answer_to_a_session_of_one(
    client: TestClient,
) -> None:
    r = client.get("/items/p00001/similar", headers=READ)
    assert r.status_code == 200 and r.json()["similarity"] == "session"
    assert client.get("/items/no-such-item/similar", headers=READ).status_code == 404


def test_similar_items_from_popularity_is_a_clear_404(
    make_client: Callable[..., AbstractContextManager[TestClient]], store: Store, site: Path
) -> None:
    pop = make("popularity").fit(read_site(store), Settings())
    Registry(site / MODELS).save(pop, "pop")
    with make_client(model="pop") as client:
        r = client.get("/items/p00001/similar", headers=READ)
        assert r.status_code == 404 and "item similarity" in r.json()["detail"]


def test_models_lists_the_serving_model(client: TestClient) -> None:
    got = client.get("/models", headers=READ).json()
    assert got["generation"]["id"] == 1
    assert [m["serving"] for m in got["models"]] == [True]
    assert got["serving"] == f"{got['models'][0]['name']}/{got['models'][0]['version']}"


def test_new_generation_is_swapped_in(
    make_client: Callable[..., AbstractContextManager[TestClient]], store: Store
) -> None:
    with make_client(reload_seconds=0.05) as client:
        u = _warm_user(store)
        seen = set(store.events(user_ids=[u])["item_id"].to_list())
        fresh = [i for i in store.items()["item_id"].to_list() if i not in seen][:3]
        recs = pl.DataFrame(
            {"user_id": [u] * 3, "rank": [1, 2, 3], "item_id": fresh,
             "score": [0.9, 0.8, 0.7], "source": ["model"] * 3}
        )  # fmt: skip
        gen = store.write_generation(recs, "hand-made")
        got = eventually(lambda: _recs(client, u, k=3), lambda b: b.get("generation") == gen)
        assert got["generation"] == gen
        assert [x["item_id"] for x in got["items"]] == fresh
        assert client.get("/health").json()["generation"] == gen


def test_similar_items_from_a_model_that_has_them(
    make_client: Callable[..., AbstractContextManager[TestClient]], store: Store, site: Path
) -> None:
    knn = make("itemknn").fit(read_site(store), Settings())
    Registry(site / MODELS).save(knn, "itemknn")
    view = StoreView(store, knn.settings_, store_catalogue(store))
    expected = knn.at(view).similar_items(["p00001"], 5)
    with make_client(model="itemknn") as client:
        got = client.get("/items/p00001/similar", params={"k": 5}, headers=READ)
        assert got.status_code == 200
        assert got.json()["model"].startswith("itemknn/")
        assert got.json()["similarity"] == "item"
        rows = [
            {"rank": r["rank"], "item_id": r["similar_item_id"], "score": r["score"]}
            for r in expected.to_dicts()
        ]
        assert got.json()["similar"] == [{**r, "source": "model"} for r in rows]


def test_new_champion_is_swapped_in_without_failing_requests(
    make_client: Callable[..., AbstractContextManager[TestClient]], site: Path
) -> None:
    registry = Registry(site / MODELS)
    with make_client(reload_seconds=0.05, models_seconds=0.05) as client:
        before = client.get("/models", headers=READ).json()["serving"]
        model, _ = registry.load("glm")
        rec = registry.save(model, "challenger")
        registry.promote(f"{rec.name}/{rec.version}", "test")
        statuses: list[int] = []

        def serving() -> str:
            r = client.get("/users/u00001/recommendations", params={"k": 3}, headers=READ)
            statuses.append(r.status_code)  # every request in the meantime must succeed
            label: str = client.get("/models", headers=READ).json()["serving"]
            return label

        now = eventually(serving, lambda label: label != before)
        assert now == f"challenger/{rec.version}"
        assert set(statuses) == {200}
        assert client.get("/models", headers=READ).json()["champion"] == now
