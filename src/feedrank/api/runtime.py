"""Everything a request needs, reachable as a dependency (request.app.state.runtime): the
settings, the store, the registry, the metrics, the current serving state, the writer thread.
Routers import this module, and the app imports the routers: no import circle."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import numpy as np
from fastapi import Depends, Request

from feedrank.api.ingesting import Ingesting
from feedrank.api.metrics import Metrics
from feedrank.api.recommending import Recommending
from feedrank.api.settings import ApiSettings
from feedrank.api.state import ServingState
from feedrank.exceptions import FeedrankError, StoreError
from feedrank.pipeline.registry import Registry
from feedrank.store import Store

R = TypeVar("R")
LIVE_THREADS = 2  # worker threads scoring live at once (a request beyond waits its turn)


class TooBusy(FeedrankError):
    """An expensive request over its concurrency limit (answered 429 with Retry-After)."""


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
    fault: str | None = None  # why the last write failed, until one succeeds (GET /health)
    expensive_running: int = 0
    # Live scoring is Python and NumPy under one GIL: more threads at it only switch between
    # each other (measured: 40 concurrent re-ranks cost twice the CPU each of one at a time).
    live_threads: anyio.CapacityLimiter = field(
        default_factory=lambda: anyio.CapacityLimiter(LIVE_THREADS)
    )

    @property
    def recommending(self) -> Recommending:
        return Recommending(self.store, self.registry)

    @property
    def ingesting(self) -> Ingesting:
        return Ingesting(self.store, self.settings, self.state.settings)

    async def write(self, fn: Callable[..., R], *args: Any) -> R:
        if self.writer is None:
            raise StoreError("the server is not started: no writer thread")
        try:
            result = await asyncio.wrap_future(self.writer.submit(fn, *args))
        except StoreError as exc:
            self.fault = str(exc)
            raise
        self.fault = None  # the store takes writes again: the writer reconnected by itself
        self.refresh_requested.set()  # follow our own writes without waiting for the period
        return result

    async def live(self, fn: Callable[..., R], *args: Any) -> R:
        """fn(*args) on a worker thread, at most LIVE_THREADS at a time (live scoring)."""
        return await anyio.to_thread.run_sync(
            functools.partial(fn, *args), limiter=self.live_threads
        )

    def swap(self, new: ServingState) -> None:
        self.state = new  # one assignment: readers see the old state or the new, whole
        self.metrics.generation.set(new.generation_id or 0)


async def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def api_settings(rt: Runtime = Depends(runtime)) -> ApiSettings:
    return rt.settings


async def expensive(request: Request, rt: Runtime = Depends(runtime)) -> AsyncIterator[None]:
    """A slot for a costly request (an explanation, similar items): at most
    `max_expensive` at a time, else 429, so that plain recommendations keep their latency."""
    explain = request.query_params.get("explain", "").lower() in ("1", "true", "yes", "on")
    if request.url.path.endswith("/recommendations") and not explain:
        yield  # a plain recommendation: never limited
        return
    limit = rt.settings.max_expensive
    if rt.expensive_running >= limit:  # no await between the check and the count
        raise TooBusy(
            f"at most {limit} expensive requests (explain, similar) run at a time; retry later"
        )
    rt.expensive_running += 1
    try:
        yield
    finally:
        rt.expensive_running -= 1
