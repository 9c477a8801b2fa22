"""The read side of the service layer: recommendations (from the active generation when it is
still right for the user, else scored live on a view of that user as stored now), similar
items, models.

Fast path: the generation's precomputed top-K for the user, minus what the user knows (one
indexed read of their items, no frame built). Live path: when the user has events newer than
the generation, when explanations are asked for, when another model is named, when seen items
are wanted back, or when the filtered top-K runs short."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from feedrank.api.state import Served, ServingState
from feedrank.pipeline.registry import Registry
from feedrank.serving.ranking import items_out, page
from feedrank.serving.rerank import rerank
from feedrank.serving.rerank import similar as similar_items
from feedrank.serving.rules import Rules, select, selection_ready
from feedrank.serving.service import MODEL, RecommendationService
from feedrank.serving.session import recommend_session
from feedrank.store import Store
from feedrank.views.view import StoreView

LIVE_TOP_N = 50  # a live scoring keeps this many, so later requests with k <= it reuse it


@dataclass(frozen=True)
class RecRequest:
    user_id: str
    k: int = 10
    explain: bool = False
    model: str | None = None
    rules: Rules = field(default_factory=Rules)

    @property
    def exclude_seen(self) -> bool:
        return self.rules.exclude_seen


@dataclass
class RecResult:
    user_id: str
    model: str
    generation: int | None
    served_from: str  # "generation" | "live"
    cold_start: bool
    items: list[dict[str, Any]]
    rules: list[dict[str, Any]]  # each rule applied and the candidates it removed


class Recommending:
    def __init__(self, store: Store, registry: Registry) -> None:
        self.store, self.registry = store, registry

    def from_generation(self, state: ServingState, req: RecRequest) -> RecResult | None:
        """The fast path, or None when the request needs live scoring. Rules apply to the
        stored list, the model's own order: removing rules (filters, exclude, include,
        max_per, offset) are exact while offset + k items are left; with boosts the list is
        re-sorted by boosted score, exact while the last item served scores above what any
        item beyond the list could reach (the list's lowest score times the largest boost)."""
        gen = state.generation
        rules = req.rules
        if req.model is not None or req.explain or not rules.exclude_seen or gen is None:
            return None
        sel = select(state.catalogue, rules)  # also checks the rules' fields
        seen, newest = self.store.seen_items(req.user_id)
        if newest is not None and newest >= gen.created_at:
            return None  # the user acted since the generation was scored
        stored = self.store.recommendations(req.user_id)
        eligible = sel.contains(stored["item_id"].to_list())
        rows = [
            r
            for r, ok in zip(stored.to_dicts(), eligible, strict=True)
            if ok and r["item_id"] not in seen
        ]
        bound = None
        if rules.boosts:
            if stored.is_empty() or (stored["source"] != MODEL).any() or stored["score"].min() <= 0:  # type: ignore[operator]
                return None  # the bound below holds for positive model scores only
            bound = stored["score"].min() * float(sel.factor.max(initial=1.0))  # type: ignore[operator]
            for r in rows:
                r["score"] *= sel.boosts.get(r["item_id"], (1.0,))[0]
            rows.sort(key=lambda r: (-r["score"], r["item_id"]))
        need = rules.offset + req.k
        counts: dict[str, int] = {}
        keep = page(state.catalogue, [r["item_id"] for r in rows], rules, need, counts)
        if len(keep) < need or (bound is not None and rows[keep[-1]]["score"] <= bound):
            return None
        applied = [
            *sel.removed,
            {"rule": "exclude_seen", "removed": int(sel.contains(sorted(seen)).sum())},
            *({"rule": r, "removed": n} for r, n in counts.items()),
        ]
        # `model` names what produced these rows: the generation's model, which may not be the
        # one now serving live requests (a new champion before its first generation).
        left = [rows[i] for i in keep[rules.offset :]]
        return _result(req, gen.model, "generation", gen.id, left, [], applied, sel.boosts)

    def fast_path_ready(self, state: ServingState, req: RecRequest) -> bool:
        """Whether the fast path finds its per-catalogue work done (the rule set's selection,
        the capped fields' values): else it has tens of milliseconds of work to do, which
        belongs on a worker thread, not on the event loop."""
        rules = req.rules
        return selection_ready(state.catalogue, rules) and all(
            state.catalogue.memoised(("values", f)) for f, _ in rules.max_per
        )

    def recommend(self, state: ServingState, req: RecRequest) -> RecResult:
        fast = self.from_generation(state, req)
        return fast if fast is not None else self.live(state, req)

    def live(self, state: ServingState, req: RecRequest) -> RecResult:
        u = req.user_id
        served = state.served_for(req.model, self.registry)
        service = served.service(self.store, state.catalogue, u, state.settings)
        if req.explain:
            ans = service.answer([u], req.k, req.rules)
            why = service.explain(ans.recs)
            return _result(
                req, served.label, "live", None, ans.recs.to_dicts(), why, ans.applied, ans.boosts
            )
        hist = service.view.histories([u])
        # Re-scored when the user's own events change (whichever process wrote them); new
        # items and counters reach a cached answer within LIVE_MAX_AGE (api.state.LiveCache).
        sig = (hist["timestamp"].max() if hist.height else None, hist.height)
        # A longer list serves any shorter k, except under a cap: what a cap skipped is
        # counted up to the page served, so a capped answer is kept per k.
        n = req.k if req.rules.max_per else max(req.k, LIVE_TOP_N)
        ans = state.live.get_or_score(
            (served.label, u, req.rules, n),
            sig,
            state.catalogue,
            n,
            lambda: service.answer([u], n, req.rules),
        )
        rows = ans.recs.head(req.k).to_dicts()
        return _result(req, served.label, "live", None, rows, [], ans.applied, ans.boosts)

    def seen(self, user_id: str) -> set[str]:
        """The items the user knows, as stored now."""
        return self.store.seen_items(user_id)[0]

    # -- items -------------------------------------------------------------------------------------
    def similar(
        self, state: ServingState, item_id: str, k: int, model: str | None, rules: Rules
    ) -> dict[str, Any]:
        served: Served = state.served_for(model, self.registry)
        view = StoreView(self.store, served.model.settings_, state.catalogue)
        service = RecommendationService(served.model, view, served.fallback)
        kind, ans = similar_items(service, item_id, k, rules)
        return {
            "item_id": item_id,
            "model": served.label,
            "similarity": kind,
            "similar": items_out(ans.recs.to_dicts(), None, ans.boosts),
            "rules": ans.applied,
        }

    def session(
        self,
        state: ServingState,
        items: list[str],
        user_id: str | None,
        k: int,
        model: str | None,
        rules: Rules,
        explain: bool,
    ) -> dict[str, Any]:
        served = state.served_for(model, self.registry)
        out = recommend_session(
            self.store,
            served.model,
            served.fallback,
            state.catalogue,
            items,
            user_id,
            k,
            rules,
            explain,
            state.settings.negative_types,
        )
        return {"model": served.label, **out}

    def rerank(
        self,
        state: ServingState,
        user_id: str,
        items: list[str],
        model: str | None,
        rules: Rules,
        explain: bool,
    ) -> dict[str, Any]:
        served = state.served_for(model, self.registry)
        service = served.service(self.store, state.catalogue, user_id, state.settings)
        return {"model": served.label, **rerank(service, user_id, items, rules, explain)}

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
    applied: list[dict[str, Any]],
    boosts: dict[str, tuple[float, list[str]]],
) -> RecResult:
    rows = items_out(recs, why if req.explain else None, boosts)
    cold = bool(rows) and all(r["source"] != MODEL for r in rows)
    return RecResult(req.user_id, label, generation, served_from, cold, rows, applied)


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
