"""Everything a request needs, reachable as a dependency (request.app.state.runtime): the
settings, the store, the registry, the metrics, the current serving state, the writer thread.
Routers import this module, and the app imports the routers: no import circle."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from fastapi import Depends, Request

from feedrank.api.ingesting import Ingesting
from feedrank.api.metrics import Metrics
from feedrank.api.recommending import Recommending
from feedrank.api.settings import ApiSettings
from feedrank.api.state import ServingState
from feedrank.exceptions import StoreError
from feedrank.pipeline.registry import Registry
from feedrank.store import Store

R = TypeVar("R")


@dataclass
class Runtime:
    settings: ApiSettings
    store: Store
    registry: Registry
    metrics: Metrics
    state: ServingState
    refresh_requested: asyncio.Event = field(default_factory=asyncio.Event)
    writer: ThreadPoolExecutor | None = None
    rng: np.random.Generator = field(default_factory=np.random.default_rng)  # exploration draws

    @property
    def recommending(self) -> Recommending:
        return Recommending(self.store, self.registry)

    @property
    def ingesting(self) -> Ingesting:
        return Ingesting(self.store, self.settings, self.state.settings)

    async def write(self, fn: Callable[..., R], *args: Any) -> R:
        if self.writer is None:
            raise StoreError("the server is not started: no writer thread")
        result = await asyncio.wrap_future(self.writer.submit(fn, *args))
        self.refresh_requested.set()  # follow our own writes without waiting for the period
        return result

    def swap(self, new: ServingState) -> None:
        self.state = new  # one assignment: readers see the old state or the new, whole
        self.metrics.generation.set(new.generation_id or 0)


async def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def api_settings(rt: Runtime = Depends(runtime)) -> ApiSettings:
    return rt.settings
