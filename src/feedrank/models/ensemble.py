"""What the ensembles share (models.hybrid): generator specs, the per-user normalisations of
their scores, fitting clones of them, scoring them through one history read, and nested
persistence."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from feedrank.models.base import Recommender, Scorer
from feedrank.views.site import SiteData
from feedrank.views.view import View

GeneratorSpec = str | Mapping[str, Any] | Recommender


def resolve(spec: GeneratorSpec) -> tuple[str, Recommender]:
    """A generator spec -> (name, an unfitted model): "kind", {"kind", "params", "name"}, or a
    model instance (used as a template: it is copied, never fitted in place)."""
    if isinstance(spec, Recommender):
        return spec.kind, copy.deepcopy(spec)
    from feedrank.models import make  # late: the registry names this module

    kind, params, name = (
        (spec, {}, spec)
        if isinstance(spec, str)
        else (spec.get("kind"), dict(spec.get("params", {})), spec.get("name", spec.get("kind")))
    )
    return str(name), make(str(kind), **params)


def minmax_rows(S: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Per row, (s - min) / (max - min) over the unseen columns (0 where a row is constant)."""
    masked = np.where(seen, np.nan, S)
    with np.errstate(all="ignore"):
        lo = np.nanmin(masked, axis=1, keepdims=True)
        hi = np.nanmax(masked, axis=1, keepdims=True)
    lo, hi = np.nan_to_num(lo), np.nan_to_num(hi)
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.where(hi > lo, (S - lo) / span, 0.0)


def rank_rows(S: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """1-based rank of each column within its row among unseen columns; ties share the best rank
    (so a constant generator ranks everything 1 and says nothing); seen columns come last."""
    keyed = np.where(seen, -np.inf, S)
    order = np.argsort(-keyed, axis=1, kind="stable")
    ordered = np.take_along_axis(keyed, order, axis=1)
    pos = np.arange(S.shape[1])[None, :]
    new = np.ones(S.shape, dtype=bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    start = np.maximum.accumulate(np.where(new, pos, 0), axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, start + 1, axis=1)
    return ranks


class _Ensemble(Recommender):
    """Shared machinery: generator specs, fitting clones, scoring them through one history
    read, nested persistence."""

    generators: Sequence[GeneratorSpec]
    names_: list[str]
    generators_: list[Recommender]

    def _fit_generators(
        self, data: SiteData, members: Sequence[int] | None = None
    ) -> list[Recommender]:
        specs = [self.generators[g] for g in members] if members is not None else self.generators
        return [resolve(s)[1].fit(data, self.settings_) for s in specs]

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        params["generators"] = [_spec_json(s) for s in self.generators]
        return params

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        metas, arrays = [], {}
        for i, g in enumerate(self.generators_):
            m, a = g.dump()
            metas.append(m)
            arrays.update({f"g{i}__{k}": v for k, v in a.items()})
        return {"generators_fitted": metas, "names": self.names_}, arrays

    def _drop_users(
        self, meta: dict[str, Any], arrays: dict[str, np.ndarray], user_ids: set[str]
    ) -> bool:
        dropped = False
        for i, (g, m) in enumerate(zip(self.generators_, meta["generators_fitted"], strict=True)):
            prefix = f"g{i}__"
            sub = {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}
            if g._drop_users(m, sub, user_ids):
                arrays.update({f"{prefix}{k}": v for k, v in sub.items()})
                dropped = True
        return dropped

    def _load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        from feedrank.models import model_class

        self.names_ = list(meta["names"])
        self.generators_ = []
        for i, m in enumerate(meta["generators_fitted"]):
            prefix = f"g{i}__"
            sub = {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}
            self.generators_.append(model_class(m["kind"]).restore(m, sub))


def _spec_json(spec: GeneratorSpec) -> Any:
    if isinstance(spec, Recommender):
        return {"kind": spec.kind, "params": spec.get_params()}
    return dict(spec) if isinstance(spec, Mapping) else spec


class _EnsembleScorer(Scorer):
    """Scores every generator on one read of the users' histories. Scoring runs over the view's
    candidates plus any requested item, so ranks and normalisations do not depend on which
    items were asked for."""

    model: _Ensemble

    def __init__(self, model: _Ensemble, view: View, generators: Sequence[Recommender]) -> None:
        super().__init__(model, view)
        self.scorers = [g.at(view) for g in generators]

    def prepare(self) -> _EnsembleScorer:
        for sc in self.scorers:
            sc.prepare()
        return self

    def _catalogue(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        asked = np.asarray(item_ids, dtype=object)
        cat = self.view.candidates()
        extra = asked[~np.isin(asked, cat)]
        full = np.concatenate([cat, np.unique(extra)]) if extra.size else cat
        pos = pl.DataFrame({"item_id": full}, schema={"item_id": pl.String}).with_row_index("__i")
        cols = (
            pl.DataFrame({"item_id": asked}, schema={"item_id": pl.String})
            .join(pos, on="item_id", how="left", maintain_order="left")["__i"]
            .to_numpy()
        )
        return full, cols

    def features(
        self, users: Sequence[str], histories: pl.DataFrame, items: np.ndarray, seen: np.ndarray
    ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """Per generator, normalised scores and rank discounts; and per user, whether a
        personal generator has a signal (else the ensemble has none: its answer would be
        popularity or freshness under another name)."""
        norm, ranks = [], []
        personal = np.zeros(len(users), dtype=bool)
        for sc in self.scorers:
            raw = sc.score_users(users, histories, items).astype(np.float64)
            if sc.model.personal:
                personal |= np.isfinite(raw).any(axis=1)
            S = np.nan_to_num(raw, nan=0.0, neginf=0.0)
            norm.append(minmax_rows(S, seen))
            ranks.append(rank_rows(S, seen))
        return norm, ranks, personal

    def recommend(
        self,
        user_ids: Sequence[str],
        k: int = 10,
        exclude_seen: bool = True,
        batch_size: int | None = None,
    ) -> pl.DataFrame:
        # Few enough users that a block's feature tensor stays under ~4M cells.
        cells = max(1, len(self.view.candidates()) * 2 * len(self.scorers))
        step = min(batch_size or 512, max(1, 4_000_000 // cells))
        return super().recommend(user_ids, k, exclude_seen, step)
