"""The FastAPI app factory. The lifespan opens the store, loads the model and the active
generation once, and runs a watcher that swaps in a new ServingState (one assignment) when a
newer model or generation appears; requests pick the state up once and never fail on a swap.
Writes go through one writer thread: SQLite has one writer anyway, and that thread's connection
commits with synchronous=FULL so a 2xx means the event is on disk."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from feedrank import __version__
from feedrank.api.auth import KeyRing
from feedrank.api.ingesting import BadRequest, FieldError, Ingesting
from feedrank.api.metrics import EdgeMiddleware, Metrics
from feedrank.api.recommending import Recommending, UnsupportedError
from feedrank.api.settings import ApiSettings
from feedrank.api.state import Freshness, ServingState, load_state
from feedrank.exceptions import (
    ConfigError,
    FeedrankError,
    MissingExtraError,
    NotFittedError,
    NotFoundError,
    StoreError,
    ValidationError,
)
from feedrank.pipeline.registry import Registry, models_dir
from feedrank.store import Store, open_store

log = logging.getLogger("feedrank.api")
R = TypeVar("R")


def _durable_writer(store: Store) -> None:
    """Runs once in the writer thread: its SQLite connection commits with a full fsync (the
    store's default, synchronous=NORMAL, survives a killed process but not a power cut)."""
    store.durable_writes()


@dataclass
class Runtime:
    """Everything a request needs, reachable as a dependency (request.app.state.runtime)."""

    settings: ApiSettings
    store: Store
    registry: Registry
    metrics: Metrics
    state: ServingState
    fresh: Freshness = field(default_factory=Freshness)
    reload_requested: asyncio.Event = field(default_factory=asyncio.Event)
    writer: ThreadPoolExecutor | None = None
    rng: np.random.Generator = field(default_factory=np.random.default_rng)  # exploration draws

    @property
    def recommending(self) -> Recommending:
        return Recommending(self.store, self.registry, self.settings.data)

    @property
    def ingesting(self) -> Ingesting:
        return Ingesting(self.store, self.settings)

    async def write(self, fn: Callable[..., R], *args: Any) -> R:
        if self.writer is None:
            raise StoreError("the server is not started: no writer thread")
        return await asyncio.wrap_future(self.writer.submit(fn, *args))

    def swap(self, new: ServingState) -> None:
        self.state = new  # one assignment: readers see the old state or the new, whole
        self.fresh.settled(new)
        self.metrics.generation.set(new.generation_id or 0)


def _current(rt: Runtime) -> tuple[str | None, int | None]:
    version = None
    with contextlib.suppress(NotFoundError):
        rec = rt.registry.resolve(rt.settings.model)
        version = f"{rec.name}/{rec.version}"
    gen = rt.store.active_generation()
    return version, gen.id if gen else None


async def _watch(rt: Runtime) -> None:
    """Swap in a new state when the champion/model or the active generation changes, or when a
    write asked for a reload (a new item, an erased user)."""
    while True:
        # At most one check per period: a burst of writes asking for a reload costs one reload.
        await asyncio.sleep(rt.settings.reload_seconds)
        asked = rt.reload_requested.is_set()
        rt.reload_requested.clear()
        try:
            version, gen = await asyncio.to_thread(_current, rt)
            st = rt.state
            current = f"{st.record.name}/{st.record.version}" if st.record else None
            if asked or version != current or gen != st.generation_id:
                new = await asyncio.to_thread(
                    load_state, rt.store, rt.registry, rt.settings.model, rt.settings.data
                )
                rt.swap(new)
                rt.metrics.reloads.labels("ok").inc()
        except FeedrankError as exc:  # keep serving the old state; say why
            rt.metrics.reloads.labels("failed").inc()
            log.warning("reload failed, still serving %s: %s", rt.state.label, exc)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings.from_env()
    keyring = KeyRing.load(settings.keys_spec, settings.keys_file, settings.insecure)
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = open_store(settings.store_url)
        registry = Registry(models_dir(settings.store_url, settings.models_dir))
        state = await asyncio.to_thread(load_state, store, registry, settings.model, settings.data)
        rt = Runtime(settings, store, registry, metrics, state)
        rt.writer = ThreadPoolExecutor(
            1, "feedrank-writer", initializer=_durable_writer, initargs=(store,)
        )
        metrics.generation.set(state.generation_id or 0)
        app.state.runtime = rt
        watcher = asyncio.create_task(_watch(rt))
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            rt.writer.shutdown(wait=True)
            store.close()

    app = FastAPI(
        title="feedrank",
        version=__version__,
        description="Ingest events, serve recommendations with reasons, erase users.",
        lifespan=lifespan,
    )
    app.state.keyring = keyring
    app.state.metrics = metrics
    app.add_middleware(EdgeMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes)
    _error_handlers(app)

    from feedrank.api.routers import events, ops, recommendations, users_items

    for r in (events.router, users_items.router, recommendations.router, ops.router):
        app.include_router(r)
    return app


def _error_handlers(app: FastAPI) -> None:
    """The exception hierarchy becomes HTTP here, once."""
    codes: list[tuple[type[Exception], int]] = [
        (BadRequest, 400),
        (FieldError, 422),
        (ValidationError, 422),
        (NotFoundError, 404),
        (UnsupportedError, 404),  # not 501: asking a model for what it lacks is not a server fault
        (NotFittedError, 503),
        (StoreError, 503),
        (MissingExtraError, 501),
        (ConfigError, 400),
        (FeedrankError, 400),
    ]
    for exc_type, code in codes:

        def handler(request: Request, exc: Exception, code: int = code) -> JSONResponse:
            body: dict[str, Any] = {"detail": str(exc)}
            if isinstance(exc, FieldError):
                body["field"] = exc.field
            return JSONResponse(body, status_code=code)

        app.add_exception_handler(exc_type, handler)


def create_app_from_env() -> FastAPI:
    """For `uvicorn --factory feedrank.api.app:create_app_from_env`."""
    return create_app(ApiSettings.from_env())
