"""Prometheus metrics, in a registry owned by the app (no module-level state), and the one
ASGI middleware that times requests and caps body sizes before any handler reads them."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("feedrank.api")
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")
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
    label set), answers 413 for bodies over the limit, declared or streamed, gives every
    request an id (the client's X-Request-ID when it is a short token, else a new one; echoed
    in the answer), and turns any exception that escaped the handlers into a counted, logged
    500 naming that id."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app, self.metrics, self.max = app, metrics, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 500, "started": False}
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"")
        request_id = (given.decode() if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex).encode()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id)]
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
            detail = f"the request body must be at most {self.max} bytes; nothing was stored"
            await _answer(send_wrapper, 413, {"detail": detail})
        except Exception:
            status["code"] = 500
            log.exception(
                "%s %s failed (request id %s)", scope["method"], _route(scope), request_id.decode()
            )
            if status["started"]:
                raise  # too late for an answer: the server closes the connection
            detail = "internal error; the server log has it under this request id"
            await _answer(send_wrapper, 500, {"detail": detail, "request_id": request_id.decode()})
        finally:
            name = _route(scope)
            self.metrics.requests.labels(scope["method"], name, str(status["code"])).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - t0)


def _route(scope: Scope) -> str:
    route: Any = scope.get("route")
    return str(getattr(route, "path", "unmatched"))


async def _answer(send: Send, status: int, content: dict[str, Any]) -> None:
    body = json.dumps(content).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
