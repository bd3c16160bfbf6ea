"""Prometheus metrics of one app (prometheus-client, its own registry: no process-global state).

Request counts and latencies by route template, postings recorded and declined, and the
projection lag (read at scrape time). `/metrics` renders the registry in the text format. The
middleware that counts requests also stamps their `X-Request-ID`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from api.request_id import request_id_of, with_request_id

#: Latency buckets in seconds: fine below 20 ms, where GET account's p99 target is.
LATENCY_BUCKETS_SECONDS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
METRICS_CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
#: The ASGI scope key marking a HEAD request served as GET (api.app.LedgerApp).
HEAD_REQUEST: Final = "ledger_head_request"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "ledger_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "ledger_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ("method", "route"),
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=self.registry,
        )
        self.postings = Counter(
            "ledger_postings_recorded", "Postings recorded.", registry=self.registry
        )
        self.declines = Counter(
            "ledger_postings_declined", "Postings declined, by reason.", ("reason",),
            registry=self.registry,
        )  # fmt: skip
        #: Label children by (method, route, status): `labels()` validates and locks on every
        #: call, a cost worth saving on every request. Bounded: routes and statuses are finite.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.writer_batches = Gauge(
            "ledger_writer_batches",
            "Batches the ledger's writer appended (one database transaction each) since start.",
            registry=self.registry,
        )
        self.writer_commands = Gauge(
            "ledger_writer_commands",
            "Commands the ledger's writer decided since start (over batches: the group size).",
            registry=self.registry,
        )
        self.writer_queued_postings = Gauge(
            "ledger_writer_queued_postings",
            "Postings waiting in the writer's queue (a batch counts as its postings); past "
            "ledger_core.limits.MAX_QUEUED_POSTINGS commands are refused with 503 unavailable.",
            registry=self.registry,
        )
        self.projection_lag = Gauge(
            "ledger_projection_lag_events",
            "Events in the log the projections have not applied yet (-1: projections not run).",
            registry=self.registry,
        )
        self.projections_failed = Gauge(
            "ledger_projections_failed",
            "Projections stopped on an event they could not apply (alert on > 0; /ready and "
            "`ledger status` say which event and why).",
            registry=self.registry,
        )

    def watch_projection_lag(self, lag: Callable[[], int | None]) -> None:
        self.projection_lag.set_function(lambda: float(_or_minus_one(lag())))

    def watch_projection_failures(self, failed: Callable[[], int]) -> None:
        self.projections_failed.set_function(lambda: float(failed()))

    def watch_writer(
        self,
        batches: Callable[[], int],
        commands: Callable[[], int],
        queued_postings: Callable[[], int],
    ) -> None:
        """The writer's group commits (commands per batch is commands / batches) and its
        queue."""
        self.writer_batches.set_function(lambda: float(batches()))
        self.writer_commands.set_function(lambda: float(commands()))
        self.writer_queued_postings.set_function(lambda: float(queued_postings()))

    def _children_for(self, scope: Scope, status: int) -> tuple[Any, Any]:
        route = scope.get("path_template") or "unmatched"
        method = "HEAD" if HEAD_REQUEST in scope else str(scope.get("method", ""))
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            self._children[key] = children
        return children

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Count and time every HTTP request by its route template (bounded label values), and
        give every answer its `X-Request-ID` (api.request_id). One middleware for both: each
        layer costs a coroutine and a wrapped `send` per request, on the hottest path."""

        async def observed(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            request_id = request_id_of(scope).encode("latin-1")
            status = 500

            async def send_observed(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message["headers"] = with_request_id(message.get("headers", ()), request_id)
                await send(message)

            try:
                await app(scope, receive, send_observed)
            finally:
                count, latency = self._children_for(scope, status)
                count.inc()
                latency.observe(time.perf_counter() - started)

        return observed


def _or_minus_one(value: int | None) -> int:
    return -1 if value is None else value
