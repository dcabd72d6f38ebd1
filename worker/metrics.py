"""The worker's Prometheus metrics, served on `worker_metrics_port` by prometheus-client's
own HTTP server, in a thread. worker/observe.py counts into them."""

from __future__ import annotations

import asyncio
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server


class WorkerMetrics:
    """One worker's counters, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.started = Counter("mailprov_worker_jobs_started", "Job runs started", ["job"],
                               registry=r)
        self.completed = Counter("mailprov_worker_jobs_completed",
                                 "Job runs that left their task completed (or found it "
                                 "finished by another run)", ["job"], registry=r)
        self.failed = Counter("mailprov_worker_jobs_failed",
                              "Job runs that left their task failed, or raised", ["job"],
                              registry=r)
        self.retried = Counter("mailprov_worker_jobs_retried",
                               "Job runs that hit a transient error and asked for another try",
                               ["job"], registry=r)
        self.duration = Histogram("mailprov_worker_job_duration_seconds", "Time one job run took",
                                  ["job"], registry=r,
                                  buckets=(.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300))
        self.items = Counter("mailprov_worker_items_provisioned",
                             "Items tasks did, by task type: domains, sub-domains, mailboxes "
                             "and aliases created, changed, deleted or restored", ["type"],
                             registry=r)

    def serve(self, port: int, host: str) -> WSGIServer:
        """Start the HTTP endpoint in a daemon thread; stop it with `stop`."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return server

    @staticmethod
    async def stop(server: WSGIServer) -> None:
        # shutdown() waits for the serving thread's next poll; not on the event loop
        await asyncio.to_thread(server.shutdown)
        server.server_close()
