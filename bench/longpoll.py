"""`python -m bench longpoll`: requests held by long polling (issue 15).

- waiting: `waiters` get/task polls with `wait=60` held at once by one web process. While
  they wait, the process must stay idle (its CPU over a window no more than 2 % of a core
  above the same window with nothing waiting) and hold less than 50 MB more resident
  memory than before they came. Beside it: the same process idle, and the floor, a bare
  aiohttp handler holding as many requests on an event (bench/baselines.py hold-app):
  what aiohttp itself keeps per held request and connection.
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
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from bench.load import percentile
from bench.scenarios import Context, Row, above, database, ms
from bench.servers import Target, cpu_seconds, free_port

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

            floor_port = free_port()
            floor = await t.start_baseline("hold-app", port=floor_port)
            floor_url = f"http://127.0.0.1:{floor_port}"
            floor_idle = rss(floor.pid)
            async with _clients() as session:
                held = await _arrive(session, [f"{floor_url}/hold"] * waiters,
                                     lambda: _floor_held(ctx, floor_url), waiters)
                floor_rss = rss(floor.pid)
                async with ctx.session.post(f"{floor_url}/release") as r:
                    await r.read()
                await asyncio.wait_for(asyncio.gather(*held), 120)
            await floor.stop()

            async with _clients() as session:

                async def poll(task_id: int) -> None:
                    url = t.api(f"get/task?key={t.key}&task_id={task_id}&wait={WAIT_S}")
                    async with session.get(url) as r:
                        await r.read()
                        heard[task_id] = time.time()
                        statuses.append(r.status)

                polls = await _arrive(session, [poll(i) for i in ids],
                                      lambda: _held(ctx, t), waiters)
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
    floor_mb = (floor_rss - floor_idle) / 2**20
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
                     f"{idle_rss / 2**20:.0f} MB; the floor, a bare aiohttp handler holding "
                     f"{waiters:,} requests: +{floor_mb:.1f} MB",
            ratio=extra_mb / floor_mb if floor_mb > 0 else None,
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


def _clients() -> aiohttp.ClientSession:
    """A session with a connection per request and time for the longest wait."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                 timeout=aiohttp.ClientTimeout(total=WAIT_S + 60))


async def _arrive(session: aiohttp.ClientSession, requests: list[Any],
                  held: Callable[[], Awaitable[int]], count: int) -> list[asyncio.Task[Any]]:
    """Send `requests` (URLs to GET, or coroutines) ARRIVING at a time and return once the
    server says `count` are held. 5,000 clients do not all connect in the same
    millisecond, and a burst that does costs memory of its own (a Redis connection per
    request in flight), which is not what this measures."""

    async def get(url: str) -> None:
        async with session.get(url) as r:
            await r.read()

    tasks: list[asyncio.Task[Any]] = []
    for start in range(0, len(requests), ARRIVING):
        tasks += [asyncio.create_task(get(r) if isinstance(r, str) else r)
                  for r in requests[start:start + ARRIVING]]
        await asyncio.sleep(0.05)
    while True:  # the server is another process: asked, not awaited
        if await held() >= count:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)  # the burst of arrivals settled
    return tasks


async def _floor_held(ctx: Context, url: str) -> int:
    async with ctx.session.get(f"{url}/held") as r:
        return int((await r.json())["held"])


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
