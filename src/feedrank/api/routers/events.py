"""POST /events, POST /impressions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from feedrank.api.auth import require
from feedrank.api.ingesting import event_items, parse_json
from feedrank.api.runtime import Runtime, api_settings, runtime
from feedrank.api.schemas import ERRORS, EVENTS_BODY, IMPRESSIONS_BODY, IngestOut
from feedrank.api.settings import ApiSettings

router = APIRouter(tags=["ingest"], dependencies=[Depends(require("ingest"))])
STRICT = Query(False, description="store nothing if any item is bad")
RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    200: {"model": IngestOut, "description": "every item stored (or already stored)"},
    207: {"model": IngestOut, "description": "good items stored; per-item errors for the rest"},
    422: {"model": IngestOut, "description": "no item stored; per-item errors"},
}


async def _ingest(rt: Runtime, items: list[Any], strict: bool) -> JSONResponse:
    ing = rt.ingesting
    result, good = await run_in_threadpool(ing.events, items, strict)
    result = await rt.write(ing.write_events, result, good)
    m = rt.metrics
    m.events.labels("stored").inc(result.stored)
    m.events.labels("duplicate").inc(result.duplicates)
    m.events.labels("rejected").inc(result.rejected)
    accepted = result.stored + result.duplicates
    code = 200 if not result.errors else (207 if accepted else 422)
    return JSONResponse(result.as_dict(), status_code=code)


@router.post("/events", responses=RESPONSES, openapi_extra=EVENTS_BODY)
async def post_events(
    request: Request,
    strict: bool = STRICT,
    rt: Runtime = Depends(runtime),
    settings: ApiSettings = Depends(api_settings),
) -> JSONResponse:
    """One event, an array of events, or {"events": [...]}. Idempotent by event_id. Bad items
    get per-item errors (index, field, reason); the good ones are stored unless strict."""
    items = event_items(parse_json(await request.body()), settings.max_batch)
    return await _ingest(rt, items, strict)


@router.post("/impressions", responses=RESPONSES, openapi_extra=IMPRESSIONS_BODY)
async def post_impressions(
    request: Request, strict: bool = STRICT, rt: Runtime = Depends(runtime)
) -> JSONResponse:
    """What was shown to whom, at which positions (the denominator of click rates). Items are
    ids (positions 1, 2, ... in order) or {item_id, position, propensity}; a request_id makes it
    idempotent. A propensity (the logging policy's P(this item at this position), 0 < p <= 1)
    is stored in the event's context for off-policy estimates."""
    events = rt.ingesting.impressions(parse_json(await request.body()))
    return await _ingest(rt, events, strict)
