"""The scenarios: each measures mailprov and its baseline side by side and returns rows.

This machine is shared and noisy, so no absolute figure means much; a ratio to a baseline
measured in the same minute does. Every scenario alternates baseline and mailprov rounds
(ABBA: B M, M B, B M, ...) and takes the best round of each for throughputs, or pools the
samples of all rounds for latencies.

Times of work done in the background come from the servers' clocks: a task's `created_at`
and `finished_at` in Postgres, or the no-op job's own `time.time()`. The bench reads them
with SQL straight from its own embedded database, which it also seeds directly (COPY)
where a scenario needs a large domain.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
import redis.asyncio as aioredis
from arq import create_pool

from bench import baselines
from bench.load import PLACEHOLDER, drive, percentile
from bench.profile import recording
from bench.servers import Peak, Proc, Stack, Target, cpu_seconds, create_domain, free_port
from service.core.redisconn import redis_settings

T = TypeVar("T")
TASK_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Sizes:
    """How much each scenario does: the full run, or `--quick`'s smoke test."""

    rounds: int              # throughput rounds per side (enqueue, poll)
    warmup_s: float
    run_s: float
    connections: int
    latency_rate: float      # requests per second
    latency_s: float         # seconds per latency round
    latency_rounds: int
    worker_tasks: int        # tasks per worker round
    worker_rounds: int
    bulk_hashed: int         # mailboxes in the hashed bulk task
    baseline_hashes: int     # hashes per baseline run (one before, one after the task)
    bulk_tasks: int          # pre-hashed: tasks per round ...
    bulk_size: int           # ... of this many mailboxes
    bulk_rounds: int
    growth: tuple[int, ...]  # domain and bulk-task sizes
    growth_rounds: int       # bulk tasks per size (the fastest counts)
    list_requests: int       # list/mailbox requests per size (the fastest counts)
    life_mailboxes: int      # lifecycle: the domain's mailboxes, paged 100 at a time
    life_updates: int        # ... mailboxes changed, one PUT each
    life_bulk: int           # ... mailboxes deleted and restored in one bulk action each
    scaling_tasks: int       # scaling: single-mailbox tasks per drain
    scaling_domains: int     # ... spread over this many domains
    scaling_workers: tuple[int, ...]  # ... drained by this many worker processes
    waiters: int             # longpoll: polls held at once ...
    finishes: int            # ... of which this many are finished one at a time


FULL = Sizes(rounds=3, warmup_s=0.5, run_s=2.5, connections=64, latency_rate=20.0,
             latency_s=6.0, latency_rounds=2, worker_tasks=1000, worker_rounds=2,
             bulk_hashed=1000, baseline_hashes=60, bulk_tasks=10, bulk_size=1000,
             bulk_rounds=2, growth=(100, 1000, 10000), growth_rounds=2, list_requests=7,
             life_mailboxes=10000, life_updates=1000, life_bulk=1000,
             scaling_tasks=2000, scaling_domains=100, scaling_workers=(1, 2, 4), waiters=5000,
             finishes=500)
QUICK = Sizes(rounds=1, warmup_s=0.2, run_s=0.5, connections=16, latency_rate=20.0,
              latency_s=0.5, latency_rounds=1, worker_tasks=20, worker_rounds=1,
              bulk_hashed=4, baseline_hashes=4, bulk_tasks=2, bulk_size=10, bulk_rounds=1,
              growth=(10, 30, 100), growth_rounds=1, list_requests=2,
              life_mailboxes=300, life_updates=20, life_bulk=20,
              scaling_tasks=20, scaling_domains=4, scaling_workers=(1, 2), waiters=50,
              finishes=20)


@dataclass
class Row:
    """One line of the results table."""

    group: str               # the scenario's command name
    scenario: str            # "<name>: <what exactly is measured>"
    label: str = ""          # a shorter name than the part before ":", where needed
    figure: str = ""
    baseline: str = "—"
    ratio: float | None = None
    target: str = ""
    misses: list[str] = field(default_factory=list)
    rounds: str = ""         # every round's figures, for the record
    memory: dict[str, Peak] = field(default_factory=dict)
    # CPU milliseconds per request of each process involved: {"mailprov"|"baseline": {...}}
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str = ""

    @property
    def passed(self) -> bool:
        return not self.misses and not self.error


@dataclass
class Context:
    stack: Stack
    sizes: Sizes
    session: aiohttp.ClientSession
    profile_dir: Path | None = None
    # the names profiled so far (each is profiled in its first round only)
    profiled: set[str] = field(default_factory=set)


def below(value: float, floor: float, what: str) -> list[str]:
    """A miss when `value` is under `floor`, saying by how much."""
    if value >= floor:
        return []
    return [f"{what} {value:.2f} is {100 * (1 - value / floor):.0f} % under {floor:g}"]


def above(value: float, ceiling: float, what: str, unit: str = "") -> list[str]:
    """A miss when `value` is over `ceiling`, saying by how much."""
    if value <= ceiling:
        return []
    return [f"{what} {value:.1f}{unit} is {100 * (value / ceiling - 1):.0f} % over "
            f"{ceiling:g}{unit}"]


async def alternate(rounds: int, baseline: Callable[[], Awaitable[T]],
                    mailprov: Callable[[], Awaitable[T]],
                    before: Callable[[], Awaitable[None]] | None = None,
                    ) -> tuple[list[T], list[T]]:
    """Run both sides `rounds` times each, in ABBA order; (baseline's, mailprov's).
    `before` runs before every round of either side."""
    base: list[T] = []
    mail: list[T] = []

    async def run(side: Callable[[], Awaitable[T]], into: list[T]) -> None:
        if before is not None:
            await before()
        into.append(await side())

    for r in range(rounds):
        if r % 2 == 0:
            await run(baseline, base)
            await run(mailprov, mail)
        else:
            await run(mailprov, mail)
            await run(baseline, base)
    return base, mail


async def profiled(ctx: Context, name: str, app: Proc,
                   load: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """`costed`; under --profile, the first round of `name` is recorded with py-spy and
    its answers noted beside the profile, so that two profiles compare per request
    (`python -m bench.profile --compare`)."""
    out = ctx.profile_dir if name not in ctx.profiled else None
    ctx.profiled.add(name)
    async with recording(out, name, app.pid):
        result = await costed(ctx, app, load)
    if out is not None:
        await asyncio.to_thread((out / f"{name}.answers").write_text, str(result["answers"]))
    return result


async def costed(ctx: Context, app: Proc, load: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Run a load; add what each process spent on it, in CPU milliseconds per answer.

    On a 2-core machine that is what bounds a throughput: the web process, Postgres,
    Redis and the load client all share the same cores.
    """
    pids = {"app": app.pid, **ctx.stack.server_pids()}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    result = await load
    answers = max(1, result["answers"])
    cpu = {name: (cpu_seconds(pid) - before[name]) * 1000 / answers
           for name, pid in pids.items()}
    cpu["load client"] = result["cpu_s"] * 1000 / answers
    result["cpu_ms"] = cpu
    return result


@asynccontextmanager
async def database(target: Target) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(target.database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def last_task_id(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM tasks"))


async def wait_tasks(conn: asyncpg.Connection, after: int, count: int,
                     limit_s: float = TASK_TIMEOUT_S) -> list[asyncpg.Record]:
    """The `count` tasks with ids above `after`, once all are finished; all must succeed."""
    deadline = time.monotonic() + limit_s
    while True:
        done = await conn.fetchval(
            "SELECT count(*) FROM tasks WHERE id > $1 AND finished_at IS NOT NULL", after)
        if done >= count:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {count} tasks finished in {limit_s:.0f}s")
        await asyncio.sleep(0.1)
    rows = await conn.fetch(
        "SELECT id, status, error, progress_total, "
        "extract(epoch FROM created_at)::float8 AS created, "
        "extract(epoch FROM finished_at)::float8 AS finished "
        "FROM tasks WHERE id > $1 ORDER BY id", after)
    failed = [r for r in rows if r["status"] != "completed"]
    if failed:
        raise RuntimeError(f"{len(failed)} tasks failed, e.g. {failed[0]['id']}: "
                           f"{failed[0]['error']}")
    return list(rows)


async def provision_domain(ctx: Context, target: Target, conn: asyncpg.Connection,
                           name: str) -> int:
    """A domain through the API, provisioned by a running worker; its id."""
    after = await last_task_id(conn)
    await create_domain(ctx.session, target, name)
    await wait_tasks(conn, after, 1, limit_s=60)
    return int(await conn.fetchval("SELECT id FROM domains WHERE name = $1", name))


async def post(ctx: Context, url: str, body: dict[str, Any]) -> int:
    """POST a create request; its task id."""
    async with ctx.session.post(url, json=body) as r:
        answer = await r.json()
        if r.status != 200:
            raise RuntimeError(f"POST {url}: {r.status} {answer}")
    return int(answer["task_id"])


def single_body(target: Target, domain: str, password_hash: str) -> str:
    """A create/mailbox/single body naming a new mailbox per request (`u<n>`)."""
    return json.dumps({"Email_fullname": f"u{PLACEHOLDER}", "single_bulk": "single",
                       "Domain": domain, "Params": {"password_hash": password_hash},
                       "key": target.key})


def rate(value: float, unit: str = "/s") -> str:
    return f"{value:,.0f}{unit}" if value >= 100 else f"{value:,.1f}{unit}"


def ms(value: float) -> str:
    return f"{value:.1f} ms"


def rounds_text(label: str, values: list[float], unit: str) -> str:
    return f"{label} " + ", ".join(rate(v, unit) for v in values)


_HASH: list[str] = []


def password_hash() -> str:
    """One real default-cost hash, made once per run (0.2 s)."""
    if not _HASH:
        _HASH.append(baselines.real_hash())
    return _HASH[0]


async def enqueue(ctx: Context) -> list[Row]:
    """create/mailbox/single accepted per second by one web process vs a bare enqueue."""
    sz = ctx.sizes
    t = await ctx.stack.target("enqueue")
    try:
        web = await t.start_web()
        base_port = free_port()
        app = await t.start_baseline("enqueue-app", port=base_port)
        # no worker runs here (as none consumes the baseline's jobs): the domain stays
        # pending, which create/mailbox/single does not mind
        await create_domain(ctx.session, t, "enqueue.bench.test")
        body = single_body(t, "enqueue.bench.test", password_hash())
        starts = itertools.count(0, 10**6)

        async def mailprov() -> dict[str, Any]:
            return await profiled(ctx, "enqueue-web", web, drive(
                t.api("create/mailbox/single"), method="POST", body=body,
                connections=sz.connections, duration=sz.run_s, warmup=sz.warmup_s,
                start=next(starts)))

        async def baseline() -> dict[str, Any]:
            return await profiled(ctx, "enqueue-baseline", app, drive(
                f"http://127.0.0.1:{base_port}/enqueue", method="POST", body=body,
                connections=sz.connections, duration=sz.run_s, warmup=sz.warmup_s))

        floor_port = free_port()
        floor_app = await t.start_baseline("accept-floor-app", port=floor_port)

        async def floor() -> dict[str, Any]:
            return await profiled(ctx, "enqueue-floor", floor_app, drive(
                f"http://127.0.0.1:{floor_port}/accept", method="POST", body=body,
                connections=sz.connections, duration=sz.run_s, warmup=sz.warmup_s,
                start=next(starts)))

        base, mail = await alternate(sz.rounds, baseline, mailprov, t.fresh_limits)
        floors, mail_f = await alternate(sz.rounds, floor, mailprov, t.fresh_limits)
    finally:
        await t.stop_all()
    return [_throughput_row(
        "enqueue", f"enqueue: create/mailbox/single, 1 web process, {sz.connections} connections",
        "bare aiohttp + arq enqueue_job", "≥ 0.5 x baseline, p99 ≤ 50 ms, 0 errors",
        mail, base, p99_limit_ms=50),
        _throughput_row(
        "enqueue", f"enqueue, floor: create/mailbox/single vs its round trips alone, "
                   f"{sz.connections} connections",
        "bare handler: the gathered insert checked against the domain read once, the "
        "gathered counted enqueue, the same JSON", "reported beside the bare enqueue",
        mail_f, floors, least=0)]


def _throughput_row(group: str, title: str, baseline_label: str, target: str,
                    mail: list[dict[str, Any]], base: list[dict[str, Any]],
                    p99_limit_ms: float | None = None, least: float = 0.5) -> Row:
    """The row of a closed-loop scenario: best round of each side, ratio (at `least`),
    errors, CPU."""
    best_m = max(mail, key=lambda r: r["rps"])
    best_b = max(base, key=lambda r: r["rps"])
    ratio = best_m["rps"] / best_b["rps"]
    errors = sum(r["errors"] for r in mail)
    misses = below(ratio, least, "ratio")
    if p99_limit_ms is not None:
        misses += above(best_m["p99_ms"], p99_limit_ms, "p99", " ms")
    if errors:
        sample = next(r["error_sample"] for r in mail if r["errors"])
        misses.append(f"{errors} errors (e.g. {sample[:120]})")
    return Row(
        group, title,
        figure=f"{rate(best_m['rps'], ' req/s')}; p50 {ms(best_m['p50_ms'])}, "
               f"p99 {ms(best_m['p99_ms'])}; {errors} errors",
        baseline=f"{rate(best_b['rps'], ' req/s')} ({baseline_label}); "
                 f"p50 {ms(best_b['p50_ms'])}, p99 {ms(best_b['p99_ms'])}",
        ratio=ratio, target=target, misses=misses,
        rounds="; ".join([rounds_text("mailprov", [r["rps"] for r in mail], " req/s"),
                          rounds_text("baseline", [r["rps"] for r in base], " req/s")]),
        cpu={"mailprov": best_m["cpu_ms"], "baseline": best_b["cpu_ms"]},
    )


async def poll(ctx: Context) -> list[Row]:
    """get/mailbox/single answered per second by one web process vs a bare JSON handler."""
    sz = ctx.sizes
    t = await ctx.stack.target("poll")
    try:
        web = await t.start_web()
        worker = await t.start_worker()
        async with database(t) as conn:
            await provision_domain(ctx, t, conn, "poll.bench.test")
            after = await last_task_id(conn)
            task_id = await post(ctx, t.api("create/mailbox/single"), {
                "Email_fullname": "polled", "single_bulk": "single",
                "Domain": "poll.bench.test", "Params": {"password_hash": password_hash()},
                "key": t.key})
            await wait_tasks(conn, after, 1, limit_s=60)
        await worker.stop()  # the baseline has no worker either
        url = t.api(f"get/mailbox/single?key={t.key}&task_id={task_id}")
        async with ctx.session.get(url) as r:
            answer = await r.text()
            if r.status != 200:
                raise RuntimeError(f"GET {url}: {r.status} {answer}")
        base_port = free_port()
        # the baseline answers mailprov's own document, byte for byte the same JSON
        app = await t.start_baseline("json-app", port=base_port, BENCH_JSON_BODY=answer)
        floor_port = free_port()
        floor_app = await t.start_baseline("poll-floor-app", port=floor_port)
        floor_url = f"http://127.0.0.1:{floor_port}/poll?key={t.key}&task_id={task_id}"

        async def mailprov() -> dict[str, Any]:
            return await profiled(ctx, "poll-web", web, drive(
                url, connections=sz.connections, duration=sz.run_s, warmup=sz.warmup_s))

        async def baseline() -> dict[str, Any]:
            return await costed(ctx, app, drive(
                f"http://127.0.0.1:{base_port}/json", connections=sz.connections,
                duration=sz.run_s, warmup=sz.warmup_s))

        async def floor() -> dict[str, Any]:
            return await profiled(ctx, "poll-floor", floor_app, drive(
                floor_url, connections=sz.connections, duration=sz.run_s,
                warmup=sz.warmup_s))

        base, mail = await alternate(sz.rounds, baseline, mailprov, t.fresh_limits)
        floors, mail_f = await alternate(sz.rounds, floor, mailprov, t.fresh_limits)
    finally:
        await t.stop_all()
    return [_throughput_row(
        "poll", f"poll: get/mailbox/single, 1 web process, {sz.connections} connections",
        "bare aiohttp JSON handler", "≥ 0.5 x baseline", mail, base),
        _throughput_row(
        "poll", f"poll, floor: get/mailbox/single vs its round trips alone, "
                f"{sz.connections} connections",
        "bare handler: the key-and-task query, the rate-limit script, the same JSON",
        "≥ 0.8 x floor", mail_f, floors, least=0.8)]


async def noop_done(redis: aioredis.Redis, count: int,
                    limit_s: float = TASK_TIMEOUT_S) -> list[tuple[float, float]]:
    """(enqueued, finished) of `count` no-op jobs, once all have run."""
    deadline = time.monotonic() + limit_s
    while (done := await redis.llen(baselines.DONE_KEY)) < count:  # type: ignore[misc]
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {count} no-op jobs ran in {limit_s:.0f}s")
        await asyncio.sleep(0.05)
    entries = await redis.lrange(baselines.DONE_KEY, 0, -1)  # type: ignore[misc]
    pairs = [tuple(float(x) for x in e.split()) for e in entries]
    return [(a, b) for a, b in pairs]


async def latency(ctx: Context) -> list[Row]:
    """created → finished of single mailboxes at a steady rate vs a no-op arq job."""
    sz = ctx.sizes
    count = max(2, round(sz.latency_rate * sz.latency_s))
    t = await ctx.stack.target("latency")
    redis = aioredis.Redis.from_url(t.redis_url)
    try:
        web = await t.start_web()
        worker = await t.start_worker()
        base_port = free_port()
        await t.start_baseline("enqueue-app", port=base_port)
        await t.start_baseline("noop-worker")
        async with database(t) as conn:
            await provision_domain(ctx, t, conn, "latency.bench.test")
            body = single_body(t, "latency.bench.test", password_hash())
            starts = itertools.count(0, 10**6)
            errors = 0
            first = True

            async def mailprov() -> list[float]:
                nonlocal errors, first
                after = await last_task_id(conn)
                async with recording(ctx.profile_dir if first else None, "latency-worker",
                                     worker.pid), \
                        recording(ctx.profile_dir if first else None, "latency-web", web.pid):
                    first = False
                    sent = await drive(t.api("create/mailbox/single"), method="POST",
                                       body=body, connections=8, count=count,
                                       rate=sz.latency_rate, start=next(starts))
                    errors += sent["errors"]
                    rows = await wait_tasks(conn, after, sent["ok"])
                return [(r["finished"] - r["created"]) * 1000 for r in rows]

            async def baseline() -> list[float]:
                await redis.delete(baselines.DONE_KEY)
                sent = await drive(f"http://127.0.0.1:{base_port}/enqueue", method="POST",
                                   body=body, connections=8, count=count,
                                   rate=sz.latency_rate)
                return [(b - a) * 1000 for a, b in await noop_done(redis, sent["ok"])]

            base, mail = await alternate(sz.latency_rounds, baseline, mailprov)
    finally:
        await redis.aclose()
        await t.stop_all()
    m = [x for run in mail for x in run]
    b = [x for run in base for x in run]
    m50, m99, b50, b99 = (percentile(m, 50), percentile(m, 99), percentile(b, 50),
                          percentile(b, 99))
    ratio = m50 / b50
    misses = above(ratio, 2.0, "p50 ratio") + above(m99, 100, "p99", " ms")
    if errors:
        misses.append(f"{errors} requests failed")
    return [Row(
        "latency", f"latency: task created → finished, single mailbox with password_hash, "
                   f"{sz.latency_rate:g} req/s",
        figure=f"p50 {ms(m50)}, p99 {ms(m99)} ({len(m)} tasks)",
        baseline=f"p50 {ms(b50)}, p99 {ms(b99)} (no-op arq job, enqueue → done; "
                 f"{len(b)} jobs)",
        ratio=ratio, target="p50 ≤ 2 x baseline, p99 ≤ 100 ms", misses=misses,
        rounds="; ".join(
            ["mailprov p50 " + ", ".join(ms(percentile(r, 50)) for r in mail),
             "baseline p50 " + ", ".join(ms(percentile(r, 50)) for r in base)]),
    )]


def spread_rate(finishes: list[float]) -> float:
    """Completions per second between the first and the last: the worker's start-up and
    the wait for the first job are not part of its throughput."""
    finishes = sorted(finishes)
    return (len(finishes) - 1) / (finishes[-1] - finishes[0])


async def worker(ctx: Context) -> list[Row]:
    """Single-mailbox tasks one worker completes per second vs no-op arq jobs."""
    sz = ctx.sizes
    n = sz.worker_tasks
    t = await ctx.stack.target("worker")
    redis = aioredis.Redis.from_url(t.redis_url)
    arq = await create_pool(redis_settings(t.redis_url),
                            default_queue_name=baselines.NOOP_QUEUE)
    try:
        await t.start_web()
        async with database(t) as conn:
            first_worker = await t.start_worker()
            await provision_domain(ctx, t, conn, "worker.bench.test")
            await first_worker.stop()
            body = single_body(t, "worker.bench.test", password_hash())
            starts = itertools.count(0, 10**6)
            first = True

            async def mailprov() -> float:
                nonlocal first
                # the queue fills while no worker runs, then one worker drains it
                after = await last_task_id(conn)
                sent = await drive(t.api("create/mailbox/single"), method="POST", body=body,
                                   connections=16, count=n, start=next(starts))
                if sent["ok"] != n:
                    raise RuntimeError(f"filling the queue: {sent}")
                proc = await t.start_worker()
                async with recording(ctx.profile_dir if first else None, "worker-worker",
                                     proc.pid):
                    first = False
                    rows = await wait_tasks(conn, after, n)
                await proc.stop()
                return spread_rate([r["finished"] for r in rows])

            async def baseline() -> float:
                await redis.delete(baselines.DONE_KEY)
                for i in range(0, n, 100):
                    await asyncio.gather(*(arq.enqueue_job("noop", time.time())
                                           for _ in range(min(100, n - i))))
                proc = await t.start_baseline("noop-worker")
                done = await noop_done(redis, n)
                await proc.stop()
                return spread_rate([b for _, b in done])

            base, mail = await alternate(sz.worker_rounds, baseline, mailprov)
    finally:
        await arq.aclose()
        await redis.aclose()
        await t.stop_all()
    ratio = max(mail) / max(base)
    return [Row(
        "worker", f"worker: single-mailbox tasks (password_hash given) per second, "
                  f"1 worker process, {n} queued",
        figure=rate(max(mail), " tasks/s"),
        baseline=f"{rate(max(base), ' jobs/s')} (no-op arq jobs, same worker options)",
        ratio=ratio, target="≥ 0.5 x baseline", misses=below(ratio, 0.5, "ratio"),
        rounds="; ".join([rounds_text("mailprov", mail, " tasks/s"),
                          rounds_text("baseline", base, " jobs/s")]),
    )]


async def peaks(*procs: Any) -> dict[str, Peak]:
    return {p.name: p.measure_peak() for p in procs}


async def bulk_hashed(ctx: Context) -> list[Row]:
    """One bulk task with generated passwords vs raw argon2id hashing on every core."""
    sz = ctx.sizes
    n = sz.bulk_hashed
    t = await ctx.stack.target("bulk-hashed")
    try:
        web = await t.start_web()
        worker = await t.start_worker()

        async def baseline() -> float:
            out = await t.run("-m", "bench.baselines", "hash",
                              "--count", str(sz.baseline_hashes))
            return float(json.loads(out)["per_second"])

        async with database(t) as conn:
            await provision_domain(ctx, t, conn, "hashed.bench.test")
            before = await baseline()
            after = await last_task_id(conn)
            began = time.time()
            async with recording(ctx.profile_dir, "bulk-hashed-worker", worker.pid,
                                 subprocesses=True):
                await post(ctx, t.api("create/mailbox/bulk"), {
                    "Email_fullname": "gen", "single_bulk": "bulk",
                    "Domain": "hashed.bench.test", "Params": {"count": n}, "key": t.key})
                (task,) = await wait_tasks(conn, after, 1)
            created = await conn.fetchval(
                "SELECT count(*) FROM mailboxes WHERE task_id = $1", task["id"])
            if created != n:
                raise RuntimeError(f"the bulk task created {created} of {n} mailboxes")
            mail = n / (task["finished"] - began)
            memory = await peaks(web, worker)
            later = await baseline()
    finally:
        await t.stop_all()
    # one task of this size takes minutes, so it runs once, between two baseline runs;
    # their mean stands for the conditions during the task (a shared machine drifts)
    base = (before + later) / 2
    ratio = mail / base
    processes = t.settings.hash_processes
    return [Row(
        "bulk", f"bulk, hashed: 1 task of {n} mailboxes, generated passwords "
                f"(argon2id t={t.settings.argon2_time_cost}, "
                f"m={t.settings.argon2_memory_kib} KiB, {processes} processes)",
        figure=rate(mail, " mailboxes/s"),
        baseline=f"{rate(base, ' hashes/s')} (raw argon2id, same cost, pool of {processes}; "
                 "mean of the runs before and after)",
        ratio=ratio, target="≥ 0.85 x baseline", misses=below(ratio, 0.85, "ratio"),
        rounds=f"baseline before {rate(before, ' hashes/s')}, after "
               f"{rate(later, ' hashes/s')}; ratio to each {mail / before:.2f}, "
               f"{mail / later:.2f}",
        memory=memory,
    )]


async def bulk_prehashed(ctx: Context) -> list[Row]:
    """Bulk tasks with password_hash given vs COPY of the same rows."""
    sz = ctx.sizes
    total = sz.bulk_tasks * sz.bulk_size
    t = await ctx.stack.target("bulk-prehashed")
    try:
        web = await t.start_web()
        worker = await t.start_worker()
        async with database(t) as conn:
            numbers = itertools.count()
            first = True

            async def mailprov() -> float:
                nonlocal first
                r = next(numbers)
                domain = f"pre{r}.bench.test"
                await provision_domain(ctx, t, conn, domain)
                pairs = baselines.prehashed(total, seed=r)
                bodies = [{
                    "Email_fullname": f"import-{k}", "single_bulk": "bulk", "Domain": domain,
                    "Params": {"mailboxes": [{"local_part": local, "password_hash": hashed}
                                             for local, hashed in
                                             pairs[k * sz.bulk_size:(k + 1) * sz.bulk_size]]},
                    "key": t.key} for k in range(sz.bulk_tasks)]
                after = await last_task_id(conn)
                async with recording(ctx.profile_dir if first else None,
                                     "bulk-prehashed-worker", worker.pid), \
                        recording(ctx.profile_dir if first else None, "bulk-prehashed-web",
                                  web.pid):
                    first = False
                    began = time.time()
                    await asyncio.gather(*(post(ctx, t.api("create/mailbox/bulk"), b)
                                           for b in bodies))
                    rows = await wait_tasks(conn, after, sz.bulk_tasks)
                created = await conn.fetchval(
                    "SELECT count(*) FROM mailboxes m JOIN domains d ON d.id = m.domain_id "
                    "WHERE d.name = $1", domain)
                if created != total:
                    raise RuntimeError(f"bulk tasks created {created} of {total} mailboxes")
                return total / (max(row["finished"] for row in rows) - began)

            async def baseline() -> float:
                r = next(numbers)
                domain = f"copy{r}.bench.test"
                domain_id = await provision_domain(ctx, t, conn, domain)
                out = await t.run("-m", "bench.baselines", "copy", "--domain-id",
                                  str(domain_id), "--domain", domain, "--tasks",
                                  str(sz.bulk_tasks), "--size", str(sz.bulk_size),
                                  "--seed", str(r))
                return float(json.loads(out)["per_second"])

            base, mail = await alternate(sz.bulk_rounds, baseline, mailprov)
            memory = await peaks(web, worker)
    finally:
        await t.stop_all()
    ratio = max(mail) / max(base)
    return [Row(
        "bulk", f"bulk, pre-hashed: {sz.bulk_tasks} tasks of {sz.bulk_size} mailboxes "
                "with password_hash, one domain",
        figure=rate(max(mail), " mailboxes/s"),
        baseline=f"{rate(max(base), ' rows/s')} (asyncpg copy_records_to_table, "
                 f"the same rows, one COPY per task)",
        ratio=ratio, target="≥ 0.25 x baseline", misses=below(ratio, 0.25, "ratio"),
        rounds="; ".join([rounds_text("mailprov", mail, " mailboxes/s"),
                          rounds_text("baseline", base, " rows/s")]),
        memory=memory,
    )]


# per-item time may grow this much from one size to the next (10x) before it counts as
# worse than linear: one slow round on a shared machine must not fail the target
LINEAR_TOLERANCE = 1.15


def growth_row(label: str, scenario: str, sizes: tuple[int, ...],
               seconds: list[float]) -> Row:
    per_item = [s / n for s, n in zip(seconds, sizes, strict=True)]
    steps = [b / a for a, b in itertools.pairwise(per_item)]
    worst = max(steps)
    exponents = [math.log(s2 / s1) / math.log(n2 / n1) for (s1, s2), (n1, n2) in
                 zip(itertools.pairwise(seconds), itertools.pairwise(sizes), strict=True)]
    return Row(
        "growth", scenario, label,
        figure=", ".join(f"{n:,}: {ms(1000 * s)}" for n, s in zip(sizes, seconds, strict=True)),
        baseline="—", ratio=worst,
        target=f"linear: time per mailbox grows ≤ {LINEAR_TOLERANCE:g}x per size step",
        misses=above(worst, LINEAR_TOLERANCE, "per-mailbox time grew", "x"),
        rounds="growth exponents " + ", ".join(f"{e:.2f}" for e in exponents),
    )


async def growth(ctx: Context) -> list[Row]:
    """list/mailbox time and bulk task time for domains of growing size."""
    sz = ctx.sizes
    t = await ctx.stack.target("growth", MAILPROV_BULK_MAX=str(max(sz.growth)))
    try:
        web = await t.start_web()
        worker = await t.start_worker()
        async with database(t) as conn:
            urls = []
            for n in sz.growth:
                domain = f"list{n}.bench.test"
                domain_id = await provision_domain(ctx, t, conn, domain)
                await conn.copy_records_to_table(
                    "mailboxes", columns=baselines.MAILBOX_COLUMNS,
                    records=[(domain_id, t.user_id, local, f"{local}@{domain}", hashed, None,
                              1, None) for local, hashed in baselines.prehashed(n, seed=n)])
                urls.append(t.api(f"list/mailbox?key={t.key}&caller_id={t.user_id}"
                                  f"&domain={domain}"))
            # one request at a time, sizes in turn; noise only ever adds, so the fastest
            # of each size is the closest to its cost
            timings: dict[int, list[float]] = {n: [] for n in sz.growth}
            async with recording(ctx.profile_dir, "growth-list-web", web.pid):
                for _ in range(sz.list_requests):
                    for n, url in zip(sz.growth, urls, strict=True):
                        began = time.perf_counter()
                        async with ctx.session.get(url) as r:
                            listed = len((await r.json())["results"])
                        timings[n].append(time.perf_counter() - began)
                        if listed != n:
                            raise RuntimeError(f"list/mailbox listed {listed} of {n}")
            listing = [min(timings[n]) for n in sz.growth]
            # sizes in turn, round after round: drift on a shared machine hits them all
            tries: dict[int, list[float]] = {n: [] for n in sz.growth}
            for attempt in range(sz.growth_rounds):
                for n in sz.growth:
                    domain = f"bulk{n}-{attempt}.bench.test"
                    await provision_domain(ctx, t, conn, domain)
                    after = await last_task_id(conn)
                    profiled = attempt == 0 and n == max(sz.growth)
                    async with recording(ctx.profile_dir if profiled else None,
                                         "growth-bulk-worker", worker.pid):
                        began = time.time()
                        await post(ctx, t.api("create/mailbox/bulk"), {
                            "Email_fullname": "g", "single_bulk": "bulk", "Domain": domain,
                            "Params": {"count": n, "password_hash": password_hash()},
                            "key": t.key})
                        (task,) = await wait_tasks(conn, after, 1)
                    tries[n].append(task["finished"] - began)
            bulk = [min(tries[n]) for n in sz.growth]
            memory = await peaks(web, worker)
    finally:
        await t.stop_all()
    list_row = growth_row("growth, list", "growth: list/mailbox for a domain of n mailboxes, "
                          f"fastest of {sz.list_requests}", sz.growth, listing)
    bulk_row = growth_row("growth, bulk", "growth: one bulk task of n mailboxes (password_hash "
                          f"given), POST → finished, best of {sz.growth_rounds}",
                          sz.growth, bulk)
    bulk_row.rounds += "; every run: " + ", ".join(
        f"{n:,}: " + " / ".join(ms(1000 * x) for x in tries[n]) for n in sz.growth)
    bulk_row.memory = memory
    return [list_row, bulk_row]


async def bulk(ctx: Context) -> list[Row]:
    """Both bulk scenarios."""
    return await bulk_hashed(ctx) + await bulk_prehashed(ctx)


PAGE_SIZE = 100


async def _fastest(ctx: Context, url: str, headers: dict[str, str], times: int) -> tuple[
        float, dict[str, Any]]:
    """The fastest of `times` GETs of `url` (noise only ever adds), and its answer."""
    best, answer = math.inf, {}
    for _ in range(times):
        began = time.perf_counter()
        async with ctx.session.get(url, headers=headers) as r:
            answer = await r.json()
            if r.status != 200:
                raise RuntimeError(f"GET {url}: {r.status} {answer}")
        best = min(best, time.perf_counter() - began)
    return best, answer


async def _accepted(ctx: Context, method: str, url: str, headers: dict[str, str],
                    body: dict[str, Any]) -> int:
    """A resource API write; its task id."""
    async with ctx.session.request(method, url, json=body, headers=headers) as r:
        answer = await r.json()
        if r.status != 202:
            raise RuntimeError(f"{method} {url}: {r.status} {answer}")
    return int(answer["task_id"])


async def lifecycle(ctx: Context) -> list[Row]:
    """A domain of 10,000 mailboxes: pages from the start, the middle and the end; 1,000
    changes; a bulk delete and restore of 1,000. Each beside a baseline of the same run."""
    sz = ctx.sizes
    n, size = sz.life_mailboxes, PAGE_SIZE
    domain = "life.bench.test"
    t = await ctx.stack.target("lifecycle", MAILPROV_BULK_MAX=str(n))
    bearer = {"Authorization": f"Bearer {t.key}"}
    try:
        web = await t.start_web()
        worker = await t.start_worker()
        async with database(t) as conn:
            await provision_domain(ctx, t, conn, domain)
            after = await last_task_id(conn)
            await post(ctx, t.api("create/mailbox/bulk"), {
                "Email_fullname": "m", "single_bulk": "bulk", "Domain": domain,
                "Params": {"count": n, "password_hash": password_hash(), "quota_mb": 1},
                "key": t.key})
            await wait_tasks(conn, after, 1)
            # what a reader of these pages has: the visibility map written by a vacuum
            await conn.execute("VACUUM ANALYZE mailboxes")

            # pages, one request at a time: first, middle and last by number, then the
            # middle's `next` link (a cursor)
            last = -(-n // size)
            page = t.api(f"mailboxes?filter%5Bdomain%5D={domain}&page%5Bsize%5D={size}"
                         "&page%5Bnumber%5D=")
            times = {}
            answers = {}
            async with recording(ctx.profile_dir, "lifecycle-pages-web", web.pid):
                for _ in range(sz.list_requests):
                    for name, number in (("first", 1), ("middle", last // 2), ("last", last)):
                        took, answers[name] = await _fastest(ctx, f"{page}{number}", bearer, 1)
                        times[name] = min(times.get(name, math.inf), took)
                took, _ = await _fastest(ctx, answers["middle"]["links"]["next"], bearer,
                                         sz.list_requests)
                times["next link"] = took
            if answers["last"]["meta"]["total"] != n or len(answers["first"]["data"]) != size:
                raise RuntimeError(f"pages: {answers['last']['meta']}")

            # 1,000 changes through PUT /mailboxes/{email}, one task each, vs as many
            # single-mailbox creates through POST /mailboxes: the same path of request,
            # task and job
            count = sz.life_updates

            async def updates() -> float:
                began_id = await last_task_id(conn)
                began = time.time()
                sent = await drive(t.api(f"mailboxes/m{PLACEHOLDER}@{domain}"), method="PUT",
                                   body=json.dumps({"quota": 2}), headers=bearer, accept=202,
                                   connections=16, count=count, start=1)
                if sent["ok"] != count:
                    raise RuntimeError(f"updates: {sent}")
                rows = await wait_tasks(conn, began_id, count)
                return count / (max(r["finished"] for r in rows) - began)

            async def creates() -> float:
                began_id = await last_task_id(conn)
                began = time.time()
                sent = await drive(t.api("mailboxes"), method="POST", body=json.dumps({
                    "domain": domain, "local_part": f"new{PLACEHOLDER}",
                    "password_hash": password_hash()}), headers=bearer, accept=202,
                    connections=16, count=count, start=next(_numbers))
                if sent["ok"] != count:
                    raise RuntimeError(f"creates: {sent}")
                rows = await wait_tasks(conn, began_id, count)
                return count / (max(r["finished"] for r in rows) - began)

            async with recording(ctx.profile_dir, "lifecycle-updates-worker", worker.pid):
                (base_rate,), (update_rate,) = await alternate(1, creates, updates)
            changed = await conn.fetchval("SELECT count(*) FROM mailboxes WHERE quota_mb = 2")
            if changed != count:
                raise RuntimeError(f"updates changed {changed} of {count} mailboxes")

            # a bulk delete and a bulk restore of 1,000, vs a bulk create of 1,000 (the
            # same size of task through the MailAPI, password_hash given)
            emails = [f"m{i}@{domain}" for i in range(1, sz.life_bulk + 1)]

            async def timed(submit: Callable[[], Awaitable[int]]) -> float:
                began_id = await last_task_id(conn)
                began = time.time()
                await submit()
                (task,) = await wait_tasks(conn, began_id, 1)
                return task["finished"] - began

            bulk_url = t.api("mailboxes/bulk")
            create_s = await timed(lambda: post(ctx, t.api("create/mailbox/bulk"), {
                "Email_fullname": "b", "single_bulk": "bulk", "Domain": domain,
                "Params": {"count": sz.life_bulk, "password_hash": password_hash()},
                "key": t.key}))
            delete_s = await timed(lambda: _accepted(ctx, "POST", bulk_url, bearer,
                                                     {"action": "delete", "emails": emails}))
            gone = await conn.fetchval(
                "SELECT count(*) FROM mailboxes WHERE deleted_at IS NOT NULL")
            restore_s = await timed(lambda: _accepted(ctx, "POST", bulk_url, bearer,
                                                      {"action": "restore", "emails": emails}))
            live, counted = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM mailboxes WHERE deleted_at IS NULL), "
                "mailbox_count FROM domains WHERE name = $1", domain)
            if gone != sz.life_bulk or live != counted:
                raise RuntimeError(f"bulk: {gone} deleted, {live} live, counter {counted}")
            memory = await peaks(web, worker)
    finally:
        await t.stop_all()

    page_ratio = times["last"] / times["first"]
    pages = Row(
        "lifecycle", f"lifecycle, pages: GET /mailboxes?filter[domain] of a domain of "
                     f"{n:,} mailboxes, page[size]={size}, fastest of {sz.list_requests}",
        figure=f"last (page {last}) {ms(1000 * times['last'])}, middle (page {last // 2}) "
               f"{ms(1000 * times['middle'])}, the middle's next link "
               f"{ms(1000 * times['next link'])}",
        baseline=f"first page {ms(1000 * times['first'])}",
        ratio=page_ratio, target="last page ≤ 2 x first page",
        misses=above(page_ratio, 2.0, "last/first"),
        rounds=f"middle/first {times['middle'] / times['first']:.2f}, next link/first "
               f"{times['next link'] / times['first']:.2f}")
    update_ratio = update_rate / base_rate
    changes = Row(
        "lifecycle", f"lifecycle, updates: {count:,} PUT /mailboxes/{{email}} (quota), one "
                     "task each, 16 connections, POST → all finished",
        figure=rate(update_rate, " changes/s"),
        baseline=f"{rate(base_rate, ' creates/s')} ({count:,} POST /mailboxes with "
                 "password_hash, the same way)",
        ratio=update_ratio, target="≥ 0.5 x baseline",
        misses=below(update_ratio, 0.5, "ratio"), memory=memory)
    slower = max(delete_s, restore_s)
    bulk_ratio = create_s / slower
    actions = Row(
        "lifecycle", f"lifecycle, bulk: POST /mailboxes/bulk delete, then restore, of "
                     f"{sz.life_bulk:,} mailboxes (one task each), POST → finished",
        figure=f"delete {ms(1000 * delete_s)}, restore {ms(1000 * restore_s)}",
        baseline=f"{ms(1000 * create_s)} (a bulk create of {sz.life_bulk:,}, password_hash "
                 "given)",
        ratio=bulk_ratio, target="the slower ≥ 0.5 x baseline's speed",
        misses=below(bulk_ratio, 0.5, "ratio"))
    return [pages, changes, actions]


# numbers for the creates' local parts, apart from every other scenario's
_numbers = itertools.count(10**6, 10**6)


SCENARIOS: dict[str, Callable[[Context], Awaitable[list[Row]]]] = {
    "enqueue": enqueue,
    "poll": poll,
    "latency": latency,
    "worker": worker,
    "bulk": bulk,
    "growth": growth,
    "lifecycle": lifecycle,
}
