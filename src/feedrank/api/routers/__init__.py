"""Thin routers: parse, check the scope, call the service layer, shape the response. What they
need comes in as dependencies: the runtime (services, state) and the settings."""

from __future__ import annotations

from fastapi import Depends, Request

from feedrank.api.app import Runtime
from feedrank.api.settings import ApiSettings


async def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def api_settings(rt: Runtime = Depends(runtime)) -> ApiSettings:
    return rt.settings
