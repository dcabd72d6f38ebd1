"""`python -m bench SCENARIO... [--quick] [--out FILE]`: all, or any of enqueue, poll, latency,
worker, bulk, growth, lifecycle, front, longpoll, mailstack and scaling, in one run.

Starts its own Postgres and Redis (embedded, on free loopback ports, in a temporary
directory), runs mailprov's web and worker as separate processes against them, measures
each scenario side by side with its in-run baseline, and writes the table into
bench/RESULTS.md. `--quick` runs every scenario with tiny sizes: a smoke test of the bench
code, whose figures mean nothing. `--profile DIR` records py-spy profiles of web and worker
(see bench/profile.py).

Exit status: 0 when every scenario ran (whether or not its target held), 1 when one broke.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
import traceback
from pathlib import Path

import aiohttp

from bench import report
from bench.front import FRONT
from bench.longpoll import LONGPOLL
from bench.mailstack import MAILSTACK
from bench.scaling import SCALING
from bench.scenarios import FULL, QUICK, SCENARIOS, Context, Row
from bench.servers import BENCH_ENV, Stack

DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS.md"
ALL = {**SCENARIOS, **FRONT, **LONGPOLL, **MAILSTACK, **SCALING}


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


async def run(names: list[str], quick: bool, out: Path, profile_dir: Path | None,
              command: str) -> int:
    began = time.monotonic()
    sizes = QUICK if quick else FULL
    rows: list[Row] = []
    broken = 0
    async with Stack() as stack, aiohttp.ClientSession() as session:
        versions = await stack.versions()
        say(f"Postgres {versions['postgres']} and Redis {versions['redis']} in {stack.dir}")
        ctx = Context(stack, sizes, session, profile_dir)
        for name in names:
            say(f"{name} ...")
            started = time.monotonic()
            try:
                found = await ALL[name](ctx)
            except Exception as exc:
                broken += 1
                traceback.print_exc()
                found = [Row(name, name, error=f"{type(exc).__name__}: {exc}"[:500])]
            for row in found:
                verdict = "error" if row.error else ("met" if row.passed else "MISSED")
                say(f"  {row.scenario}: {row.figure or row.error} | baseline {row.baseline}"
                    f" | ratio {row.ratio if row.ratio is None else round(row.ratio, 2)}"
                    f" | {verdict} {'; '.join(row.misses)}")
            say(f"{name} took {time.monotonic() - started:.0f} s")
            rows += found
    settings = ", ".join(f"{k}={v}" for k, v in BENCH_ENV.items())
    report.write(out, rows, {
        "command": command, "date": report.now(), "seconds": time.monotonic() - began,
        "machine": {**report.machine(), **versions}, "settings": settings + "; others default",
        "sizes": ", ".join(f"{f.name}={getattr(sizes, f.name)}"
                           for f in dataclasses.fields(sizes)),
        "profiled": profile_dir is not None,
    })
    say(f"wrote {out} in {time.monotonic() - began:.0f} s")
    return 1 if broken else 0


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", nargs="+", choices=["all", *ALL])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="record py-spy profiles of web and worker into DIR")
    args = p.parse_args()
    names = list(ALL) if "all" in args.scenario else list(dict.fromkeys(args.scenario))
    command = "python -m bench " + " ".join(sys.argv[1:])
    raise SystemExit(asyncio.run(run(names, args.quick, args.out, args.profile, command)))


if __name__ == "__main__":
    main()
