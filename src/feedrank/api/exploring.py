"""Epsilon-greedy exploration at serving, with exact propensities, so the impressions a site logs
can later price a new model off-policy (`feedrank offpolicy estimate`).

With probability epsilon a request gets a uniformly random slate: k distinct items drawn from the
n the user could be shown (the catalogue, minus what they engaged with when seen items are left
out), in random order; otherwise the ranked slate. Item j at position p was therefore shown with
probability (1 - epsilon) * [the ranked slate has j at p] + epsilon / n — exact, position-level,
and never zero, so any policy's choice at any position has support in the log."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import Any

import numpy as np

from feedrank.api.recommending import RecResult

EXPLORED = "explore_uniform"  # the `source` of items of a random slate


def explore(
    ranked: RecResult,
    candidates: Collection[str],
    epsilon: float,
    rng: np.random.Generator,
) -> tuple[RecResult, bool]:
    """The slate to show and whether it is the random one; every item carries `propensity`."""
    pool = np.asarray(sorted(candidates), dtype=object)
    n, k = len(pool), len(ranked.items)
    if n == 0 or k == 0:
        return ranked, False
    at = {(r["item_id"], r["rank"]) for r in ranked.items}  # the ranked slate's positions
    members = set(candidates)

    def propensity(item_id: str, rank: int) -> float:
        return (1 - epsilon) * ((item_id, rank) in at) + epsilon / n * (item_id in members)

    if rng.random() >= epsilon:
        kept = [{**r, "propensity": propensity(r["item_id"], r["rank"])} for r in ranked.items]
        return replace(ranked, items=kept), False
    drawn = rng.choice(pool, size=min(k, n), replace=False)
    items: list[dict[str, Any]] = [
        {
            "rank": rank,
            "item_id": str(item),
            "score": None,
            "source": EXPLORED,
            "propensity": propensity(str(item), rank),
        }
        for rank, item in enumerate(drawn, start=1)
    ]
    return replace(ranked, items=items, cold_start=False), True
