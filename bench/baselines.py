"""The in-run baselines: the limits of mailprov's own parts, measured the same way.

    python -m bench.baselines enqueue-app   # POST /enqueue: arq enqueue_job and nothing else
    python -m bench.baselines json-app      # GET /json: a fixed JSON body ($BENCH_JSON_BODY)
    python -m bench.baselines poll-floor-app  # GET /poll: a poll's round trips, nothing else
    python -m bench.baselines accept-floor-app  # POST /accept: an accept's round trips only
    python -m bench.baselines hold-app      # GET /hold: held until POST /release, nothing else
    python -m bench.baselines noop-worker   # an arq worker running a no-op job
    python -m bench.baselines hash --count N            # argon2id hashes/s over all cores
    python -m bench.baselines copy --domain-id D ...    # asyncpg COPY of mailbox rows

Each runs as its own process, with mailprov's settings from the same environment
(`REDIS_URL`, `DATABASE_URL`, `PORT`, `MAILPROV_*`), so the apps and the worker are set up
exactly like `mailprov serve` and `mailprov worker`: the same event loop, logging, arq pool
and worker options. The measuring commands print one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import random
import sys
import time
from typing import Any

import asyncpg
from aiohttp import web
from arq import create_pool
from arq.connections import ArqRedis
from arq.worker import Worker
from redis.asyncio import Redis

from service.core.accounts import digest
from service.core.db import Database
from service.core.passwords import Hasher, hash_password
from service.core.redisconn import arq_redis, redis_settings
from service.core.settings import Settings
from service.web.accepts import Accepts, AsRead
from service.web.api.formats import task_body
from service.web.ratelimit import RateLimiter

NOOP_QUEUE = "bench:noop"
# the no-op job appends "<enqueued at> <finished at>" (Unix seconds) here
DONE_KEY = "bench:noop:done"
ARQ = web.AppKey("arq", ArqRedis)
MAILBOX_COLUMNS = ["domain_id", "account_id", "local_part", "address", "password_hash",
                   "display_name", "quota_mb", "task_id"]


def prehashed(count: int, seed: int, prefix: str = "m") -> list[tuple[str, str]]:
    """`count` (local part, password hash) pairs, the same for the same seed.

    The hashes have the exact shape of Dovecot's {ARGON2ID} with the default cost but
    random bytes: what an import from another server carries, and nobody verifies them here.
    """
    rng = random.Random(seed)

    def b64(n: int) -> str:
        return base64.b64encode(rng.randbytes(n)).decode().rstrip("=")

    return [(f"{prefix}{i}", f"{{ARGON2ID}}$argon2id$v=19$m=65536,t=3,p=1${b64(16)}${b64(32)}")
            for i in range(count)]


def real_hash() -> str:
    """One real {ARGON2ID} hash at the default cost, for requests that carry a hash."""
    defaults = Settings()
    return hash_password("bench-password-1", defaults.argon2_time_cost,
                         defaults.argon2_memory_kib)


def enqueue_app(settings: Settings) -> web.Application:
    """A bare aiohttp app whose one handler only enqueues an arq job."""

    async def redis_ctx(app: web.Application) -> Any:
        app[ARQ] = await create_pool(redis_settings(settings.redis_url),
                                     default_queue_name=NOOP_QUEUE)
        yield
        await app[ARQ].aclose()

    async def enqueue(request: web.Request) -> web.Response:
        job = await request.app[ARQ].enqueue_job("noop", time.time())
        return web.json_response({"status": "success", "task_id": job and job.job_id})

    app = web.Application()
    app.cleanup_ctx.append(redis_ctx)
    app.router.add_post("/enqueue", enqueue)
    return app


def json_app(body: str) -> web.Application:
    """A bare aiohttp app answering a fixed JSON document (mailprov's own answer)."""
    document = json.loads(body)

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(document)

    app = web.Application()
    app.router.add_get("/json", answer)
    return app


FLOOR = web.AppKey("floor", dict)


def poll_floor_app(settings: Settings) -> web.Application:
    """The poll's floor: a bare handler making get/mailbox/single's round trips (its key
    and task in one query, the rate-limit script) and answering the same document, with
    none of mailprov's policy, validation, middleware, logging or metrics."""

    async def ctx(app: web.Application) -> Any:
        # mailprov's pool (its JSON codecs, no reset on release) and rate limiter
        db = await Database.connect(settings.database_url, max_size=settings.db_pool_max)
        redis = Redis.from_url(settings.redis_url)
        app[FLOOR] = {"db": db, "limiter": RateLimiter(redis, settings.redis_prefix)}
        yield
        await redis.aclose()
        await db.close()

    async def poll(request: web.Request) -> web.Response:
        floor = request.app[FLOOR]
        row = await floor["db"].resolve_key_with_task(key_hash=digest(request.query["key"]),
                                                      task_id=int(request.query["task_id"]))
        await floor["limiter"].hit(row["account_id"], "get", settings.rate_get)
        return web.json_response(task_body(row, {}))

    app = web.Application()
    app.cleanup_ctx.append(ctx)
    app.router.add_get("/poll", poll)
    return app


RELEASED = web.AppKey("released", asyncio.Event)
HELD = web.AppKey("held", list)


def hold_app() -> web.Application:
    """A bare aiohttp app whose GET /hold waits until POST /release (GET /held: how many
    wait): what aiohttp itself costs per held request, the floor of a long poll's
    memory."""

    async def ctx(app: web.Application) -> Any:
        app[RELEASED] = asyncio.Event()
        app[HELD] = [0]
        yield

    async def hold(request: web.Request) -> web.Response:
        request.app[HELD][0] += 1
        await request.app[RELEASED].wait()
        return web.json_response({"status": "released"})

    async def held(request: web.Request) -> web.Response:
        return web.json_response({"held": request.app[HELD][0]})

    async def release(request: web.Request) -> web.Response:
        request.app[RELEASED].set()
        return web.json_response({"status": "released"})

    app = web.Application()
    app.cleanup_ctx.append(ctx)
    app.router.add_get("/hold", hold)
    app.router.add_get("/held", held)
    app.router.add_post("/release", release)
    return app


ACCEPT_FLOOR = web.AppKey("accept_floor", dict)


def accept_floor_app(settings: Settings) -> web.Application:
    """The accept's floor: a bare handler making create/mailbox/single's round trips as
    mailprov makes them in the common case (service/web/accepts.py: the task's insert,
    checked against the domain as read once for the key, and the counted enqueue, each
    shared with the requests arriving together) and answering the same document, with
    none of mailprov's policy, validation, sealing, middleware, logging or metrics."""

    async def ctx(app: web.Application) -> Any:
        db = await Database.connect(settings.database_url, max_size=settings.db_pool_max)
        arq = arq_redis(settings.redis_url, connect_timeout=2)
        arq.default_queue_name = settings.queue_name
        app[ACCEPT_FLOOR] = {"db": db, "accepts": Accepts(db, arq), "read": {},
                             "limiter": RateLimiter(arq, settings.redis_prefix)}
        yield
        await arq.aclose()
        await db.close()

    async def accept(request: web.Request) -> web.Response:
        floor = request.app[ACCEPT_FLOOR]
        body = await request.json()
        key_hash = digest(body["key"])
        domain = floor["read"].get((key_hash, body["Domain"]))
        if domain is None:
            domain = floor["read"][(key_hash, body["Domain"])] = (
                await floor["db"].resolve_key_with_domain(key_hash=key_hash,
                                                          domain=body["Domain"]))
        item = {"local_part": body["Email_fullname"], "password_hash":
                body["Params"]["password_hash"], "quota_mb": domain["default_mailbox_quota_mb"]}
        task_id = await floor["accepts"].record(AsRead(
            key_hash, domain, "mailbox_single", {"domain_id": domain["id"], "items": [item]}, 1))
        limit = settings.rate_create_mailbox_single
        await floor["accepts"].queue(floor["limiter"].job(
            domain["account_id"], "create_mailbox_single", limit, task_id, "mailbox_single"))
        return web.json_response({"status": "success", "task_id": task_id})

    app = web.Application()
    app.cleanup_ctx.append(ctx)
    app.router.add_post("/accept", accept)
    return app


async def noop(ctx: dict[str, Any], enqueued_at: float) -> None:
    """Record when it ran; nothing else."""
    await ctx["redis"].rpush(DONE_KEY, f"{enqueued_at} {time.time()}")


def noop_worker(settings: Settings) -> Worker:
    """An arq worker with mailprov's worker options and a no-op job."""
    return Worker(
        functions=[noop],
        queue_name=NOOP_QUEUE,
        redis_settings=redis_settings(settings.redis_url, conn_retries=30),
        poll_delay=settings.worker_poll_delay_s,
        max_jobs=settings.worker_max_jobs,
        job_timeout=settings.worker_job_timeout_s,
        max_tries=settings.worker_max_tries,
        health_check_interval=settings.worker_health_check_interval_s,
        keep_result=0,
    )


async def hash_rate(settings: Settings, count: int) -> dict[str, Any]:
    """Raw hashes per second through mailprov's Hasher: same cost, same pool size."""
    hasher = Hasher(settings.argon2_time_cost, settings.argon2_memory_kib,
                    settings.hash_processes)
    try:
        # start every process first: the figure is hashing, not interpreter start-up
        await asyncio.gather(*(hasher.hash("warm-up-password") for _ in range(hasher.processes)))
        passwords = [f"bench-password-{i}" for i in range(count)]
        # the worker's own batching rule (worker/jobs.py `_hashes`)
        per_batch = max(1, min(8, count // (hasher.processes * 4)))
        began = time.perf_counter()
        for batch in hasher.hash_batches(passwords, per_batch):
            await batch
        seconds = time.perf_counter() - began
    finally:
        hasher.close()
    return {"count": count, "seconds": seconds, "per_second": count / seconds,
            "processes": hasher.processes}


async def copy_rate(settings: Settings, domain_id: int, domain: str, tasks: int, size: int,
                    seed: int) -> dict[str, Any]:
    """COPY the rows of `tasks` bulk tasks of `size` mailboxes, one COPY per task."""
    pairs = prehashed(tasks * size, seed)
    conn = await asyncpg.connect(settings.database_url)
    try:
        account_id = await conn.fetchval("SELECT account_id FROM domains WHERE id = $1",
                                         domain_id)
        rows = [(domain_id, account_id, local, f"{local}@{domain}", hashed, None, 1, None)
                for local, hashed in pairs]
        began = time.perf_counter()
        for i in range(0, len(rows), size):
            await conn.copy_records_to_table("mailboxes", records=rows[i:i + size],
                                             columns=MAILBOX_COLUMNS)
        seconds = time.perf_counter() - began
    finally:
        await conn.close()
    return {"count": len(rows), "seconds": seconds, "per_second": len(rows) / seconds}


def main() -> None:
    # the same logging as `mailprov` (service/cli.py main): the worker logs every job
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m bench.baselines", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="kind", required=True)
    sub.add_parser("enqueue-app")
    sub.add_parser("json-app")
    sub.add_parser("poll-floor-app")
    sub.add_parser("accept-floor-app")
    sub.add_parser("hold-app")
    sub.add_parser("noop-worker")
    hashing = sub.add_parser("hash")
    hashing.add_argument("--count", type=int, required=True)
    copy = sub.add_parser("copy")
    copy.add_argument("--domain-id", type=int, required=True)
    copy.add_argument("--domain", required=True)
    copy.add_argument("--tasks", type=int, required=True)
    copy.add_argument("--size", type=int, required=True)
    copy.add_argument("--seed", type=int, required=True)
    args = p.parse_args()
    settings = Settings.from_env()
    if args.kind in ("enqueue-app", "json-app", "poll-floor-app", "accept-floor-app",
                     "hold-app"):
        app = (enqueue_app(settings) if args.kind == "enqueue-app"
               else poll_floor_app(settings) if args.kind == "poll-floor-app"
               else accept_floor_app(settings) if args.kind == "accept-floor-app"
               else hold_app() if args.kind == "hold-app"
               else json_app(os.environ["BENCH_JSON_BODY"]))
        web.run_app(app, host="127.0.0.1", port=settings.port, access_log=None, print=None)
    elif args.kind == "noop-worker":
        noop_worker(settings).run()
    elif args.kind == "hash":
        print(json.dumps(asyncio.run(hash_rate(settings, args.count))))
    else:
        print(json.dumps(asyncio.run(copy_rate(settings, args.domain_id, args.domain,
                                               args.tasks, args.size, args.seed))))


if __name__ == "__main__":
    main()
