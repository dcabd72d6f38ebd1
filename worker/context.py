"""What a job works with, typed, and what it returns: arq hands every job a dict, and the
worker's resources live in it under one key (procrastinate's JobContext, in arq's shape)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from arq.connections import ArqRedis

from service.core.db import Database
from service.core.passwords import Hasher
from service.core.settings import Settings
from worker.hashing import FairHasher
from worker.metrics import WorkerMetrics

KEY = "mailprov"


@dataclass
class JobContext:
    settings: Settings
    db: Database
    redis: ArqRedis
    hasher: Hasher
    metrics: WorkerMetrics
    # every hash a job needs goes through here: accounts take turns (worker/hashing.py)
    hashing: FairHasher = field(init=False)

    def __post_init__(self) -> None:
        self.hashing = FairHasher(self.hasher)


def context(ctx: dict[str, Any]) -> JobContext:
    """The worker's resources, from the dict arq passes to a job."""
    return ctx[KEY]


@dataclass(frozen=True)
class Outcome:
    """How one run ended: what the worker's metrics and log line report, without reading
    the task back. `status` is the task status this run left (None: it left none)."""

    result: str  # done, failed, already finished, finished by another run
    status: str | None = None
    created: int = 0  # items this run created
    reason: str | None = None
