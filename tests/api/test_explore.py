"""Epsilon-greedy exploration at serving: exact propensities, the right share of random slates,
seen items never drawn."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient
from scipy import stats

from feedrank.settings import Settings
from feedrank.store import Store

from .conftest import READ


def _seeded(client: TestClient, seed: int) -> None:
    """The server's exploration draws, made reproducible so the statistical checks cannot flake."""
    client.app.state.runtime.rng = np.random.default_rng(seed)  # type: ignore[attr-defined]


def _user_and_catalogue(store: Store) -> tuple[str, set[str], set[str]]:
    """A user, the catalogue, and the items that user knows (any item event but an
    impression: what seen items are, Settings.seen_expr)."""
    u = str(store.events(types=["like"])["user_id"][0])
    seen = store.events(user_ids=[u]).filter(Settings.seen_expr())
    return u, set(store.items()["item_id"].to_list()), set(seen["item_id"].to_list())


def test_propensities_are_exact_and_random_slates_come_at_the_asked_rate(
    client: TestClient, store: Store
) -> None:
    u, catalogue, engaged = _user_and_catalogue(store)
    _seeded(client, 1)
    n = len(catalogue - engaged)
    eps, k, requests = 0.3, 5, 300
    ranked = client.get(f"/users/{u}/recommendations", params={"k": k}, headers=READ).json()
    greedy = [r["item_id"] for r in ranked["items"]]
    explored = 0
    for _ in range(requests):
        got = client.get(
            f"/users/{u}/recommendations", params={"k": k, "explore": eps}, headers=READ
        ).json()
        assert got["explore"] == eps and len(got["items"]) == k
        for r in got["items"]:
            assert r["item_id"] not in engaged
            on_slate = greedy[r["rank"] - 1] == r["item_id"]
            assert r["propensity"] == (1 - eps) * on_slate + eps / n
        if got["explored"]:
            explored += 1
            assert all(r["source"] == "explore_uniform" for r in got["items"])
        else:
            assert [r["item_id"] for r in got["items"]] == greedy
    # a two-sided binomial test of the share of random slates at the 0.1% level
    assert stats.binomtest(explored, requests, eps).pvalue > 0.001


def test_random_slates_draw_every_candidate_uniformly(client: TestClient, store: Store) -> None:
    u, catalogue, engaged = _user_and_catalogue(store)
    _seeded(client, 2)
    candidates = sorted(catalogue - engaged)
    counts = dict.fromkeys(candidates, 0)
    for _ in range(200):
        got = client.get(
            f"/users/{u}/recommendations", params={"k": 5, "explore": 1.0}, headers=READ
        ).json()
        assert got["explored"]
        for r in got["items"]:
            counts[r["item_id"]] += 1
    # 1,000 draws over the candidates: a chi-square goodness of fit to uniform
    observed = np.array(list(counts.values()))
    assert stats.chisquare(observed).pvalue > 0.001


def test_no_exploration_leaves_the_response_as_it_was(client: TestClient, store: Store) -> None:
    u, _, _ = _user_and_catalogue(store)
    got = client.get(f"/users/{u}/recommendations", params={"k": 3}, headers=READ).json()
    assert "explore" not in got and all("propensity" not in r for r in got["items"])
    bad = client.get(f"/users/{u}/recommendations", params={"explore": 1.5}, headers=READ)
    assert bad.status_code == 422 and "explore" in bad.text
