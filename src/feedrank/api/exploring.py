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
    catalogue: np.ndarray,
    excluded: Collection[str],
    epsilon: float,
    rng: np.random.Generator,
) -> tuple[RecResult, bool]:
    """The slate to show and whether it is the random one; every item carries `propensity`.
    `catalogue`: the sorted item ids a slate may hold; `excluded`: those this user may not get
    (what they engaged with). The cost follows k and the excluded items, not the catalogue."""
    excluded = {i for i in excluded if _in(catalogue, i)}
    n, k = len(catalogue) - len(excluded), len(ranked.items)
    if n <= 0 or k == 0:
        return ranked, False
    at = {(r["item_id"], r["rank"]) for r in ranked.items}  # the ranked slate's positions

    def propensity(item_id: str, rank: int) -> float:
        allowed = _in(catalogue, item_id) and item_id not in excluded
        return (1 - epsilon) * ((item_id, rank) in at) + epsilon / n * allowed

    if rng.random() >= epsilon:
        kept = [{**r, "propensity": propensity(r["item_id"], r["rank"])} for r in ranked.items]
        return replace(ranked, items=kept), False
    # k + |excluded| distinct draws in random order hold at least min(k, n) allowed items; the
    # first of them are a uniformly random ordered slate of the allowed ones
    picks = rng.choice(len(catalogue), size=min(len(catalogue), k + len(excluded)), replace=False)
    drawn = [str(i) for i in catalogue[picks] if i not in excluded][:k]
    items: list[dict[str, Any]] = [
        {
            "rank": rank,
            "item_id": item,
            "score": None,
            "source": EXPLORED,
            "propensity": propensity(item, rank),
        }
        for rank, item in enumerate(drawn, start=1)
    ]
    return replace(ranked, items=items, cold_start=False), True


def _in(sorted_ids: np.ndarray, item_id: str) -> bool:
    at = int(np.searchsorted(sorted_ids, item_id))
    return at < len(sorted_ids) and sorted_ids[at] == item_id
