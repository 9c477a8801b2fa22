"""GET /users/{id}/recommendations, GET /items/{id}/similar."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from feedrank.api.app import Runtime
from feedrank.api.auth import require
from feedrank.api.recommending import RecRequest
from feedrank.api.routers import runtime
from feedrank.api.schemas import ERRORS, RecommendationsOut

router = APIRouter(tags=["recommendations"], dependencies=[Depends(require("read"))])


@router.get(
    "/users/{user_id}/recommendations",
    response_model=RecommendationsOut,
    response_model_exclude_none=True,
    responses=ERRORS,
)
async def recommendations(
    user_id: str = Path(min_length=1, max_length=256),
    k: int = Query(10, ge=1, le=1000),
    exclude_seen: bool = Query(True, description="leave out items the user engaged with"),
    explain: bool = Query(False, description="each item's largest feature contributions"),
    model: str | None = Query(None, description="a registry model name (default: the served one)"),
    rt: Runtime = Depends(runtime),
) -> Any:
    """Top-k items with scores. Users without history get the cold-start fallback, marked by
    `source` and `cold_start`. Fresh events count at once."""
    state = rt.state  # one consistent model + generation for the whole request
    req = RecRequest(user_id, k, exclude_seen, explain, model or None)
    service = rt.recommending
    # The fast path (about a millisecond) runs on the event loop; live scoring (tens of ms)
    # goes to a worker thread so it never holds up other requests.
    out = service.from_generation(state, rt.fresh, req)
    if out is None:
        out = await run_in_threadpool(service.live, state, rt.fresh, req)
    rt.metrics.recommendations.labels(out.served_from).inc()
    return JSONResponse(out.__dict__)  # already the documented shape: skip re-validating it


@router.get("/items/{item_id}/similar", responses=ERRORS)
def similar(
    item_id: str = Path(min_length=1, max_length=256),
    k: int = Query(10, ge=1, le=1000),
    rt: Runtime = Depends(runtime),
) -> dict[str, Any]:
    """Items like this one, from the serving model's similar_items (404, saying so, if it has none)."""
    state = rt.state
    return {
        "item_id": item_id,
        "model": state.label,
        "similar": rt.recommending.similar(state, item_id, k),
    }
