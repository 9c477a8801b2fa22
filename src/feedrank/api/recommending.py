"""The read side of the service layer: recommendations (from the active generation when it is
still right for the user, else scored live on a view of that user as stored now), similar
items, models.

Fast path: the generation's precomputed top-K for the user, minus what the user knows (one
indexed read of their items, no frame built). Live path: when the user has events newer than
the generation, when explanations are asked for, when another model is named, when seen items
are wanted back, or when the filtered top-K runs short."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from feedrank.api.state import Served, ServingState
from feedrank.exceptions import NotFoundError
from feedrank.pipeline.registry import Registry
from feedrank.serving.service import MODEL
from feedrank.store import Store
from feedrank.views.view import StoreView

LIVE_TOP_N = 50  # a live scoring keeps this many, so later requests with k <= it reuse it


@dataclass(frozen=True)
class RecRequest:
    user_id: str
    k: int = 10
    exclude_seen: bool = True
    explain: bool = False
    model: str | None = None


@dataclass
class RecResult:
    user_id: str
    model: str
    generation: int | None
    served_from: str  # "generation" | "live"
    cold_start: bool
    items: list[dict[str, Any]]


class Recommending:
    def __init__(self, store: Store, registry: Registry) -> None:
        self.store, self.registry = store, registry

    def from_generation(self, state: ServingState, req: RecRequest) -> RecResult | None:
        """The fast path, or None when the request needs live scoring."""
        gen = state.generation
        if req.model is not None or req.explain or not req.exclude_seen or gen is None:
            return None
        seen, newest = self.store.seen_items(req.user_id)
        if newest is not None and newest >= gen.created_at:
            return None  # the user acted since the generation was scored
        rows = self.store.recommendations(req.user_id).to_dicts()
        left = [r for r in rows if r["item_id"] not in seen][: req.k]
        if len(left) < req.k:
            return None
        # `model` names what produced these rows: the generation's model, which may not be the
        # one now serving live requests (a new champion before its first generation).
        return _result(req, gen.model, "generation", gen.id, left, [])

    def recommend(self, state: ServingState, req: RecRequest) -> RecResult:
        fast = self.from_generation(state, req)
        return fast if fast is not None else self.live(state, req)

    def live(self, state: ServingState, req: RecRequest) -> RecResult:
        u = req.user_id
        served = state.served_for(req.model, self.registry)
        service = served.service(self.store, state.catalogue, u)
        if req.explain:
            recs = service.recommend([u], req.k, req.exclude_seen)
            why = service.explain(recs)
            return _result(req, served.label, "live", None, recs.to_dicts(), why)
        hist = service.view.histories([u])
        # Re-scored when the user's own events change (whichever process wrote them); new
        # items and counters reach a cached answer within LIVE_MAX_AGE (api.state.LiveCache).
        sig = (hist["timestamp"].max() if hist.height else None, hist.height)
        n = max(req.k, LIVE_TOP_N)
        recs = state.live.get_or_score(
            (served.label, u, req.exclude_seen),
            sig,
            state.catalogue,
            n,
            lambda: service.recommend([u], n, req.exclude_seen),
        )
        return _result(req, served.label, "live", None, recs.head(req.k).to_dicts(), [])

    def seen(self, user_id: str) -> set[str]:
        """The items the user knows, as stored now."""
        return self.store.seen_items(user_id)[0]

    # -- items -------------------------------------------------------------------------------------
    def similar(
        self, state: ServingState, item_id: str, k: int, model: str | None = None
    ) -> tuple[str, list[dict[str, Any]]]:
        items = state.catalogue.items
        if items.filter(pl.col("item_id") == item_id).is_empty():
            raise NotFoundError(f"item_id must be a known item; got '{item_id}'")
        served: Served = state.served_for(model, self.registry)
        view = StoreView(self.store, served.model.settings_, state.catalogue)
        out = served.model.at(view).similar_items([item_id], k)
        return served.label, [_jsonable(r) for r in out.drop("item_id").to_dicts()]

    def models(self, state: ServingState) -> dict[str, Any]:
        records = self.registry.list()
        champion = self.registry.champion()
        return {
            "serving": state.label,
            "champion": f"{champion.name}/{champion.version}" if champion else None,
            "generation": _generation(state),
            "models": [
                {
                    "name": r.name,
                    "version": r.version,
                    "kind": r.kind,
                    "serving": f"{r.name}/{r.version}" == state.label,
                    "metrics": r.meta.get("metrics"),
                    "split": r.meta.get("split"),
                }
                for r in records
            ],
        }


def _result(
    req: RecRequest,
    label: str,
    served_from: str,
    generation: int | None,
    recs: list[dict[str, Any]],
    why: list[list[dict[str, Any]]],
) -> RecResult:
    rows = [
        {"rank": rank, "item_id": r["item_id"], "score": r["score"], "source": r["source"]}
        for rank, r in enumerate(recs, start=1)
    ]
    if req.explain:
        for i, row in enumerate(rows):
            row["reasons"] = why[i] if i < len(why) else []
    cold = bool(rows) and all(r["source"] != MODEL for r in rows)
    return RecResult(req.user_id, label, generation, served_from, cold, rows)


def _generation(state: ServingState) -> dict[str, Any] | None:
    g = state.generation
    if g is None:
        return None
    return {
        "id": g.id,
        "model": g.model,
        "created_at": g.created_at.isoformat(),
        "n_users": g.n_users,
        "n_rows": g.n_rows,
    }


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
