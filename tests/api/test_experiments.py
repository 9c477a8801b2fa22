"""Serving under an experiment: the user's variant (a model) serves, the response says which,
impressions carry it back, and the A/B report reads them."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from feedrank.experiments.ab import Experiment, report
from feedrank.models.popularity import PopularityRecommender
from feedrank.pipeline.registry import Registry
from feedrank.settings import Settings
from feedrank.store import Store
from feedrank.views.site import read_site

from .conftest import INGEST, READ
from .sitebuild import MODELS

SHARES = {"glm": 0.5, "pop": 0.5}


def test_variants_serve_their_models_and_impressions_report_per_variant(
    site: Path, store: Store, make_client: Callable[..., AbstractContextManager[TestClient]]
) -> None:
    pop = PopularityRecommender().fit(read_site(store), Settings())
    Registry(site / MODELS).save(pop, "pop")
    store.put_settings(Settings(experiments={"home": SHARES}).to_dict())  # settings import
    users = store.users()["user_id"].to_list()[:40]
    expected = dict(zip(users, Experiment("home", SHARES).assign(users), strict=True))
    assert set(expected.values()) == {"glm", "pop"}
    with make_client() as client:
        for n, u in enumerate(users):
            got = client.get(
                f"/users/{u}/recommendations", params={"k": 3, "experiment": "home"}, headers=READ
            )
            assert got.status_code == 200, got.text
            body = got.json()
            assert (body["experiment"], body["variant"]) == ("home", expected[u])
            assert body["model"].startswith(expected[u] + "/") or expected[u] in body["model"]
            shown = [i["item_id"] for i in body["items"]]
            ctx = {"experiment": "home", "variant": body["variant"]}
            ts = f"2030-01-01T00:{n:02d}:00Z"
            r = client.post(
                "/impressions",
                json={"user_id": u, "items": shown, "timestamp": ts, "context": ctx},
                headers=INGEST,
            )
            assert r.status_code == 200, r.text
            if expected[u] == "glm":  # only glm's users click, a minute later
                click = {
                    "user_id": u,
                    "item_id": shown[0],
                    "type": "click",
                    "timestamp": f"2030-01-01T00:{n:02d}:30Z",
                }
                assert client.post("/events", json=click, headers=INGEST).status_code == 200
        missing = client.get(
            f"/users/{users[0]}/recommendations", params={"experiment": "nope"}, headers=READ
        )
        assert missing.status_code == 404 and "home" in missing.text
    rep = report(read_site(store).events, "home", Settings())
    ctr = dict(rep.ctr.select("variant", "ctr").iter_rows())
    assert ctr["pop"] == 0.0 and ctr["glm"] == pytest.approx(1 / 3, rel=1e-12)  # 1 click in 3
