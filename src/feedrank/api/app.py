"""The FastAPI app factory. The lifespan opens the store, loads the model, the catalogue and the
active generation once, and runs a refresher that follows the store: every `reload_seconds` (and
right after this server's own writes) it applies what the store says is new — events, items,
erasures, settings, whoever wrote them — and a new model or generation, by swapping in a new
ServingState (one assignment); requests pick the state up once and never fail on a swap.
Writes go through one writer thread: SQLite has one writer anyway, and that thread's connection
commits with synchronous=FULL so a 2xx means the event is on disk."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from feedrank import __version__
from feedrank.api.auth import KeyRing
from feedrank.api.ingesting import BadRequest, FieldError
from feedrank.api.metrics import EdgeMiddleware, Metrics
from feedrank.api.runtime import Runtime, TooBusy
from feedrank.api.settings import ApiSettings
from feedrank.api.state import load_state, refresh
from feedrank.exceptions import (
    ConfigError,
    FeedrankError,
    MissingExtraError,
    NotFittedError,
    NotFoundError,
    ParameterError,
    StoreError,
    ValidationError,
)
from feedrank.models.base import Unsupported
from feedrank.pipeline.registry import Registry, models_dir
from feedrank.store import Store, open_store

log = logging.getLogger("feedrank.api")


def _durable_writer(store: Store) -> None:
    """Runs once in the writer thread: its SQLite connection commits with a full fsync (the
    store's default, synchronous=NORMAL, survives a killed process but not a power cut)."""
    store.durable_writes()


async def _follow(rt: Runtime) -> None:
    """Apply the store's changes and a new model or generation, at most once per period (a burst
    of writes costs one refresh)."""
    loop = asyncio.get_running_loop()
    models_checked = loop.time()
    while True:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
        # arrives as the event is set, and the lifespan's shutdown then waits forever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(rt.settings.reload_seconds):
                await rt.refresh_requested.wait()
        rt.refresh_requested.clear()
        check_models = loop.time() - models_checked >= rt.settings.models_seconds
        if check_models:
            models_checked = loop.time()
        try:
            new = await asyncio.to_thread(
                refresh, rt.state, rt.store, rt.registry, rt.settings.model, check_models
            )
            if new is not None:
                rt.swap(new)
                rt.metrics.reloads.labels("ok").inc()
        except Exception:  # whatever failed, keep following and serving the old state
            rt.metrics.reloads.labels("failed").inc()
            log.exception("refresh failed, still serving %s", rt.state.label)
        await asyncio.sleep(min(0.1, rt.settings.reload_seconds))  # debounce


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings.from_env()
    keyring = KeyRing.load(settings.keys_spec, settings.keys_file, settings.insecure)
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = open_store(settings.store_url)
        store.bounded_cache()  # many threads read by index: memory must not follow the store
        registry = Registry(models_dir(settings.store_url, settings.models_dir))
        state = await asyncio.to_thread(
            load_state, store, registry, settings.model, settings.warm_users
        )
        rt = Runtime(settings, store, registry, metrics, state)
        rt.writer = ThreadPoolExecutor(
            1, "feedrank-writer", initializer=_durable_writer, initargs=(store,)
        )
        metrics.generation.set(state.generation_id or 0)
        app.state.runtime = rt
        watcher = asyncio.create_task(_follow(rt))
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if hasattr(app.state, "dashboard"):  # its background analyses stop with the server
                app.state.dashboard.jobs.shutdown()
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
    from feedrank.api.dashboard import mount

    mount(app)  # /dashboard: read-only pages behind the admin key (docs/dashboard.md)
    return app


def _error_handlers(app: FastAPI) -> None:
    """The exception hierarchy becomes HTTP here, once. A store fault is 503 and a request
    over a cost limit 429, both with Retry-After; no answer names a file path."""
    codes: list[tuple[type[Exception], int]] = [
        (BadRequest, 400),
        (FieldError, 422),
        (ParameterError, 422),
        (ValidationError, 422),
        (NotFoundError, 404),
        (Unsupported, 404),  # not 501: asking a model for what it lacks is not a server fault
        (TooBusy, 429),
        (NotFittedError, 503),
        (StoreError, 503),
        (MissingExtraError, 501),
        (ConfigError, 400),
        (FeedrankError, 400),
    ]
    for exc_type, code in codes:

        def handler(request: Request, exc: Exception, code: int = code) -> JSONResponse:
            body: dict[str, Any] = {"detail": _without_paths(str(exc), request)}
            if isinstance(exc, FieldError):
                body["field"] = exc.field
            if isinstance(exc, ParameterError):
                body["field"] = exc.param
            retry = {"Retry-After": "1"} if code in (429, 503) else None
            return JSONResponse(body, status_code=code, headers=retry)

        app.add_exception_handler(exc_type, handler)


def _without_paths(text: str, request: Request) -> str:
    """The models directory and the store's file are the server's business, not a client's."""
    rt: Runtime | None = getattr(request.app.state, "runtime", None)
    if rt is None:
        return text
    places = {"<models>": rt.registry.root, "<store>": Path(getattr(rt.store, "path", "") or ".")}
    for name, path in places.items():
        for form in {str(path.resolve()), str(path)} - {"", "."}:
            text = text.replace(form, name)
    return text


def create_app_from_env() -> FastAPI:
    """For `uvicorn --factory feedrank.api.app:create_app_from_env`."""
    return create_app(ApiSettings.from_env())
