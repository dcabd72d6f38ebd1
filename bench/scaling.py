"""The scaling scenario: do worker processes add up?

Single-mailbox tasks (password_hash given, so no hashing) are queued while no worker runs;
then 1, 2 and 4 `mailprov worker` processes start together and drain the queue. The rate
is completions per second from the moment the last of them is up (its health key
written) to the last completion, from the tasks' `finished_at`.

Twice: with the tasks spread over many domains (no two tasks wait on one domain's lock),
and with all of them in one domain (every task takes that domain's row lock). Beside each
rate, the CPU each process used over the drain, in cores: on a machine with fewer cores
than processes, the sum shows where the limit is.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Any

from bench.scenarios import (
    Context,
    Row,
    database,
    last_task_id,
    password_hash,
    post,
    rate,
    spread_rate,
    wait_tasks,
)
from bench.servers import Target, cpu_seconds

# the fill's concurrent POSTs
FILL_CONNECTIONS = 32
# each worker's jobs at once: 4 workers x (10 + 2) pool connections stay well inside the
# embedded Postgres' 100
MAX_JOBS = "10"


def _domain(i: int) -> str:
    return f"d{i}.scaling.bench.test"


async def _fill(ctx: Context, t: Target, domains: int, count: int,
                numbers: itertools.count[int]) -> None:
    hashed = password_hash()
    queue = asyncio.Queue[int]()
    for i in range(count):
        queue.put_nowait(i)

    async def sender() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            await post(ctx, t.api("create/mailbox/single"), {
                "Email_fullname": f"u{next(numbers)}", "single_bulk": "single",
                "Domain": _domain(i % domains), "Params": {"password_hash": hashed},
                "key": t.key})

    await asyncio.gather(*(sender() for _ in range(FILL_CONNECTIONS)))


async def _drain(ctx: Context, t: Target, workers: int, domains: int,
                 numbers: itertools.count[int]) -> tuple[float, dict[str, float]]:
    """Fill the queue, start `workers` processes, wait for every task; the rate, and the
    cores each process used meanwhile."""
    count = ctx.sizes.scaling_tasks
    async with database(t) as conn:
        after = await last_task_id(conn)
        await _fill(ctx, t, domains, count, numbers)
        procs = await asyncio.gather(*(t.start_worker() for _ in range(workers)))
        pids = {f"worker {n + 1}": p.pid for n, p in enumerate(procs)}
        pids.update(ctx.stack.server_pids())
        began, wall = time.time(), time.monotonic()
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        waits: list[int] = []
        sampler = asyncio.create_task(_lock_waits(t, waits))
        try:
            rows = await wait_tasks(conn, after, count)
        finally:
            sampler.cancel()
        used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        wall = time.monotonic() - wall
    await asyncio.gather(*(p.stop() for p in procs))
    late = sorted(r["finished"] for r in rows if r["finished"] >= began)
    cores = {k: v / wall for k, v in used.items()}
    cores["waiting"] = sum(waits) / max(1, len(waits))
    if len(late) < count // 2:
        # --quick's few tasks are gone before the last worker is up: its figure means
        # nothing anyway, so it is the rate over every completion
        return spread_rate([r["finished"] for r in rows]), cores
    return (len(late) - 1) / (late[-1] - began), cores


async def _lock_waits(t: Target, samples: list[int]) -> None:
    """Every 20 ms, how many of the database's sessions wait for a lock (a domain's row,
    a task's): how much the workers queue on each other."""
    async with database(t) as conn:
        while True:
            samples.append(await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"))
            await asyncio.sleep(0.02)


def _cores(rate_: float, split: dict[str, float]) -> str:
    """The cores each process kept busy, and what that makes per task: the sum bounds the
    rate the machine's cores allow."""
    workers = [v for k, v in split.items() if k.startswith("worker")]
    per_task = 1000 * sum(v for k, v in split.items() if k != "waiting") / rate_
    cores = os.cpu_count() or 1
    # --quick's drains can be shorter than the CPU clock's tick
    allow = rate(cores * 1000 / per_task, " tasks/s") if per_task > 0 else "—"
    return (f"workers {' + '.join(f'{v:.2f}' for v in workers)}, "
            f"Postgres {split['postgres']:.2f}, Redis {split['redis']:.2f} cores "
            f"({per_task:.1f} ms CPU per task: {cores} cores allow {allow}); sessions "
            f"waiting for a lock: {split['waiting']:.1f} on average")


async def scaling(ctx: Context) -> list[Row]:
    sz = ctx.sizes
    counts, domains = sz.scaling_workers, sz.scaling_domains
    t = await ctx.stack.target("scaling", MAILPROV_WORKER_MAX_JOBS=MAX_JOBS,
                               MAILPROV_DKIM_ALGORITHM="ed25519")
    numbers = itertools.count()
    spread: dict[int, tuple[float, dict[str, float]]] = {}
    try:
        await t.start_web()
        async with database(t) as conn:
            first = await t.start_worker()
            after = await last_task_id(conn)
            for i in range(domains):
                await post(ctx, t.api("create/domain"), {
                    "Domain": _domain(i), "key": t.key, "Params": {
                        "quota_mb": 2**31 - 1, "max_mailboxes": 10**6,
                        "default_mailbox_quota_mb": 1}})
            await wait_tasks(conn, after, domains, limit_s=120)
            await first.stop()
        for workers in counts:
            spread[workers] = await _drain(ctx, t, workers, domains, numbers)
        most = counts[-1]
        one = await _drain(ctx, t, most, 1, numbers)
    finally:
        await t.stop_all()
    single = spread[counts[0]][0]
    figure = ", ".join(f"{w}: {rate(r, ' tasks/s')}" + (f" ({r / single:.2f}x)" if w > 1 else "")
                       for w, (r, _) in spread.items())
    grown = spread[most][0] / single
    one_ratio = one[0] / spread[most][0]
    split_text = "; ".join(f"{w} worker{'s' if w > 1 else ''}: {_cores(r, s)}"
                           for w, (r, s) in spread.items())
    n = sz.scaling_tasks
    return [
        Row("scaling", f"scaling, many domains: single-mailbox tasks (password_hash given) "
                       f"per second, {n} queued over {domains} domains, "
                       f"{'/'.join(map(str, counts))} worker processes",
            figure=figure, baseline=f"1 worker: {rate(single, ' tasks/s')}", ratio=grown,
            target=f"{most} workers ≥ 1 worker (more only with cores to spare)",
            misses=[] if grown >= 1 else [f"{most} workers at {grown:.2f}x of 1"],
            rounds=f"CPU over the drain: {split_text}"),
        Row("scaling", f"scaling, one domain: the same, {n} tasks in one domain, "
                       f"{most} worker processes",
            figure=rate(one[0], " tasks/s"),
            baseline=f"{rate(spread[most][0], ' tasks/s')} ({most} workers, "
                     f"{domains} domains)",
            ratio=one_ratio, target=f"≥ 0.8 x {domains} domains",
            misses=[] if one_ratio >= 0.8 else [f"ratio {one_ratio:.2f} is under 0.8"],
            rounds=f"CPU over the drain: {_cores(*one)}"),
    ]


SCALING: dict[str, Any] = {"scaling": scaling}
