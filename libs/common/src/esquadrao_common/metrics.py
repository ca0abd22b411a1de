"""Prometheus metrics: the ``/metrics`` endpoint and HTTP RED metrics of every service.

Metrics live in prometheus_client's default registry. Every metric the platform defines
is named ``esquadrao_*``; each metric object is created once, when its module is first
imported, so any number of apps in one process (tests) share them without duplicate
registration errors.

HTTP metrics are labelled with the route *template* (``/contacts/{contact_id}``), never
the raw path, so their cardinality is bounded by the number of routes: a request no route
matched is labelled :data:`UNMATCHED_ROUTE`, and an unusual method ``OTHER``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, cast

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Route label of requests that matched no route (404s, redirects to a trailing slash).
UNMATCHED_ROUTE = "unmatched"

_KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)

HTTP_REQUESTS = Counter(
    "esquadrao_http_requests",
    "HTTP requests handled, by method, route template and response status.",
    ["method", "route", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "esquadrao_http_request_duration_seconds",
    "Time from receiving an HTTP request to sending the end of its response.",
    ["method", "route"],
)


def route_template(scope: Scope) -> str:
    """The template of the route that handled ``scope``, or :data:`UNMATCHED_ROUTE`.

    Read from the scope once the app has handled the request. FastAPI records the route
    it selected there; for a route of an included router, the full template (router
    prefixes included) is on the route context FastAPI stores under ``scope["fastapi"]``,
    since ``scope["route"]`` is then the route as declared in its router. A mounted
    sub-application's routes are prefixed with the mount path.
    """
    fastapi_state = scope.get("fastapi")
    route: Any = None
    if isinstance(fastapi_state, Mapping):
        context = fastapi_state.get("effective_route_context")
        route = getattr(context, "starlette_route", None) or context
    if getattr(route, "path_format", None) is None:
        route = scope.get("route")
    if getattr(route, "path_format", None) is None:
        route = _route_of_endpoint(scope)
    path_format = getattr(route, "path_format", None)
    if not isinstance(path_format, str):
        return UNMATCHED_ROUTE
    return _mount_prefix(scope) + path_format


def _route_of_endpoint(scope: Scope) -> Any:
    """The app's route whose endpoint handled ``scope`` (routes FastAPI adds itself, such as
    ``/openapi.json`` and ``/docs``, record only their endpoint)."""
    endpoint = scope.get("endpoint")
    if endpoint is None:
        return None
    for route in getattr(scope.get("app"), "routes", ()):
        if getattr(route, "endpoint", None) is endpoint:
            return route
    return None


def _mount_prefix(scope: Scope) -> str:
    """The path of the mounts traversed to reach the handling app ("" when none).

    Starlette sets ``app_root_path`` only when routing through a mount; ``root_path``
    alone may be a reverse proxy's prefix, which is not part of the route.
    """
    if "app_root_path" not in scope:
        return ""
    root_path: str = scope.get("root_path", "")
    app_root_path: str = scope["app_root_path"]
    return root_path.removeprefix(app_root_path).rstrip("/")


class HttpMetricsMiddleware:
    """ASGI middleware that counts and times every HTTP request (RED metrics).

    The status is the one the app sent; a request whose handler raised before any
    response started counts as 500 (the status the server error handler answers with).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in _KNOWN_METHODS else "OTHER"
        status = 500
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
            HTTP_REQUEST_DURATION.labels(method=method, route=route).observe(elapsed)


def install_http_metrics(app: FastAPI) -> None:
    """Measure every HTTP request of ``app``; calling it again on the same app is a no-op.

    Call before the app starts (middleware cannot be added to a running app).
    """
    installed = (cast(object, middleware.cls) for middleware in app.user_middleware)
    if HttpMetricsMiddleware in installed:
        return
    app.add_middleware(HttpMetricsMiddleware)


def metrics_router() -> APIRouter:
    """A router serving ``GET /metrics``: the default registry in the text exposition format."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return router
