"""Prometheus metrics, in a registry owned by the app (no module-level state), and the one
ASGI middleware that times requests and caps body sizes before any handler reads them."""

from __future__ import annotations

import json
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "feedrank_http_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "feedrank_http_request_seconds",
            "Request latency",
            ["route"],
            buckets=BUCKETS,
            registry=r,
        )
        self.events = Counter(
            "feedrank_events", "Events received, by outcome", ["outcome"], registry=r
        )
        self.recommendations = Counter(
            "feedrank_recommendation_requests",
            "Recommendation requests, by where they were served from",
            ["served_from"],
            registry=r,
        )
        self.reloads = Counter(
            "feedrank_serving_reloads",
            "Serving-state refreshes (store changes, model or generation), by outcome",
            ["outcome"],
            registry=r,
        )
        self.generation = Gauge("feedrank_active_generation", "Active generation id", registry=r)


class _TooLarge(Exception):
    pass


class EdgeMiddleware:
    """Times every request by its route template (never by raw path: ids would explode the
    label set) and answers 413 for bodies over the limit, declared or streamed."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app, self.metrics, self.max = app, metrics, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 500, "started": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
            await send(message)

        seen = 0

        async def receive_wrapper() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max:
                    raise _TooLarge
            return message

        declared = dict(scope.get("headers") or []).get(b"content-length")
        try:
            if declared is not None and declared.isdigit() and int(declared) > self.max:
                raise _TooLarge
            await self.app(scope, receive_wrapper, send_wrapper)
        except _TooLarge:
            if status["started"]:
                raise
            await _too_large(send_wrapper, self.max)
        route: Any = scope.get("route")
        name = getattr(route, "path", "unmatched")
        self.metrics.requests.labels(scope["method"], name, str(status["code"])).inc()
        self.metrics.latency.labels(name).observe(time.perf_counter() - t0)


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps(
        {"detail": f"the request body must be at most {limit} bytes; nothing was stored"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
