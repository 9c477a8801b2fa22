"""Sessions: recommendations from what a visitor did in this session, for anonymous visitors
and, blended in, for users with little history; and "similar items" for models without an
item similarity of their own (the GLM), as the answer to a session of one item.

A session is served by giving the model a view in which the session's items are the visitor's
newest events (`SessionView`): every model folds a history in the way it always does (the
GLM's user x attribute shares and pair features, item-to-item models' neighbours, factor
models' fold-in), so no model needs a session method."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import polars as pl

from feedrank.exceptions import ParameterError
from feedrank.models.base import Recommender
from feedrank.models.popularity import PopularityRecommender
from feedrank.schema import EVENT_COLUMNS
from feedrank.serving.ranking import Answer, items_out
from feedrank.serving.rules import Rules
from feedrank.serving.service import MODEL, RecommendationService
from feedrank.settings import Settings
from feedrank.store.base import Store
from feedrank.views.catalogue import Catalogue
from feedrank.views.view import StoreView, View

ANONYMOUS = "\x00session"  # the visitor of an anonymous session (no stored id has a NUL)
BLEND_BELOW = 5  # a user with fewer engaged items than this gets the session blended in
MAX_SESSION_ITEMS = 100


class SessionView(View):
    """`base` with `events` as `user`'s newest events (just after everything base holds)."""

    def __init__(self, base: View, user: str, items: Sequence[str], event_type: str) -> None:
        self.base, self.user = base, user
        self.settings, self.catalogue = base.settings, base.catalogue
        self.at = base.at + timedelta(microseconds=len(items) + 1)
        value = base.settings.rating_threshold if event_type in base.settings.rating_types else 1
        n = len(items)
        self.events = pl.DataFrame(
            {
                "user_id": [user] * n,
                "item_id": list(items),
                "type": [event_type] * n,
                "timestamp": [base.at + timedelta(microseconds=i) for i in range(n)],
                "value": [float(value)] * n,
            }
        ).select(
            [
                pl.col(c).cast(t)
                if c in ("user_id", "item_id", "type", "timestamp", "value")
                else pl.lit(None, t).alias(c)
                for c, t in EVENT_COLUMNS.items()
            ]
        )

    def histories(self, user_ids: Sequence[str]) -> pl.DataFrame:
        users = list(user_ids)
        others = [u for u in users if u != ANONYMOUS]
        parts = [self.base.histories(others)] if others else []
        if self.user in users:
            parts.append(self.events)
        if not parts:
            return self.events.clear()
        return pl.concat(parts).sort("timestamp", maintain_order=True)

    def profiles(self, user_ids: Sequence[str]) -> pl.DataFrame:
        return self.base.profiles([u for u in user_ids if u != ANONYMOUS])

    def active_users(self) -> list[str]:
        return self.base.active_users()


def session_type(settings: Settings, types: Sequence[str]) -> str:
    """The event type a session's items count as: `view` when it is an engagement, else the
    first engagement type the data has."""
    if settings.is_engagement_type("view"):
        return "view"
    found = settings.engagement_types_among(sorted(types)) or settings.engagement_types_among(
        settings.types
    )
    return found[0] if found else "view"


def recommend_session(
    store: Store,
    model: Recommender,
    fallback: PopularityRecommender | None,
    catalogue: Catalogue,
    items: Sequence[str],
    user_id: str | None,
    k: int,
    rules: Rules,
    explain: bool = False,
    negative_types: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A session request's answer (the API's and the CLI's shape): items, the rules applied,
    and `session`, which says whether the session was blended into a history and why."""
    items, unknown = check_session(items, catalogue)
    settings = model.settings_
    if user_id is None:
        base: View = StoreView(store, settings, catalogue)
        engaged = 0
    else:
        base = StoreView.for_user(store, settings, catalogue, user_id)
        hist = base.histories([user_id])
        engaged = hist.filter(settings.engaged_expr(base.types))["item_id"].n_unique()
    blend = user_id is None or engaged < BLEND_BELOW
    who = ANONYMOUS if user_id is None else user_id
    if blend:
        view: View = SessionView(base, who, items, session_type(settings, base.types))
    else:  # history enough: the session's items are only left out as seen
        view = base
        if rules.exclude_seen:
            rules = replace(rules, exclude=(*rules.exclude, *items))
    service = RecommendationService(model, view, fallback, negative_types)
    ans = service.answer([who], k, rules)
    why = service.explain(ans.recs) if explain else None
    return {
        "user_id": user_id,
        "session": {
            "items": items,
            "unknown": unknown,
            "blended": blend,
            "history_engagements": engaged,
            "reason": _reason(user_id, engaged, len(items), blend),
        },
        "served_from": "live",
        **answer_body(ans, why),
    }


def answer_body(ans: Answer, why: list[list[dict[str, Any]]] | None) -> dict[str, Any]:
    rows = items_out(ans.recs.to_dicts(), why, ans.boosts)
    cold = bool(rows) and all(r["source"] != MODEL for r in rows)
    return {"cold_start": cold, "items": rows, "rules": ans.applied}


def _reason(user_id: str | None, engaged: int, n: int, blend: bool) -> str:
    if user_id is None:
        return f"anonymous visitor: ranked from the session's {n} item(s)"
    if blend:
        return (
            f"{engaged} engaged item(s) in the user's history (fewer than {BLEND_BELOW}): the "
            f"session's {n} item(s) are blended in as their newest events"
        )
    return (
        f"{engaged} engaged items in the user's history (at least {BLEND_BELOW}): served from "
        "it; the session's items are left out as seen"
    )


def check_session(items: Sequence[str], catalogue: Catalogue) -> tuple[list[str], list[str]]:
    """The session's distinct known items, in order, and the unknown ones (left out: they
    carry no signal)."""
    ids = list(dict.fromkeys(i.strip() for i in items if isinstance(i, str) and i.strip()))
    if not ids or len(ids) > MAX_SESSION_ITEMS:
        raise ParameterError(
            "items",
            f"items must list 1 to {MAX_SESSION_ITEMS} item ids of the session; got {len(ids)}",
        )
    known = catalogue.item_ids()
    return [i for i in ids if i in known], [i for i in ids if i not in known]
