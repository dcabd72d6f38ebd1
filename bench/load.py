"""The load client: a separate OS process that sends HTTP requests to one URL on loopback.

    python -m bench.load --url URL [--method POST --body JSON] [--header 'Name: value']
                         --connections 64 (--duration S [--warmup S] | --count N [--rate R])

Closed loop (the default): `connections` senders, each sending its next request as soon as
the last one is answered, for `--duration` seconds after `--warmup` seconds whose answers
are not measured, or until `--count` requests are sent. Open loop (`--rate`): `--count`
requests started at a fixed rate whatever the answers do. `@N@` in the body and the URL is
replaced by a number unique to each request (from `--start` up), so every request can name
a new mailbox, or another one to change.

It prints one JSON object: requests per second of accepted answers, p50/p99/max latency of
those in milliseconds, the errors (any other status, or no answer at all), and, over the
whole run, the answers and the CPU seconds the client itself used. It runs on
uvloop when that is installed: the cheaper the client, the more CPU is left on a small
machine for the server under test.

The orchestrator calls `drive()`, which runs this module as a child process.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import resource
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp

PLACEHOLDER = "@N@"
ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (1..99) of `values`; the only value when there is one."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


class Recorder:
    """Latencies and statuses of the answers that complete inside the measured window."""

    def __init__(self, accept: int) -> None:
        self.accept = accept
        self.measure_from = 0.0
        self.latencies: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.answers = 0  # warm-up included, for costs per request over the whole run
        self.errors_all = 0  # warm-up included: "0 errors" means none at all
        self.error_sample = ""

    def record(self, status: int | str, began: float, ended: float, detail: str) -> None:
        ok = status == self.accept
        self.answers += 1
        if not ok:
            self.errors_all += 1
            self.error_sample = self.error_sample or f"{status}: {detail[:300]}"
        if ended >= self.measure_from:
            self.statuses[str(status)] += 1
            if ok:
                self.latencies.append((ended - began) * 1000)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    template = args.body
    numbers = itertools.count(args.start)
    recorder = Recorder(args.accept)
    headers = {"Content-Type": "application/json"} if template is not None else {}
    headers.update(h.split(": ", 1) for h in args.header)
    connector = aiohttp.TCPConnector(limit=args.connections, limit_per_host=args.connections)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     headers=headers) as session:

        async def send() -> None:
            number = str(next(numbers))
            data = template.replace(PLACEHOLDER, number).encode() \
                if template is not None else None
            began = time.perf_counter()
            detail = ""
            status: int | str
            try:
                async with session.request(args.method, args.url.replace(PLACEHOLDER, number),
                                           data=data) as response:
                    body = await response.read()
                    status = response.status
                    if status != args.accept:
                        detail = body.decode(errors="replace")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                status, detail = type(exc).__name__, str(exc)
            recorder.record(status, began, time.perf_counter(), detail)

        cpu_began = _cpu_seconds()
        began = time.perf_counter()
        if args.rate:
            recorder.measure_from = began
            await _open_loop(send, args.count, args.rate)
        else:
            recorder.measure_from = began + args.warmup if args.duration else began
            await _closed_loop(send, args.connections, args.count,
                               began + args.warmup + args.duration if args.duration else None)
        ended = time.perf_counter()
        cpu = _cpu_seconds() - cpu_began
    seconds = ended - recorder.measure_from
    lat = recorder.latencies
    return {
        "ok": len(lat),
        "errors": recorder.errors_all,
        "statuses": dict(recorder.statuses),
        "seconds": round(seconds, 3),
        "rps": round(len(lat) / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": round(percentile(lat, 50), 2),
        "p99_ms": round(percentile(lat, 99), 2),
        "max_ms": round(max(lat), 2) if lat else float("nan"),
        "error_sample": recorder.error_sample,
        "answers": recorder.answers,
        "cpu_s": round(cpu, 3),
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _closed_loop(send: Callable[[], Awaitable[None]], connections: int,
                       count: int | None, deadline: float | None) -> None:
    issued = itertools.count()

    async def sender() -> None:
        while True:
            if count is not None and next(issued) >= count:
                return
            if deadline is not None and time.perf_counter() >= deadline:
                return
            await send()

    await asyncio.gather(*(sender() for _ in range(connections)))


async def _open_loop(send: Callable[[], Coroutine[Any, Any, None]], count: int,
                     rate: float) -> None:
    began = time.perf_counter()
    pending: list[asyncio.Task[None]] = []
    for i in range(count):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(asyncio.create_task(send()))
    await asyncio.gather(*pending)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--method", default="GET")
    p.add_argument("--body", help=f"request body; {PLACEHOLDER} becomes a unique number")
    p.add_argument("--header", action="append", default=[], help="`Name: value`, again and again")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--duration", type=float, help="seconds to measure (closed loop)")
    p.add_argument("--warmup", type=float, default=0.0, help="seconds before measuring")
    p.add_argument("--count", type=int, help="requests to send in all")
    p.add_argument("--rate", type=float, help="requests per second (open loop, needs --count)")
    p.add_argument("--start", type=int, default=0, help=f"first {PLACEHOLDER} number")
    p.add_argument("--accept", type=int, default=200, help="the status that counts as success")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    return p


def main() -> None:
    args = parser().parse_args()
    if (args.duration is None) == (args.count is None):
        raise SystemExit("give exactly one of --duration and --count")
    if args.rate and args.count is None:
        raise SystemExit("--rate needs --count")
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    json.dump(result, sys.stdout)
    print()


async def drive(url: str, *, method: str = "GET", body: str | None = None,
                connections: int = 64, duration: float | None = None, warmup: float = 0.0,
                count: int | None = None, rate: float | None = None,
                start: int = 0, headers: dict[str, str] | None = None,
                accept: int = 200) -> dict[str, Any]:
    """Run the load client as a child process and return what it measured."""
    argv = [sys.executable, "-m", "bench.load", "--url", url, "--method", method,
            "--connections", str(connections), "--start", str(start),
            "--accept", str(accept)]
    for name, value in (headers or {}).items():
        argv += ["--header", f"{name}: {value}"]
    if body is not None:
        argv += ["--body", body]
    if duration is not None:
        argv += ["--duration", str(duration), "--warmup", str(warmup)]
    if count is not None:
        argv += ["--count", str(count)]
    if rate is not None:
        argv += ["--rate", str(rate)]
    proc = await asyncio.create_subprocess_exec(*argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"load client failed ({proc.returncode}): {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out)
    return result


if __name__ == "__main__":
    main()
