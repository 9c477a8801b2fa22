"""The read side of the service layer: recommendations (from the active generation when it is
still right for the user, else scored live on a fresh per-user view), similar items, models.

Fast path: the generation's precomputed top-K for the user, minus what the user engaged with
since (read from the store on every request). Live path: when the user has events the
generation has not seen, when explanations are asked for, when another model is named, when
seen items are wanted back, or when the filtered top-K runs short."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from feedrank.api.fresh import fresh_view, supports_fresh_view
from feedrank.api.state import Freshness, ServingState
from feedrank.config import Settings
from feedrank.exceptions import FeedrankError, NotFoundError
from feedrank.models.base import Recommender
from feedrank.pipeline.recommend import MODEL, RecommendationService
from feedrank.pipeline.registry import Registry
from feedrank.store import Store

LIVE_TOP_N = 50  # a live scoring keeps this many, so later requests with k <= it reuse it


class UnsupportedError(FeedrankError):
    """The serving model cannot do what was asked (e.g. item similarity)."""


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
    def __init__(self, store: Store, registry: Registry, settings: Settings) -> None:
        self.store, self.registry, self.settings = store, registry, settings

    def from_generation(
        self, state: ServingState, fresh: Freshness, req: RecRequest
    ) -> RecResult | None:
        """The fast path, or None when the request needs live scoring: one indexed read of the
        generation's rows and a filter of at most K of them by the user's engaged items (those
        in the loaded data; a user who engaged since, through this server, is dirty and served
        live from the store). No Polars query runs here: a lazy collect hands work to Polars'
        thread pool, which on a busy machine is where tail latency comes from."""
        u = req.user_id
        if (
            req.model is not None
            or req.explain
            or not req.exclude_seen
            or fresh.is_dirty(u)
            or state.generation is None
        ):
            return None
        seen = set(state.seen.get(u, ()))
        rows = self.store.recommendations(u).to_dicts()
        left = [r for r in rows if r["item_id"] not in seen][: req.k]
        if len(left) < req.k:
            return None
        # `model` names what produced these rows: the generation's model, which may not be the
        # one now serving live requests (a new champion before its first generation).
        return self._result(req, state, state.generation.model, "generation", left, [])

    def recommend(self, state: ServingState, fresh: Freshness, req: RecRequest) -> RecResult:
        fast = self.from_generation(state, fresh, req)
        return fast if fast is not None else self.live(state, fresh, req)

    def live(self, state: ServingState, fresh: Freshness, req: RecRequest) -> RecResult:
        u = req.user_id
        events = self.store.events(user_ids=[u])  # as stored now: fresh at once
        service, label = state.service_for(req.model, self.registry)
        if req.explain:
            recs, why = self._live(service, state, fresh, req, events, self._engaged(events))
            return self._result(req, state, label, "live", recs.to_dicts(), why)
        engaged = self._engaged(events)
        # Valid until the user engages again (through this server or any other writer).
        key, sig = (label, u, req.exclude_seen), (fresh.dirty.get(u), engaged.len())
        cached = state.live.get(key, sig)
        if cached is None or (cached.height < req.k and cached.height >= LIVE_TOP_N):
            n = max(req.k, LIVE_TOP_N)
            top = RecRequest(u, n, req.exclude_seen, False, req.model)
            cached, _ = self._live(service, state, fresh, top, events, engaged)
            state.live.put(key, sig, cached)
        return self._result(req, state, label, "live", cached.head(req.k).to_dicts(), [])

    def engaged(self, user_id: str) -> set[str]:
        """The items the user engaged with, as stored now."""
        return set(self._engaged(self.store.events(user_ids=[user_id])).to_list())

    def _engaged(self, events: pl.DataFrame) -> pl.Series:
        return events.filter(
            pl.col("type").is_in(self.settings.engagement_types) & (pl.col("item_id") != "")
        )["item_id"].unique()

    def _live(
        self,
        service: RecommendationService,
        state: ServingState,
        fresh: Freshness,
        req: RecRequest,
        events: pl.DataFrame,
        engaged: pl.Series,
    ) -> tuple[pl.DataFrame, list[list[dict[str, Any]]]]:
        u = req.user_id
        model = service.model
        if engaged.is_empty():  # no history: the cold-start fallback, marked by its source
            fb = service.fallback
            recs = fb.recommend([u], req.k, False).with_columns(source=pl.lit(fb.sources([u])[0]))
            return recs, [[] for _ in range(recs.height)]
        if supports_fresh_view(model):
            view = fresh_view(model, fresh.profile_frame(state, u), events)
            recs = view.recommend([u], req.k, req.exclude_seen).with_columns(source=pl.lit(MODEL))
            items = recs["item_id"].to_list()
            why = view.explain_pairs([u] * len(items), items) if req.explain else []
            return recs, why
        # Models without a per-user view: loaded features, freshly engaged items still removed.
        recs = model.recommend([u], req.k + engaged.len(), req.exclude_seen)
        if req.exclude_seen:
            recs = recs.filter(~pl.col("item_id").is_in(engaged.implode()))
        recs = _rerank(recs.head(req.k)).with_columns(source=pl.lit(MODEL))
        items = recs["item_id"].to_list()
        why = model.explain_pairs([u] * len(items), items) if req.explain else []
        return recs, why

    def _result(
        self,
        req: RecRequest,
        state: ServingState,
        label: str,
        served_from: str,
        recs: list[dict[str, Any]],
        why: list[list[dict[str, Any]]],
    ) -> RecResult:
        rows = [
            {"rank": rank, "item_id": r["item_id"], "score": r["score"], "source": r["source"]}
            for rank, r in enumerate(recs, start=1)
        ]
        for rank, row in enumerate(rows, start=1):
            if req.explain:
                row["reasons"] = why[rank - 1] if rank - 1 < len(why) else []
        cold = bool(rows) and all(r["source"] != MODEL for r in rows)
        gen = state.generation_id if served_from == "generation" else None
        return RecResult(req.user_id, label, gen, served_from, cold, rows)

    # -- items -------------------------------------------------------------------------------------
    def similar(self, state: ServingState, item_id: str, k: int) -> list[dict[str, Any]]:
        known = state.data.items.filter(pl.col("item_id") == item_id)
        if known.is_empty():
            raise NotFoundError(f"item_id must be a known item; got '{item_id}'")
        model = state.model
        if type(model).similar_items is Recommender.similar_items:  # the contract's default
            raise UnsupportedError(
                f"item similarity needs a model that has one (e.g. itemknn, als, ease, content); "
                f"the serving model {state.label} is a '{model.kind}' model"
            )
        out = model.similar_items([item_id], k)
        frame = out if isinstance(out, pl.DataFrame) else pl.DataFrame(out)
        return [_jsonable(r) for r in frame.to_dicts()]

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


def _rerank(recs: pl.DataFrame) -> pl.DataFrame:
    return recs.with_columns(rank=pl.int_range(1, pl.len() + 1, dtype=pl.Int32))


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
