"""GET /models, GET /health, GET /metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from feedrank.api.app import Runtime
from feedrank.api.auth import require
from feedrank.api.routers import runtime
from feedrank.api.schemas import ERRORS

router = APIRouter(tags=["operations"])


@router.get("/models", dependencies=[Depends(require("read"))], responses=ERRORS)
def models(rt: Runtime = Depends(runtime)) -> dict[str, Any]:
    """Trained models in the registry, the one serving, and the active generation."""
    return rt.recommending.models(rt.state)


@router.get("/health")
async def health(rt: Runtime = Depends(runtime)) -> JSONResponse:
    """Liveness and readiness (no key needed): 200 when the store answers, else 503."""
    state = rt.state
    try:
        await run_in_threadpool(rt.store.active_generation)
    except Exception as exc:  # whatever the backend raises, the store is not answering
        return JSONResponse({"status": "unavailable", "detail": str(exc)}, status_code=503)
    return JSONResponse({"status": "ok", "model": state.label, "generation": state.generation_id})


@router.get("/metrics", dependencies=[Depends(require("read"))], responses=ERRORS)
def metrics(rt: Runtime = Depends(runtime)) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)
