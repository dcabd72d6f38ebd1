"""Prometheus metrics of the web process, and the middleware that records each request.

Each app has its own registry (tests build many apps in one process). Counters count what
this process saw; the queue gauges are read from Postgres and Redis when `/metrics` is
scraped, so every web process reports the same queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from service.core import logs, oversight
from service.web.clients import client_of
from service.web.route import READS as READ_METHODS
from service.web.state import ARQ, READS, REQUEST_ID, ROUTES, SETTINGS, WAITERS

log = logging.getLogger("mailprov.web")

# probes and scrapes come every few seconds, and a fleet of clients polls all day: their
# lines are DEBUG unless they fail (/metrics counts and times every request either way).
# A write is always a line.
QUIET_ROUTES = {"healthz", "readyz", "metrics"}
# what a client that went away before its answer gets, in nginx's words
CLIENT_CLOSED = 499


class WebMetrics:
    """The web process's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("mailprov_http_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("mailprov_http_request_duration_seconds",
                                 "Time to answer an HTTP request", ["route"], registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.accepted = Counter("mailprov_tasks_accepted", "Tasks accepted, by type", ["type"],
                                registry=r)
        self.rate_limited = Counter("mailprov_rate_limited",
                                    "Requests refused by a rate limit (429)", ["route"],
                                    registry=r)
        self.auth_failures = Counter("mailprov_auth_failures",
                                     "Requests refused for a missing, malformed, unknown, "
                                     "revoked or expired API key (401)", registry=r)
        self.auth_throttled = Counter("mailprov_auth_throttled",
                                      "Requests refused before any key lookup, their "
                                      "address having failed too many key checks (429)",
                                      registry=r)
        self.queue_depth = Gauge("mailprov_queue_depth",
                                 "Jobs in the arq queue, deferred ones included", registry=r)
        self.queue_deferred = Gauge("mailprov_queue_deferred",
                                    "Jobs in the arq queue due later (retries in their "
                                    "backoff)", registry=r)
        self.tasks = Gauge("mailprov_tasks", "Tasks now queued, processing or failed "
                           "(completed ones are not counted: see the finished gauge)",
                           ["status"], registry=r)
        self.finished = Gauge("mailprov_tasks_finished_last_hour",
                              "Tasks finished in the last hour", ["status"], registry=r)
        self.oldest_queued = Gauge("mailprov_oldest_queued_task_age_seconds",
                                   "How long the longest-waiting queued task has waited "
                                   "(0 when none waits)", registry=r)
        self.workers = Gauge("mailprov_workers_alive", "Workers whose health key is fresh",
                             registry=r)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.polls_waiting = Gauge("mailprov_polls_waiting",
                                   "Polls held now by long polling (`wait=N`)", registry=r)

    def record(self, route: str, method: str, status: int, seconds: float,
               task: str | None) -> None:
        """One request answered; `task`: the type of task its route records."""
        # labels() costs a lock and a dict walk per call: each combination's children are
        # looked up once
        counted = self._children.get((route, method, status))
        if counted is None:
            counted = self._children[(route, method, status)] = (
                self.requests.labels(route, method, str(status)), self.latency.labels(route))
        counted[0].inc()
        counted[1].observe(seconds)
        if status in (200, 202) and task is not None:
            self.accepted.labels(task).inc()
        elif status == 429:
            self.rate_limited.labels(route).inc()


METRICS = web.AppKey("metrics", WebMetrics)


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: every request is counted, timed and logged as one line, with its final
    status (after the error middleware), and lines logged meanwhile carry its ids."""
    started = time.perf_counter()
    status = 500
    with logs.scope():
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:  # a redirect, re-raised by the error middleware
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        finally:
            elapsed = time.perf_counter() - started
            route = request.match_info.route.name or "unmatched"
            policy = getattr(request.app[ROUTES].get(route), "policy", None)
            request.app[METRICS].record(route, request.method, status, elapsed,
                                        getattr(policy, "task", None))
            quiet = status < 400 and (route in QUIET_ROUTES or request.method in READ_METHODS)
            level = logging.DEBUG if quiet else logging.INFO
            if log.isEnabledFor(level):  # a poll's line is usually not written: not made
                log.log(level, "%s %s %s", request.method, route, status, extra={
                    "method": request.method, "route": route, "status": status,
                    "client": client_of(request), "duration_ms": round(elapsed * 1000, 1),
                    "request_id": request.get(REQUEST_ID)})


async def metrics_handler(request: web.Request) -> web.Response:
    """Prometheus text format; the queue gauges are read now, from Postgres and Redis."""
    m = request.app[METRICS]
    now = await oversight.summary(request.app[READS], request.app[ARQ], request.app[SETTINGS])
    m.queue_depth.set(now.depth)
    m.queue_deferred.set(now.deferred)
    for status in ("queued", "processing", "failed"):
        m.tasks.labels(status).set(getattr(now, status))
    m.finished.labels("completed").set(now.completed_last_hour)
    m.finished.labels("failed").set(now.failed_last_hour)
    m.oldest_queued.set(now.oldest_queued_age_s or 0)
    m.workers.set(len(now.workers))
    m.polls_waiting.set(request.app[WAITERS].waiting)
    return web.Response(body=generate_latest(m.registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})
