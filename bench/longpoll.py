"""`python -m bench longpoll`: requests held by long polling (issue 15).

- waiting: `waiters` get/task polls with `wait=60` held at once by one web process. While
  they wait, the process must stay idle (its CPU over a window no more than 2 % of a core
  above the same window with nothing waiting) and hold less than 50 MB more resident
  memory than before they came. Beside it: the same process idle.
- finish → heard: tasks finished one at a time (an UPDATE to `completed`, committed, as
  the worker's last chunk does; the `tasks_notify` trigger announces it) while all the
  polls wait; from just before each UPDATE to its poll's answer arriving, p99 under 50 ms.
  Beside it, the floor: a bare asyncpg LISTEN in this process hearing the same NOTIFYs.

The tasks are seeded straight into the scenario's database (no worker runs: nothing else
moves them), and the client is this process, on loopback, one connection per poll.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from bench.load import percentile
from bench.scenarios import Context, Row, above, database, ms
from bench.servers import Target, cpu_seconds

CPU_LIMIT_PCT = 2.0
MEMORY_LIMIT_MB = 50.0
HEARD_LIMIT_MS = 50.0
WAIT_S = 60
ARRIVING = 100


def rss(pid: int) -> int:
    """Resident memory of a process now, in bytes (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def _cpu_pct(pid: int, seconds: float) -> float:
    """The process's CPU over `seconds`, in % of one core."""
    before = cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - before) * 100 / seconds


async def longpoll(ctx: Context) -> list[Row]:
    sz = ctx.sizes
    waiters, finishes = sz.waiters, min(sz.waiters, sz.finishes)
    t = await ctx.stack.target("longpoll")
    heard: dict[int, float] = {}
    bare: dict[int, float] = {}
    statuses: list[int] = []
    try:
        web = await t.start_web()
        async with database(t) as conn:
            ids = [r["id"] for r in await conn.fetch(
                "INSERT INTO tasks (account_id, type, domain, payload, progress_total) "
                "SELECT $1, 'mailbox_single', 'longpoll.bench.test', '{}', 1 "
                "FROM generate_series(1, $2) RETURNING id", t.user_id, waiters)]
            # the web process settled (its pools open, a first request served)
            async with ctx.session.get(t.api(f"get/task?key={t.key}&task_id={ids[0]}")) as r:
                await r.read()
            window = max(1.0, sz.run_s)
            idle_rss = rss(web.pid)
            idle_cpu = await _cpu_pct(web.pid, window)

            connector = aiohttp.TCPConnector(limit=0)
            timeout = aiohttp.ClientTimeout(total=WAIT_S + 60)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

                async def poll(task_id: int) -> None:
                    url = t.api(f"get/task?key={t.key}&task_id={task_id}&wait={WAIT_S}")
                    async with session.get(url) as r:
                        await r.read()
                        heard[task_id] = time.time()
                        statuses.append(r.status)

                # arriving 100 at a time, each batch held before the next: 5,000 clients
                # do not all connect in the same millisecond, and a burst that does costs
                # memory of its own (a Redis connection per request in flight), which is
                # not what this measures
                polls: list[asyncio.Task[None]] = []
                for start in range(0, waiters, ARRIVING):
                    polls += [asyncio.create_task(poll(i)) for i in ids[start:start + ARRIVING]]
                    await asyncio.sleep(0.05)
                while True:
                    if await _held(ctx, t) >= waiters:
                        break
                    await asyncio.sleep(0.2)
                await asyncio.sleep(0.5)  # the burst of arrivals settled
                waiting_rss = rss(web.pid)
                waiting_cpu = await _cpu_pct(web.pid, window)

                listener = await _bare_listener(t.database_url, bare)
                try:
                    started: dict[int, float] = {}
                    for task_id in ids[:finishes]:
                        started[task_id] = time.time()
                        await conn.execute(
                            "UPDATE tasks SET status = 'completed', finished_at = now(), "
                            "progress_done = progress_total WHERE id = $1", task_id)
                        await asyncio.sleep(0.01)
                    # the rest, at once: the run ends
                    await conn.execute("UPDATE tasks SET status = 'completed', "
                                       "finished_at = now() WHERE id = ANY($1::bigint[])",
                                       ids[finishes:])
                    await asyncio.wait_for(asyncio.gather(*polls), 120)
                finally:
                    await listener.close()
    finally:
        await t.stop_all()
    failed = [s for s in statuses if s != 200]
    latencies = [(heard[i] - started[i]) * 1000 for i in started]
    floors = [(bare[i] - started[i]) * 1000 for i in started if i in bare]
    extra_mb = (waiting_rss - idle_rss) / 2**20
    extra_cpu = waiting_cpu - idle_cpu
    misses = (above(extra_cpu, CPU_LIMIT_PCT, "CPU over idle", " %")
              + above(extra_mb, MEMORY_LIMIT_MB, "extra memory", " MB"))
    if failed:
        misses.append(f"{len(failed)} polls answered other than 200")
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    f50, f99 = percentile(floors, 50), percentile(floors, 99)
    return [
        Row("longpoll", f"longpoll, held: {waiters:,} polls waiting in 1 web process",
            figure=f"CPU {waiting_cpu:.1f} % of a core, RSS {waiting_rss / 2**20:.0f} MB "
                   f"(+{extra_mb:.1f} MB)",
            baseline=f"the same process idle: CPU {idle_cpu:.1f} %, RSS "
                     f"{idle_rss / 2**20:.0f} MB",
            ratio=waiting_rss / idle_rss,
            target=f"CPU ≤ idle + {CPU_LIMIT_PCT:g} %, < +{MEMORY_LIMIT_MB:g} MB",
            misses=misses),
        Row("longpoll", f"longpoll, heard: task finished → its held poll answered, "
                        f"{finishes:,} of {waiters:,}",
            figure=f"p50 {ms(p50)}, p99 {ms(p99)}",
            baseline=f"p50 {ms(f50)}, p99 {ms(f99)} (a bare LISTEN hearing the NOTIFY)",
            ratio=p99 / f99 if f99 else None,
            target=f"p99 < {HEARD_LIMIT_MS:g} ms",
            misses=above(p99, HEARD_LIMIT_MS, "p99", " ms")),
    ]


async def _held(ctx: Context, t: Target) -> int:
    """Polls the web process holds now (its metrics say)."""
    async with ctx.session.get(f"http://127.0.0.1:{t.web_port}/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith("mailprov_polls_waiting "):
            return int(float(line.split()[1]))
    raise RuntimeError("/metrics has no mailprov_polls_waiting")


async def _bare_listener(dsn: str, heard: dict[int, float]) -> Any:
    import asyncpg

    from service.core.waiters import CHANNEL

    conn = await asyncpg.connect(dsn)

    def on_notify(conn: object, pid: int, channel: str, payload: str) -> None:
        task_id, status, _ = payload.split(":")
        if status == "completed":
            heard.setdefault(int(task_id), time.time())

    await conn.add_listener(CHANNEL, on_notify)
    return conn


LONGPOLL = {"longpoll": longpoll}
