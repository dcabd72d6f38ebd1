"""The bench's own Postgres and Redis, and the processes it measures.

A bench never touches the machine's shared services: `Stack` starts embedded Postgres and
Redis (service/embedded.py) on free ports in a temporary directory and removes it at the
end. Each scenario gets a `Target` of its own: a database migrated with `mailprov migrate`,
a Redis database number, an account and its key. Every process under test (mailprov web,
mailprov worker, the baselines) is a child process started with its own environment, the
way the Procfile starts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import psutil
import redis.asyncio as aioredis

from service.cli.embedded import EmbeddedServers, free_port, port_open
from service.core.accounts import create_account
from service.core.db import Database
from service.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CORES = os.cpu_count() or 1
# Rate limits would turn a load test into a test of the 429 path: far out of reach.
UNLIMITED = str(10**9)
BENCH_ENV = {
    "MAILPROV_HOST": "127.0.0.1",
    "MAILPROV_RATE_CREATE_DOMAIN": UNLIMITED,
    "MAILPROV_RATE_CREATE_MAILBOX_SINGLE": UNLIMITED,
    "MAILPROV_RATE_CREATE_MAILBOX_BULK": UNLIMITED,
    "MAILPROV_RATE_GET": UNLIMITED,
    "MAILPROV_RATE_WRITE": UNLIMITED,
    "MAILPROV_HASH_PROCESSES": str(CORES),
}
# Variables of the caller's shell that must not leak into a process under test
FOREIGN = ("DATABASE_URL", "REDIS_URL", "PORT")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
# The largest domain any scenario fills (growth's biggest bulk task)
DOMAIN_PARAMS = {"quota_mb": 2**31 - 1, "max_mailboxes": 10**6, "default_mailbox_quota_mb": 1}


def vm_hwm(pid: int) -> int:
    """Peak resident memory of a process in bytes (VmHWM), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """CPU (user + system) a process, its children and its reaped children have used."""
    try:
        proc = psutil.Process(pid)
        t = proc.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                total += c.user + c.system
    except psutil.Error:
        return 0.0
    return total


@dataclass
class Peak:
    """Peak memory of a process and of each of its children (a hashing pool)."""

    process: int
    children: list[int]


@dataclass
class Proc:
    """A child process under test, its output in a log file."""

    name: str
    popen: asyncio.subprocess.Process
    log_path: Path
    peak: Peak | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.returncode is None

    def measure_peak(self) -> Peak:
        """VmHWM of the process and its live children; kept for after it stops."""
        try:
            kids = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            kids = []
        peak = Peak(vm_hwm(self.pid), [vm_hwm(k.pid) for k in kids])
        if self.peak is None or peak.process >= self.peak.process:
            self.peak = peak
        return self.peak

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self) -> Peak:
        """SIGTERM (both aiohttp and arq shut down gracefully on it), then wait."""
        peak = self.measure_peak() if self.running else self.peak or Peak(0, [])
        if self.running:
            self.popen.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.popen.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                self.popen.kill()
                await self.popen.wait()
        return peak


@dataclass
class Target:
    """One scenario's world: its database, Redis database, account, and processes."""

    name: str
    dir: Path
    database_url: str
    redis_url: str
    user_id: int
    key: str
    env: dict[str, str]
    web_port: int = field(default_factory=free_port)
    procs: list[Proc] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        """The settings mailprov's processes read from `env`."""
        return Settings.from_env(self.env)

    def api(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web_port}/api/v1/{path}"

    async def start_web(self) -> Proc:
        """`mailprov serve`, once it accepts connections."""
        proc = await self._spawn("web", ["-m", "service.cli", "serve"],
                                 {"PORT": str(self.web_port)})
        await _until(proc, lambda: _port_ready(self.web_port))
        return proc

    async def start_worker(self) -> Proc:
        """`mailprov worker`, once it has written its first health record."""
        return await self._start_worker("worker", ["-m", "service.cli", "worker"],
                                        self.settings.queue_name)

    async def start_baseline(self, kind: str, port: int | None = None,
                             **env: str) -> Proc:
        """A baseline process from bench/baselines.py (an app when `port` is given)."""
        from bench.baselines import NOOP_QUEUE

        argv = ["-m", "bench.baselines", kind]
        if kind == "noop-worker":
            return await self._start_worker(kind, argv, NOOP_QUEUE)
        proc = await self._spawn(kind, argv, {**env, **({"PORT": str(port)} if port else {})})
        if port:
            await _until(proc, lambda: _port_ready(port))
        return proc

    async def run(self, *argv: str, **env: str) -> str:
        """Run a short child to completion (a baseline measurement); its stdout."""
        child = await asyncio.create_subprocess_exec(
            sys.executable, *argv, cwd=ROOT, env={**self.env, **env},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({child.returncode}):\n"
                               f"{err.decode(errors='replace')[-3000:]}")
        return out.decode()

    async def fresh_limits(self) -> None:
        """Drop the account's rate-limit logs. With the bench's limits out of reach, each
        admitted request stays in its bucket's sorted set for the hour, and a set grown by
        earlier rounds makes every later count a little dearer: each round starts alike."""
        redis = aioredis.Redis.from_url(self.redis_url)
        try:
            keys = [key async for key in redis.scan_iter(match=f"{self.settings.redis_prefix}rl:*")]
            if keys:
                await redis.delete(*keys)
        finally:
            await redis.aclose()

    async def stop_all(self) -> None:
        for proc in self.procs:
            await proc.stop()

    async def _start_worker(self, name: str, argv: list[str], queue_name: str) -> Proc:
        # arq's health key is `<queue>:health-check`; mailprov's has `:<host>:<pid>:<n>`
        # after it. The plain one may be left by a worker stopped a moment ago.
        default_key = f"{queue_name}:health-check"
        redis = aioredis.Redis.from_url(self.redis_url)
        try:
            await redis.delete(default_key)
            proc = await self._spawn(name, argv, {})

            async def healthy() -> bool:
                async for key in redis.scan_iter(match=f"{default_key}*"):
                    if key.decode() == default_key or f":{proc.pid}:" in key.decode():
                        return True
                return False

            await _until(proc, healthy)
        finally:
            await redis.aclose()
        return proc

    async def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        number = sum(1 for p in self.procs if p.name == name)
        log_path = self.dir / f"{self.name}-{name}-{number}.log"
        with log_path.open("wb") as log_file:
            popen = await asyncio.create_subprocess_exec(
                sys.executable, *argv, cwd=ROOT, env={**self.env, **env},
                stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file)
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc


async def _port_ready(port: int) -> bool:
    return port_open("127.0.0.1", port)


async def _until(proc: Proc, ready: Callable[[], Awaitable[bool]]) -> None:
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
    while not await ready():
        if not proc.running:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n"
                               f"{proc.log_tail()}")
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"{proc.name} not ready in {START_TIMEOUT_S:.0f}s:\n"
                               f"{proc.log_tail()}")
        await asyncio.sleep(0.05)


class Stack:
    """Embedded Postgres and Redis for one bench run, in a temporary directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mailprov-bench-"))
        # Postgres runs as `nobody` when we are root: it must be able to reach its data
        self.dir.chmod(0o711)
        self.servers = EmbeddedServers(self.dir / "servers")
        self.targets: list[Target] = []
        # one Redis database per scenario: arq's job keys (arq:job:<task id>) are global
        # to a database, and task ids restart at 1 in each scenario's Postgres database
        self._redis_dbs = itertools.count(1)

    async def __aenter__(self) -> Stack:
        await asyncio.to_thread(self.servers.start)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        for target in self.targets:
            await target.stop_all()
        await asyncio.to_thread(self.servers.stop)
        shutil.rmtree(self.dir, ignore_errors=True)

    async def target(self, name: str, **env: str) -> Target:
        """A fresh database (`mailprov migrate`) and Redis database, with an account."""
        database = "bench_" + name.replace("-", "_")
        parts = urlsplit(self.servers.database_url)
        database_url = urlunsplit(parts._replace(path=f"/{database}"))
        redis_url = f"redis://127.0.0.1:{self.servers.redis_port}/{next(self._redis_dbs)}"
        base = {k: v for k, v in os.environ.items() if k not in FOREIGN}
        # the secret is not in BENCH_ENV, which the report prints
        full_env = {**base, **BENCH_ENV, "MAILPROV_SECRET_KEY": secrets.token_urlsafe(32),
                    **env, "DATABASE_URL": database_url, "REDIS_URL": redis_url}
        migrate = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service.cli", "migrate", cwd=ROOT, env=full_env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await migrate.communicate()
        if migrate.returncode != 0:
            raise RuntimeError(f"mailprov migrate failed:\n{out.decode()[-3000:]}")
        async with Database.opened(database_url, size=1) as db:
            user_id, key = await create_account(db, f"bench {name}")
        target = Target(name, self.dir, database_url, redis_url, user_id, key, full_env)
        self.targets.append(target)
        return target

    def server_pids(self) -> dict[str, int]:
        """The Postgres postmaster's and redis-server's pids, from their pid files."""
        return {
            "postgres": int((self.servers.pg_dir / "postmaster.pid").read_text().split()[0]),
            "redis": int((self.servers.redis_dir / "redis.pid").read_text().split()[0]),
        }

    async def versions(self) -> dict[str, str]:
        """Postgres' and Redis' versions, for the report."""
        import asyncpg

        conn = await asyncpg.connect(self.servers.database_url)
        try:
            postgres = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
        redis = aioredis.Redis.from_url(self.servers.redis_url)
        try:
            info = await redis.info("server")
        finally:
            await redis.aclose()
        return {"postgres": str(postgres), "redis": str(info["redis_version"])}


async def create_domain(session: aiohttp.ClientSession, target: Target, name: str) -> int:
    """A domain big enough for any scenario, through the API; its task id."""
    async with session.post(target.api("create/domain"),
                            json={"Domain": name, "Params": DOMAIN_PARAMS,
                                  "key": target.key}) as r:
        body = await r.json()
        if r.status != 200:
            raise RuntimeError(f"create/domain {name}: {r.status} {body}")
    return int(body["task_id"])
