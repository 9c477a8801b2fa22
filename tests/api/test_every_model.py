"""Every model family over HTTP: what `GET /users/{id}/recommendations?model=<name>` answers is
what the batch path (RecommendationService over a StoreView of the whole store) answers for the
same user — items, order, scores and sources — for a user with history, a user with a single
event and a user the store has never seen."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from feedrank.models import MODELS, make
from feedrank.models.popularity import PopularityRecommender
from feedrank.pipeline.registry import Registry
from feedrank.serving.service import RecommendationService
from feedrank.settings import Settings
from feedrank.store import Store
from feedrank.views.site import read_site
from feedrank.views.view import StoreView, store_catalogue

from .conftest import READ
from .sitebuild import MODELS as MODELS_DIR

K = 6
# Small enough to fit every family in seconds on the test site.
PARAMS = {
    "als": {"factors": 8, "iterations": 5},
    "bpr": {"factors": 8, "iterations": 20},
    "twotower": {"epochs": 2},
    "bilinear": {"max_iter": 50},
    "sasrec": {"epochs": 2, "dim": 16, "max_len": 10},
    "ltr": {"n_estimators": 20},
}


@pytest.fixture(scope="module")
def fitted(site_template: Path) -> Iterator[dict[str, tuple[object, PopularityRecommender]]]:
    """Every family fitted once on the template site's data, with a popularity fallback."""
    from feedrank.store import open_store

    from .sitebuild import store_url

    with open_store(store_url(site_template)) as store:
        data = read_site(store)
    settings = Settings()
    fallback = PopularityRecommender().fit(data, settings)
    out = {}
    for kind in MODELS:
        params = {k: v for k, v in PARAMS.get(kind, {}).items() if k in make(kind).get_params()}
        out[kind] = (make(kind, **params).fit(data, settings), fallback)
    yield out


def _users(store: Store) -> list[str]:
    counts = store.user_counts().group_by("user_id").agg(pl.col("n").sum()).sort("n", "user_id")
    single = counts.filter(pl.col("n") == 1)["user_id"].to_list()[:1]
    busiest = counts["user_id"].to_list()[-1:]
    return busiest + single + ["never-seen-user"]


@pytest.mark.parametrize("kind", MODELS)
def test_http_answer_equals_the_batch_answer(
    kind: str,
    fitted: dict[str, tuple[object, PopularityRecommender]],
    site: Path,
    store: Store,
    make_client: Callable[..., AbstractContextManager[TestClient]],
) -> None:
    model, fallback = fitted[kind]
    Registry(site / MODELS_DIR).save(model, kind, fallback=fallback)  # type: ignore[arg-type]
    users = _users(store)
    view = StoreView(store, model.settings_, store_catalogue(store))  # type: ignore[attr-defined]
    batch = RecommendationService(model, view, fallback).recommend(users, K)  # type: ignore[arg-type]
    with make_client() as client:
        for u in users:
            r = client.get(
                f"/users/{u}/recommendations", params={"model": kind, "k": K}, headers=READ
            )
            assert r.status_code == 200, r.text
            got = r.json()["items"]
            want = batch.filter(pl.col("user_id") == u).sort("rank")
            assert [x["item_id"] for x in got] == want["item_id"].to_list(), (kind, u)
            assert [x["source"] for x in got] == want["source"].to_list(), (kind, u)
            # float32 models: one user and a block of users may take different BLAS kernels
            np.testing.assert_allclose(
                [x["score"] for x in got], want["score"].to_numpy(), rtol=1e-6, atol=1e-9
            )
