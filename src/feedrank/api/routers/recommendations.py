"""GET /users/{id}/recommendations, GET /items/{id}/similar."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from feedrank.api.auth import require
from feedrank.api.exploring import explore as explore_slate
from feedrank.api.recommending import RecRequest
from feedrank.api.rules_params import RulesBody, rules_query
from feedrank.api.runtime import Runtime, expensive, runtime
from feedrank.api.schemas import ERRORS, RecommendationsOut
from feedrank.exceptions import NotFoundError
from feedrank.experiments.ab import Experiment
from feedrank.serving.rules import Rules, select
from feedrank.settings import Settings

router = APIRouter(tags=["recommendations"], dependencies=[Depends(require("read"))])


@router.get(
    "/users/{user_id}/recommendations",
    response_model=RecommendationsOut,
    response_model_exclude_none=True,
    responses=ERRORS,
    dependencies=[Depends(expensive)],  # explain=true only
)
async def recommendations(
    user_id: str = Path(min_length=1, max_length=256),
    k: int = Query(10, ge=1, le=1000),
    exclude_seen: bool = Query(True, description="leave out items the user engaged with"),
    explain: bool = Query(False, description="each item's largest feature contributions"),
    model: str | None = Query(None, description="a registry model name (default: the served one)"),
    experiment: str | None = Query(
        None,
        max_length=256,
        description="an experiment configured in settings: the user's variant (a model) serves, "
        "and the response says which; send it back in the impressions' context",
    ),
    explore: float = Query(
        0.0,
        ge=0.0,
        le=1.0,
        description="epsilon-greedy exploration: the share of requests served a uniformly random "
        "slate (source explore_uniform). Every item then carries `propensity`, its exact "
        "probability of being shown at that rank; send it back with the impressions so that "
        "`feedrank offpolicy estimate` can price other models on the log",
    ),
    rules: Rules = Depends(rules_query),
    rt: Runtime = Depends(runtime),
) -> Any:
    """Top-k items with scores, under the request's rules. Users without history get the
    cold-start fallback, marked by `source` and `cold_start`. Fresh events count at once."""
    state = rt.state  # one consistent model + generation for the whole request
    variant = None
    if experiment is not None:
        variant = assign_variant(state.settings, experiment, user_id)
        model = variant
    rules = replace(rules, exclude_seen=exclude_seen)
    req = RecRequest(user_id, k, explain, model or None, rules)
    service = rt.recommending
    # The fast path (about a millisecond) runs on the event loop, unless its rule set is new
    # to this catalogue; live scoring (milliseconds) goes to a worker thread, so neither holds
    # up other requests.
    if service.fast_path_ready(state, req):
        out = service.from_generation(state, req)
    else:
        out = await rt.live(service.from_generation, state, req)
    if out is None:
        out = await rt.live(service.live, state, req)
    extra: dict[str, Any] = {}
    if explore > 0:
        seen = await run_in_threadpool(service.seen, user_id) if exclude_seen else set()
        catalogue = select(state.catalogue, rules).items  # explore within the rules too
        out, explored = explore_slate(out, catalogue, seen, explore, rt.rng)  # one rng user
        extra = {"explore": explore, "explored": explored}
    if variant is not None:
        extra |= {"experiment": experiment, "variant": variant}
    rt.metrics.recommendations.labels(out.served_from).inc()
    body = {**out.__dict__, **extra}
    return JSONResponse(body)  # already the documented shape: skip re-validating it


def assign_variant(settings: Settings, experiment: str, user_id: str) -> str:
    shares = settings.experiments.get(experiment)
    if shares is None:
        raise NotFoundError(
            f"experiment must be one of {sorted(settings.experiments)}; got '{experiment}'"
        )
    return Experiment(experiment, shares).assign([user_id])[0]


@router.get("/items/{item_id}/similar", responses=ERRORS, dependencies=[Depends(expensive)])
def similar(
    item_id: str = Path(min_length=1, max_length=256),
    k: int = Query(10, ge=1, le=1000),
    model: str | None = Query(None, description="a registry model name (default: the served one)"),
    rules: Rules = Depends(rules_query),
    rt: Runtime = Depends(runtime),
) -> dict[str, Any]:
    """Items like this one under the request's rules: the model's item similarity
    (`similarity: "item"`), or for a model without one, such as the GLM, what it recommends to
    a visitor whose only event is this item (`similarity: "session"`); 404 for an unknown item
    or a model that can say neither (popularity)."""
    return rt.recommending.similar(rt.state, item_id, k, model, rules)


class SessionBody(RulesBody):
    items: list[str] = Field(description="the session's item ids, oldest first")
    user_id: str | None = Field(None, min_length=1, max_length=256)
    k: int = Field(10, ge=1, le=1000)
    model: str | None = None
    explain: bool = False


class RerankBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=256)
    items: list[str] = Field(description="the item ids to order")
    boost: list[str] = Field(default_factory=list)
    model: str | None = None
    explain: bool = False


@router.post("/sessions/recommendations", responses=ERRORS)
async def session_recommendations(body: SessionBody, rt: Runtime = Depends(runtime)) -> Any:
    """Recommendations from a session's items: for an anonymous visitor, or blended into the
    history of a user who has little (`session.reason` says which)."""
    out = await rt.live(
        rt.recommending.session,
        rt.state,
        body.items,
        body.user_id,
        body.k,
        body.model,
        body.rules(),
        body.explain,
    )
    return JSONResponse(out)


@router.post("/rerank", responses=ERRORS)
async def rerank(body: RerankBody, rt: Runtime = Depends(runtime)) -> Any:
    """Exactly the items given, ordered for the user, with scores (and reasons with
    `explain`); unknown items are kept, last, marked `known: false`."""
    rules = Rules.parse(boost=body.boost)
    out = await rt.live(
        rt.recommending.rerank, rt.state, body.user_id, body.items, body.model, rules, body.explain
    )
    return JSONResponse(out)
