"""GET /models, GET /health, GET /metrics."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from feedrank.api.auth import require
from feedrank.api.ingesting import parse_json
from feedrank.api.runtime import Runtime, runtime
from feedrank.api.schemas import ERRORS
from feedrank.settings import Settings

router = APIRouter(tags=["operations"])


@router.get("/models", dependencies=[Depends(require("read"))], responses=ERRORS)
def models(rt: Runtime = Depends(runtime)) -> dict[str, Any]:
    """Trained models in the registry, the one serving, and the active generation."""
    return rt.recommending.models(rt.state)


@router.get("/health")
async def health(rt: Runtime = Depends(runtime)) -> JSONResponse:
    """Liveness and readiness (no key needed): 200 when the store answers reads and takes
    writes, else 503 naming the fault. After a failed write the writer tries one write here
    (and every write tries again): the server recovers by itself when the fault clears."""
    state = rt.state
    try:
        await run_in_threadpool(rt.store.active_generation)
        if rt.fault is not None:
            await rt.write(rt.store.check_writable)
    except Exception as exc:  # whatever the backend raises, the store is not answering
        fault = "writes" if rt.fault is not None else "reads"
        return JSONResponse(
            {"status": "unavailable", "fault": fault, "detail": str(exc)},
            status_code=503,
            headers={"Retry-After": "1"},
        )
    return JSONResponse({"status": "ok", "model": state.label, "generation": state.generation_id})


@router.get("/metrics", dependencies=[Depends(require("read"))], responses=ERRORS)
def metrics(rt: Runtime = Depends(runtime)) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/settings", dependencies=[Depends(require("admin"))], responses=ERRORS)
def get_settings(rt: Runtime = Depends(runtime)) -> dict[str, Any]:
    """The settings stored with the data (the defaults when none were stored), the stored
    versions, and the version this server applies (`in_effect`; every server on the store
    follows a new version within a refresh)."""
    versions = rt.store.settings_versions()
    stored = rt.store.stored_settings(versions[-1][0]) if versions else None
    settings = Settings.from_dict(stored, "the store's settings") if stored else Settings()
    return {
        "settings": settings.to_dict(),
        "versions": [{"version": v, "stored_at": t.isoformat()} for v, t in versions],
        "in_effect": rt.state.settings_version,
    }


@router.put("/settings", dependencies=[Depends(require("admin"))], responses=ERRORS)
async def put_settings(request: Request, rt: Runtime = Depends(runtime)) -> dict[str, Any]:
    """Store new settings (a JSON object of the settings' fields; a new version). Models keep
    the settings they were trained with until they are retrained."""
    body = parse_json(await request.body())
    if not isinstance(body, dict):
        from feedrank.api.ingesting import BadRequest

        raise BadRequest("the body must be an object of settings")
    new = Settings.from_dict(body, "the request body")
    version = await rt.write(rt.store.put_settings, new.to_dict())
    rt.swap(replace(rt.state, settings=new, settings_version=version))
    return {"version": version, "settings": new.to_dict()}
