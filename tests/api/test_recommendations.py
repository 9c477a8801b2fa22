"""GET recommendations, similar items, models: generation path, live path, cold start."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import polars as pl
from fastapi.testclient import TestClient

from feedrank.store import open_store

from .conftest import INGEST, READ
from .sitebuild import DB


def _warm_user(site: Path) -> str:
    store = open_store(f"sqlite:///{site / DB}")
    ev = store.events(types=["like"])
    return str(ev["user_id"][0])


def test_served_from_the_active_generation(client: TestClient, site: Path) -> None:
    u = _warm_user(site)
    got = client.get(f"/users/{u}/recommendations", params={"k": 5}, headers=READ).json()
    stored = open_store(f"sqlite:///{site / DB}").recommendations(u, 5)
    assert got["served_from"] == "generation"
    assert got["generation"] == 1
    assert [r["item_id"] for r in got["items"]] == stored["item_id"].to_list()
    assert [r["rank"] for r in got["items"]] == [1, 2, 3, 4, 5]
    assert all(r["source"] == "model" for r in got["items"]) and not got["cold_start"]


def test_fresh_engagement_removes_item_and_moves_scores(client: TestClient, site: Path) -> None:
    u = _warm_user(site)
    before = client.get(f"/users/{u}/recommendations", params={"k": 5}, headers=READ).json()
    top = before["items"][0]["item_id"]
    r = client.post(
        "/events",
        json={"event_id": "f1", "user_id": u, "item_id": top, "type": "like"},
        headers=INGEST,
    )
    assert r.status_code == 200 and r.json()["stored"] == 1
    after = client.get(f"/users/{u}/recommendations", params={"k": 5}, headers=READ).json()
    assert after["served_from"] == "live"
    assert top not in [x["item_id"] for x in after["items"]]
    old = {x["item_id"]: x["score"] for x in before["items"]}
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
    again = client.get(f"/users/{u}/recommendations", params={"k": 5}, headers=READ).json()
    assert again["served_from"] == "live"
    assert {top, second}.isdisjoint(x["item_id"] for x in again["items"])


def test_exclude_seen_false_keeps_engaged_items(client: TestClient, site: Path) -> None:
    u = _warm_user(site)
    liked = open_store(f"sqlite:///{site / DB}").events(user_ids=[u], types=["like"])["item_id"]
    got = client.get(
        f"/users/{u}/recommendations", params={"k": 40, "exclude_seen": False}, headers=READ
    ).json()
    assert set(liked.to_list()) <= {x["item_id"] for x in got["items"]}


def test_cold_start_is_marked(client: TestClient) -> None:
    got = client.get("/users/nobody-yet/recommendations", params={"k": 4}, headers=READ).json()
    assert got["cold_start"] is True and len(got["items"]) == 4
    assert {x["source"] for x in got["items"]} <= {"popular_in_segment", "popular_overall"}


def test_explain_gives_largest_contributions(client: TestClient, site: Path) -> None:
    u = _warm_user(site)
    got = client.get(
        f"/users/{u}/recommendations", params={"k": 3, "explain": True}, headers=READ
    ).json()
    assert len(got["items"]) == 3
    for item in got["items"]:
        contrib = [abs(c["contribution"]) for c in item["reasons"]]
        assert contrib and contrib == sorted(contrib, reverse=True)
        assert all(isinstance(c["feature"], str) for c in item["reasons"])
    # Explained scores are the generation's scores (the same model, same data).
    plain = client.get(f"/users/{u}/recommendations", params={"k": 3}, headers=READ).json()
    assert [x["item_id"] for x in got["items"]] == [x["item_id"] for x in plain["items"]]


def test_named_model_and_unknown_model(client: TestClient, site: Path) -> None:
    u = _warm_user(site)
    got = client.get(f"/users/{u}/recommendations", params={"model": "glm"}, headers=READ)
    assert got.status_code == 200 and got.json()["model"].startswith("glm/")
    bad = client.get(f"/users/{u}/recommendations", params={"model": "nope"}, headers=READ)
    assert bad.status_code == 404 and "nope" in bad.json()["detail"]


def test_similar_items_without_similarity_is_a_clear_404(client: TestClient) -> None:
    r = client.get("/items/p00001/similar", headers=READ)
    assert r.status_code == 404 and "item similarity" in r.json()["detail"]
    assert client.get("/items/no-such-item/similar", headers=READ).status_code == 404


def test_models_lists_the_serving_model(client: TestClient) -> None:
    got = client.get("/models", headers=READ).json()
    assert got["generation"]["id"] == 1
    assert [m["serving"] for m in got["models"]] == [True]
    assert got["serving"] == f"{got['models'][0]['name']}/{got['models'][0]['version']}"


def test_new_generation_is_swapped_in(
    make_client: Callable[..., AbstractContextManager[TestClient]], site: Path
) -> None:
    with make_client(reload_seconds=0.05) as client:
        u = _warm_user(site)
        store = open_store(f"sqlite:///{site / DB}")
        seen = set(store.events(user_ids=[u])["item_id"].to_list())
        fresh = [i for i in store.items()["item_id"].to_list() if i not in seen][:3]
        recs = pl.DataFrame(
            {"user_id": [u] * 3, "rank": [1, 2, 3], "item_id": fresh,
             "score": [0.9, 0.8, 0.7], "source": ["model"] * 3}
        )  # fmt: skip
        gen = store.write_generation(recs, "hand-made")
        got: dict[str, Any] = {}
        for _ in range(200):  # bounded: the watcher checks every 0.05 s
            got = client.get(f"/users/{u}/recommendations", params={"k": 3}, headers=READ).json()
            if got.get("generation") == gen:
                break
            time.sleep(0.02)
        assert got["generation"] == gen
        assert [x["item_id"] for x in got["items"]] == fresh
        assert client.get("/health").json()["generation"] == gen


def test_similar_items_from_a_model_that_has_them(
    make_client: Callable[..., AbstractContextManager[TestClient]], site: Path
) -> None:
    from feedrank.models import MODELS
    from feedrank.pipeline.registry import Registry

    from .sitebuild import MODELS as MODELS_DIR

    data = open_store(f"sqlite:///{site / DB}").load()
    knn = MODELS["itemknn"]().fit(data)
    Registry(site / MODELS_DIR).save(knn, "itemknn")
    expected = knn.similar_items(["p00001"], 5)
    with make_client(model="itemknn") as client:
        got = client.get("/items/p00001/similar", params={"k": 5}, headers=READ)
        assert got.status_code == 200
        assert got.json()["model"].startswith("itemknn/")
        assert got.json()["similar"] == expected.to_dicts()


def test_new_champion_is_swapped_in_without_failing_requests(
    make_client: Callable[..., AbstractContextManager[TestClient]], site: Path
) -> None:
    from feedrank.pipeline.registry import Registry

    from .sitebuild import MODELS as MODELS_DIR

    registry = Registry(site / MODELS_DIR)
    with make_client(reload_seconds=0.05) as client:
        before = client.get("/models", headers=READ).json()["serving"]
        model, _ = registry.load("glm")
        rec = registry.save(model, "challenger")
        registry.promote(f"{rec.name}/{rec.version}", "test")
        statuses, serving = [], before
        for _ in range(300):  # bounded; every request in the meantime must succeed
            r = client.get("/users/u00001/recommendations", params={"k": 3}, headers=READ)
            statuses.append(r.status_code)
            serving = client.get("/models", headers=READ).json()["serving"]
            if serving != before:
                break
            time.sleep(0.02)
        assert serving == f"challenger/{rec.version}"
        assert set(statuses) == {200}
        assert client.get("/models", headers=READ).json()["champion"] == serving
