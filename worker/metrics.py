"""The worker's Prometheus metrics and its one log line per job.

Each job function is wrapped (`observed`): the wrapper binds the task id into the log
context, times the run, counts how it ended and logs one line. The metrics are served on
`worker_metrics_port` by prometheus-client's own HTTP server, in a thread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from wsgiref.simple_server import WSGIServer

from arq import Retry
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from service import logs
from worker.jobs import Outcome

log = logging.getLogger("mailprov.worker")

Job = Callable[[dict[str, Any], int], Awaitable[Outcome]]

# what a job returns -> the counter it goes to; anything raised counts as failed
RETURNED = {"done": "completed", "already finished": "completed",
            "finished by another run": "completed", "failed": "failed"}


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
                             "Domains, sub-domains and mailboxes created", ["type"], registry=r)

    def serve(self, port: int, host: str) -> WSGIServer:
        """Start the HTTP endpoint in a daemon thread; stop it with `stop`."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return server

    @staticmethod
    async def stop(server: WSGIServer) -> None:
        # shutdown() waits for the serving thread's next poll; not on the event loop
        await asyncio.to_thread(server.shutdown)
        server.server_close()


async def bind_job(ctx: dict[str, Any]) -> None:
    """arq's `on_job_start`: from here on, arq's own lines about the job carry its task id
    too (each job runs in an asyncio task of its own, so nothing leaks to the next)."""
    job_id = ctx.get("job_id", "")
    if job_id.isdigit():  # a task's job; the sweeper's cron jobs have names
        logs.bind(task_id=int(job_id))


def observed(job: Job) -> Job:
    """`job`, counted, timed and logged; arq still sees the same name."""
    name = job.__name__
    task_type = name.removeprefix("provision_")

    @functools.wraps(job)
    async def run(ctx: dict[str, Any], task_id: int) -> Outcome:
        metrics: WorkerMetrics = ctx["metrics"]
        with logs.scope(task_id=task_id, job=name, job_try=ctx.get("job_try", 1)):
            metrics.started.labels(name).inc()
            started = time.perf_counter()
            outcome: Outcome | None = None
            result = "raised"
            try:
                outcome = await job(ctx, task_id)
                result = outcome.result
                return outcome
            except Retry:
                result = "retry"
                raise
            except asyncio.CancelledError:
                result = "cancelled"  # timed out, or the worker is stopping
                raise
            finally:
                elapsed = time.perf_counter() - started
                metrics.duration.labels(name).observe(elapsed)
                fields: dict[str, Any] = {"outcome": result, "task_type": task_type,
                                          "duration_ms": round(elapsed * 1000, 1)}
                counter = "retried" if result == "retry" else RETURNED.get(result, "failed")
                if outcome is not None and outcome.status is not None:
                    # a single mailbox that already exists fails its task, yet its job ran
                    # to the end: the task's status decides the counter
                    counter = "completed" if outcome.status == "completed" else "failed"
                    fields.update(task_status=outcome.status, items_created=outcome.created,
                                  reason=outcome.reason)
                    metrics.items.labels(task_type).inc(outcome.created)
                getattr(metrics, counter).labels(name).inc()
                log.log(logging.INFO if counter == "completed" else logging.WARNING,
                        "job %s: task %s", result, fields.get("task_status", "-"),
                        extra=fields)

    return run
