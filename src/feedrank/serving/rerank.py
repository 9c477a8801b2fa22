"""Re-ranking a list the site supplies (search results, a category page) and similar items
under the same rules.

Re-rank: exactly the items asked for, ordered by the service's sources (the model where it
has a signal, then popularity, the newest, the rest), each by its (boosted) score, ties to the
smaller id; items the catalogue does not know are kept, last, in the order given, marked
`known: false`. Similar items: a model's own item similarity where it has one
(`similarity: "item"`), else, for personal models such as the GLM, what the model recommends
to a visitor whose only event is that item (`similarity: "session"`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import polars as pl

from feedrank.exceptions import NotFoundError, ParameterError
from feedrank.models.base import Scorer, Unsupported
from feedrank.serving.ranking import Answer, boosted, items_out, rank_users
from feedrank.serving.rules import Rules, select
from feedrank.serving.service import MODEL, RecommendationService
from feedrank.serving.session import ANONYMOUS, SessionView, session_type

MAX_RERANK = 1000
UNKNOWN = "unknown"


def rerank(
    service: RecommendationService,
    user_id: str,
    item_ids: Sequence[str],
    rules: Rules,
    explain: bool = False,
) -> dict[str, Any]:
    """The re-rank answer (the API's and the CLI's shape)."""
    if rules.filters or rules.exclude or rules.include is not None or rules.max_per:
        raise ParameterError(
            "rules", "a re-rank returns exactly the items given: it takes boost only"
        )
    ids = list(dict.fromkeys(i for i in item_ids if isinstance(i, str) and i))
    if not ids or len(ids) > MAX_RERANK:
        raise ParameterError("items", f"items must list 1 to {MAX_RERANK} item ids; got {len(ids)}")
    catalogue = service.view.catalogue
    known_ids = catalogue.item_ids()
    known = np.array(sorted(i for i in ids if i in known_ids), dtype=object)  # ties: by id
    boosts = select(catalogue, Rules(boosts=rules.boosts)).boosts
    factor = np.array([boosts[i][0] if i in boosts else 1.0 for i in known])
    hist = service.view.histories([user_id])
    tier = np.full(len(known), len(service.sources()))
    score = np.full(len(known), -np.inf)
    source = np.array([UNKNOWN] * len(known), dtype=object)
    for t, (name, scorer) in enumerate(service.sources()):
        todo = tier == len(service.sources())
        if not todo.any():  # also when no item is known
            break
        s = scorer.reported(scorer.ranking_scores([user_id], hist, known)[0])
        s = boosted(s, factor) if rules.boosts else s
        hit = todo & np.isfinite(s)
        tier[hit], score[hit] = t, s[hit]
        source[hit] = name if isinstance(name, str) else name([user_id])[0]
    order = np.lexsort((-score, tier))  # stable: equal scores keep id order
    rows = [{"item_id": known[i], "score": float(score[i]), "source": source[i]} for i in order]
    rows += [{"item_id": i, "score": None, "source": UNKNOWN} for i in ids if i not in known_ids]
    mine = [r["item_id"] for r in rows if r["source"] == MODEL]
    why_of = (
        dict(zip(mine, service.scorer.explain_pairs([user_id] * len(mine), mine), strict=True))
        if explain
        else {}
    )
    out = items_out(rows, [why_of.get(r["item_id"], []) for r in rows] if explain else None, boosts)
    for row in out:
        row["known"] = row["source"] != UNKNOWN
    return {"user_id": user_id, "items": out}


class _Similarity(Scorer):
    """One item's similarities as the scores of every "user" (NaN: not similar)."""

    def __init__(self, base: Scorer, item_id: str) -> None:
        super().__init__(base.model, base.view)
        self.base, self.item_id = base, item_id

    def score_users(
        self, user_ids: Sequence[str], histories: pl.DataFrame, item_ids: np.ndarray
    ) -> np.ndarray:
        sims = self.base.similar_items([self.item_id], len(self.view.candidates()) + 1)
        row = (
            pl.DataFrame({"item_id": item_ids}, schema={"item_id": pl.String})
            .join(
                sims.select(pl.col("similar_item_id").alias("item_id"), "score"),
                on="item_id",
                how="left",
                maintain_order="left",
            )["score"]
            .fill_null(float("nan"))
            .to_numpy()
        )
        return np.tile(row, (len(user_ids), 1))


def similar(
    service: RecommendationService, item_id: str, k: int, rules: Rules
) -> tuple[str, Answer]:
    """Items similar to `item_id` under `rules`, and what "similar" meant for this model."""
    if item_id not in service.view.catalogue.item_ids():
        raise NotFoundError(f"item_id must be a known item; got '{item_id}'")
    # an item is never its own neighbour; nobody's history to leave out
    rules = replace(rules, exclude=(*rules.exclude, item_id), exclude_seen=False)
    view = SessionView(service.view, ANONYMOUS, [], "view")  # nobody's history
    try:
        service.scorer.similar_items([item_id], 1)
    except Unsupported:
        if not service.scorer.model.personal:
            raise
        view = SessionView(
            service.view, ANONYMOUS, [item_id], session_type(view.settings, view.types)
        )
        session = RecommendationService(service.scorer.model, view, None, ())
        return "session", session.answer([ANONYMOUS], k, rules)
    sources = [(MODEL, _Similarity(service.scorer, item_id))]
    return "item", rank_users(view, sources, [ANONYMOUS], k, rules)
