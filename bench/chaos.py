"""Fault injection: break things under load, then prove nothing accepted was lost.

    python bench/chaos.py [--tasks 2000] [--seed 1] [--quick] [--json] [--keep]

It starts Postgres and Redis of its own (service/embedded.py, free ports, a temporary
directory), `mailprov migrate`, two accounts, then `mailprov serve` and two `mailprov worker`
processes, each a separate OS process as the Procfile would run them. An HTTP client pushes
a paced, mixed load of create requests (domains, sub-domains, single mailboxes, bulk
mailboxes in both forms), every one with an Idempotency-Key and retried under that key
until it gets an answer; some are sent twice on purpose, at once or later, and a few reuse
a key with another body. Meanwhile, at seeded random moments, it injects faults: kill -9
of a worker and of the web process (each restarted at once, as a platform would), a Redis
restart with its data flushed, a Postgres restart, a SIGTERM to a worker. A fault that can
cut off jobs waits (5 s at most) until a task is running.

Then it checks, in Postgres:
- every accepted task id exists and ends `completed` or `failed` within 60 s of the last
  fault (otherwise it is lost or stuck);
- the mailboxes and domains are exactly those the tasks asked for, each made once, by the
  task that asked (a duplicate run or a second task for one request would show);
- each idempotency key gave one task id, and a key reused with another body was refused.

It prints a report (or JSON with --json) and exits 1 when anything was lost, duplicated or
stuck, a fault type was not injected, or tasks took longer than 60 s after the last fault.

Redis and Postgres are restarted through their own commands (`SHUTDOWN NOSAVE`, `pg_ctl
stop -m fast`), and only the instances this suite started on its own ports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import psutil
import redis

from service.cli.embedded import EmbeddedServers, free_port, port_open
from service.core.settings import Settings, env_name

ROOT = Path(__file__).resolve().parent.parent
UNLIMITED = str(10**9)
CREATED = "Created successfully."
FAULTS = ("worker_kill", "web_kill", "redis_flush_restart", "postgres_restart",
          "worker_sigterm")
FAULT_NAMES = {"worker_kill": "worker kill -9", "web_kill": "web kill -9",
               "redis_flush_restart": "Redis flush + restart",
               "postgres_restart": "Postgres restart", "worker_sigterm": "worker SIGTERM"}
SETTLE_AFTER_FAULT_S = 60.0
# what the processes run with: cheap hashing (the suite tests recovery, not argon2), no
# rate limits, small chunks (bulk tasks show progress early, so faults cut them part-way).
# Everything recovery depends on keeps its default: RECOVERY_SETTINGS, which the report
# lists, may not be set here
PROCESS_ENV = {
    "MAILPROV_HOST": "127.0.0.1",
    "MAILPROV_ARGON2_TIME_COST": "1",
    "MAILPROV_ARGON2_MEMORY_KIB": "1024",
    "MAILPROV_HASH_PROCESSES": "1",
    "MAILPROV_RATE_CREATE_DOMAIN": UNLIMITED,
    "MAILPROV_RATE_CREATE_MAILBOX_SINGLE": UNLIMITED,
    "MAILPROV_RATE_CREATE_MAILBOX_BULK": UNLIMITED,
    "MAILPROV_RATE_GET": UNLIMITED,
    "MAILPROV_BULK_CHUNK_SIZE": "10",
    "MAILPROV_LOG_FORMAT": "text",
}
RECOVERY_SETTINGS = ("worker_job_timeout_s", "worker_shutdown_grace_s",
                     "worker_health_check_interval_s", "sweep_interval_s",
                     "sweep_queued_after_s", "sweep_processing_margin_s", "worker_max_tries")
if {env_name(s) for s in RECOVERY_SETTINGS} & set(PROCESS_ENV):
    raise SystemExit("chaos.py runs recovery with its default settings only")
# a SIGTERM'd worker gets the default grace, then closes
STOP_TIMEOUT_S = Settings.worker_shutdown_grace_s + 25
DOMAIN_PARAMS = {"quota_mb": 2**31 - 1, "max_mailboxes": 10**6, "default_mailbox_quota_mb": 1}


@dataclass(frozen=True)
class Profile:
    tasks: int
    load_s: float
    faults: dict[str, int]
    base_domains: int  # per account, made before the mixed load
    concurrency: int
    min_gap_s: float
    bulk: tuple[int, int]  # mailboxes in a bulk task by prefix
    big_bulk: float  # the share of those that are 500-1000 mailboxes


# the full run's load keeps two workers on two cores about half busy, so that its backlog
# drains well within the 60 s; the quick one is denser, so that its few faults cut off work
FULL = Profile(2000, 180.0, {"worker_kill": 6, "web_kill": 6, "redis_flush_restart": 2,
                             "postgres_restart": 2, "worker_sigterm": 2}, 6, 16, 4.0,
               (10, 200), 0.03)
QUICK = Profile(200, 20.0, {"worker_kill": 2, "web_kill": 2, "redis_flush_restart": 1,
                            "postgres_restart": 1, "worker_sigterm": 1}, 2, 8, 2.0,
                (20, 300), 0.1)


# -- the load -------------------------------------------------------------------------


@dataclass
class Spec:
    """One create request, and what its task must lead to."""

    seq: int
    account: int
    route: str
    kind: str
    body: dict[str, Any]
    idem: str
    # mailbox addresses, or domain names, the task must create
    expects: list[str]
    parent: str | None = None
    repeat: str | None = None  # "parallel", "later"
    mismatch: bool = False  # afterwards, reuse the key with another body


def plan(profile: Profile, tasks: int, rng: random.Random) -> tuple[list[Spec], list[Spec]]:
    """(base domains, the mixed load), `tasks` specs in all; every address and domain
    name is unique to its spec, so each has exactly one task that may create it."""
    base: list[Spec] = []
    seq = 0

    def domain_spec(account: int) -> Spec:
        nonlocal seq
        name = f"d{seq}-{'ab'[account]}.chaos.test"
        spec = Spec(seq, account, "create/domain", "domain",
                    {"Domain": name, "Params": DOMAIN_PARAMS}, f"chaos-{seq}", [name])
        seq += 1
        return spec

    for account in (0, 1):
        base += [domain_spec(account) for _ in range(profile.base_domains)]
    rest = tasks - len(base)
    n_domains = max(2, round(tasks * 0.06))
    n_subs = max(2, round(tasks * 0.04))
    n_bulk = round((rest - n_domains - n_subs) * 0.35)
    n_single = rest - n_domains - n_subs - n_bulk
    kinds = (["domain"] * n_domains + ["sub_domain"] * n_subs + ["bulk"] * n_bulk
             + ["single"] * n_single)
    rng.shuffle(kinds)
    mail_domains = {a: [s.expects[0] for s in base if s.account == a] for a in (0, 1)}
    # a parent takes one sub-domain request an hour: each gets one, after it is created
    parents = {a: list(mail_domains[a]) for a in (0, 1)}
    load: list[Spec] = []
    for kind in kinds:
        account = rng.randrange(2)
        if kind == "domain":
            spec = domain_spec(account)
            parents[account].append(spec.expects[0])
        elif kind == "sub_domain" and (parents[account] or parents[1 - account]):
            account = account if parents[account] else 1 - account
            parent = parents[account].pop(rng.randrange(len(parents[account])))
            labels = [f"s{seq}{c}" for c in "abc"[:rng.randint(1, 3)]]
            spec = Spec(seq, account, "create/sub-domain", "sub_domain",
                        {"Domain": parent, "Params": {"sub_domains": labels}}, f"chaos-{seq}",
                        [f"{label}.{parent}" for label in labels], parent=parent)
            seq += 1
        else:
            domain = rng.choice(mail_domains[account])
            if kind == "single":
                body = {"Email_fullname": f"m{seq}", "single_bulk": "single", "Domain": domain,
                        "Params": {"quota_mb": 1}}
                spec = Spec(seq, account, "create/mailbox/single", "mailbox_single", body,
                            f"chaos-{seq}", [f"m{seq}@{domain}"])
            elif rng.random() < 0.3:
                locals_ = [f"l{seq}y{j}" for j in range(rng.randint(10, 60))]
                body = {"Email_fullname": f"import-{seq}", "single_bulk": "bulk",
                        "Domain": domain, "Params": {"quota_mb": 1, "mailboxes": [
                            {"local_part": p} for p in locals_]}}
                spec = Spec(seq, account, "create/mailbox/bulk", "mailbox_bulk", body,
                            f"chaos-{seq}", [f"{p}@{domain}" for p in locals_])
            else:
                # now and then as large as the API allows: a run long enough to cut off
                count = rng.randint(500, 1000) if rng.random() < profile.big_bulk else \
                    rng.randint(*profile.bulk)
                body = {"Email_fullname": f"b{seq}x", "single_bulk": "bulk", "Domain": domain,
                        "Params": {"count": count, "quota_mb": 1}}
                spec = Spec(seq, account, "create/mailbox/bulk", "mailbox_bulk", body,
                            f"chaos-{seq}", [f"b{seq}x{n}@{domain}" for n in range(1, count + 1)])
            seq += 1
        roll = rng.random()
        spec.repeat = "parallel" if roll < 0.06 else "later" if roll < 0.10 else None
        spec.mismatch = spec.kind.startswith("mailbox") and rng.random() < 0.03
        load.append(spec)
    # the same key string in the other account: a separate key, a separate task
    for a, b in zip([s for s in load if s.account == 0][:5],
                    [s for s in load if s.account == 1][:5], strict=False):
        b.idem = a.idem
    return base, load


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    replayed: bool


@dataclass
class LoadStats:
    accepted: dict[int, int] = field(default_factory=dict)  # seq -> task id
    accepted_at: dict[int, float] = field(default_factory=dict)
    sends: int = 0
    replays: int = 0
    key_conflicts: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    mismatch_refused: int = 0
    mismatch_sent: int = 0
    retries: Counter[str] = field(default_factory=Counter)


class Client:
    """Sends create requests and keeps every answer; each request under its idempotency
    key, retried until it gets a definite one."""

    def __init__(self, base_url: str, accounts: list[tuple[int, str]], started: float) -> None:
        self.base_url = base_url
        self.accounts = accounts  # (user_id, key)
        self.started = started
        self.stats = LoadStats()
        self.accepted_events: dict[str, asyncio.Event] = {}
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))

    async def close(self) -> None:
        await self.session.close()

    def domain_accepted(self, name: str) -> asyncio.Event:
        return self.accepted_events.setdefault(name, asyncio.Event())

    async def post(self, spec: Spec, body: dict[str, Any] | None = None) -> Answer:
        payload = {**(body or spec.body), "key": self.accounts[spec.account][1]}
        delay = 0.1
        while True:
            self.stats.sends += 1
            try:
                async with self.session.post(f"{self.base_url}/api/v1/{spec.route}",
                                             json=payload,
                                             headers={"Idempotency-Key": spec.idem}) as r:
                    data = await r.json(content_type=None)
                    answer = Answer(r.status, data if isinstance(data, dict) else {},
                                    r.headers.get("Idempotent-Replayed") == "true")
            except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError):
                self.stats.retries["no answer (web down or killed mid-request)"] += 1
            else:
                if answer.status == 200 or answer.status in (404, 422, 429):
                    return answer
                reason = {409: "409 key in flight", 503: "503 backing service down",
                          500: "500"}.get(answer.status, str(answer.status))
                self.stats.retries[reason] += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def send(self, spec: Spec) -> None:
        if spec.parent is not None:
            try:
                await asyncio.wait_for(self.domain_accepted(spec.parent).wait(), 300)
            except TimeoutError:
                self.stats.refused.append(f"#{spec.seq}: parent {spec.parent} never accepted")
                return
        copies = 2 if spec.repeat == "parallel" else 1
        answers = await asyncio.gather(*(self.post(spec) for _ in range(copies)))
        if spec.repeat == "later":
            await asyncio.sleep(random.uniform(0.5, 10))
            answers.append(await self.post(spec))
        self._record(spec, answers)
        if spec.mismatch and spec.seq in self.stats.accepted:
            other = json.loads(json.dumps(spec.body))
            other["Email_fullname"] = f"other-{spec.seq}"
            self.stats.mismatch_sent += 1
            answer = await self.post(spec, other)
            if answer.status == 422:
                self.stats.mismatch_refused += 1
            else:
                self.stats.key_conflicts.append(f"key {spec.idem} reused with another body: "
                                                f"HTTP {answer.status}")

    def _record(self, spec: Spec, answers: list[Answer]) -> None:
        ids = {int(a.body["task_id"]) for a in answers if a.status == 200}
        self.stats.replays += sum(a.replayed for a in answers)
        for a in answers:
            if a.status != 200:
                self.stats.refused.append(f"#{spec.seq} {spec.route}: HTTP {a.status} "
                                          f"{a.body.get('reason')}")
        if len(ids) > 1:
            self.stats.key_conflicts.append(f"key {spec.idem} gave task ids {sorted(ids)}")
        if ids:
            self.stats.accepted[spec.seq] = min(ids)
            self.stats.accepted_at[spec.seq] = time.monotonic() - self.started
            if spec.kind == "domain":
                self.domain_accepted(spec.expects[0]).set()


# -- the processes and the servers ------------------------------------------------------


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path


class Cluster:
    """The suite's own Postgres and Redis, and mailprov's processes, each in a process
    group of its own: kill -9 takes a worker's hashing processes with it, as losing its
    container would."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.servers = EmbeddedServers(workdir / "servers")
        self.web_port = free_port()
        self.children: dict[str, Child] = {}
        self.started = Counter[str]()
        parts = urlsplit(self.servers.database_url)
        self.database_url = urlunsplit(parts._replace(path="/mailprov"))
        base = {k: v for k, v in os.environ.items()
                if k not in ("DATABASE_URL", "REDIS_URL", "PORT")}
        self.env = {**base, **PROCESS_ENV, "MAILPROV_SECRET_KEY": secrets.token_urlsafe(32),
                    "DATABASE_URL": self.database_url,
                    "REDIS_URL": self.servers.redis_url, "PORT": str(self.web_port)}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start_servers(self) -> None:
        self.servers.start()

    def cli(self, *argv: str) -> str:
        """A short `mailprov` command; its stdout."""
        done = subprocess.run([sys.executable, "-m", "service.cli", *argv], cwd=ROOT,
                              env=self.env, capture_output=True, text=True, timeout=120,
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"mailprov {' '.join(argv)} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def spawn(self, name: str) -> Child:
        """`mailprov serve` ("web") or `mailprov worker` ("worker-N")."""
        number = self.started[name]
        self.started[name] += 1
        log_path = self.dir / f"{name}.{number}.log"
        command = "serve" if name == "web" else "worker"
        with log_path.open("wb") as log:
            popen = subprocess.Popen([sys.executable, "-m", "service.cli", command], cwd=ROOT,
                                     env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        child = self.children[name] = Child(name, popen, log_path)
        return child

    def kill(self, name: str) -> None:
        child = self.children[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.popen.pid, signal.SIGKILL)
        child.popen.wait()

    def terminate(self, name: str, timeout: float) -> int | None:
        """SIGTERM to the process group, as honcho, systemd and Kubernetes stop a process;
        its exit code, or None when it had to be killed."""
        child = self.children[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.popen.pid, signal.SIGTERM)
        try:
            return child.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(name)
            return None

    def restart_redis_flushed(self) -> None:
        """FLUSHALL, SHUTDOWN NOSAVE, remove its files, start it again on its port."""
        client = redis.Redis(port=self.servers.redis_port)
        try:
            client.flushall()
            client.shutdown(nosave=True)
        finally:
            client.close()
        _wait_closed(self.servers.redis_port)
        for leftover in ("appendonlydir", "appendonly.aof", "dump.rdb"):
            path = self.servers.redis_dir / leftover
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        # EmbeddedServers starts and stops both servers together; it has no public way to
        # start one again, so the suite calls the method start() uses
        self.servers._start_redis()

    def restart_postgres(self) -> None:
        """`pg_ctl stop -m fast` (as the cluster's owner: pg_ctl refuses root), then start
        it again on its port and data directory."""
        pid = int((self.servers.pg_dir / "postmaster.pid").read_text().split()[0])
        pg_ctl = Path(psutil.Process(pid).exe()).with_name("pg_ctl")
        owner = self.servers.pg_dir.stat()
        run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            run_as = {"user": owner.st_uid, "group": owner.st_gid, "extra_groups": []}
        subprocess.run([str(pg_ctl), "stop", "-D", str(self.servers.pg_dir), "-m", "fast",
                        "-w", "-t", "60"], cwd=self.servers.pg_dir,
                       env={**os.environ, "LC_ALL": "C"}, capture_output=True, check=True,
                       timeout=90, **run_as)
        self.servers._start_postgres()  # see restart_redis_flushed

    def stop(self) -> None:
        for name in list(self.children):
            child = self.children[name]
            if child.popen.poll() is None:
                self.terminate(name, STOP_TIMEOUT_S)
        self.servers.stop()


def _wait_closed(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while port_open("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(0.05)


# -- faults, and recovery from them --------------------------------------------------


@dataclass
class Fault:
    kind: str
    at_s: float  # since the load began
    target: str = ""
    affected: list[int] = field(default_factory=list)
    recovered_s: float | None = None
    note: str = ""


def schedule(profile: Profile, load_s: float, rng: random.Random) -> list[tuple[float, str]]:
    """Seeded moments in the middle of the load, at least `min_gap_s` apart."""
    kinds = [kind for kind, n in profile.faults.items() for _ in range(n)]
    rng.shuffle(kinds)
    times = sorted(rng.uniform(0.12 * load_s, 0.85 * load_s) for _ in kinds)
    for i in range(1, len(times)):
        times[i] = max(times[i], times[i - 1] + profile.min_gap_s)
    return list(zip(times, kinds, strict=True))


class Postgres:
    """The suite's own view of the database: one connection, taken in turns, reopened
    after a restart."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: asyncpg.Connection | None = None
        self.turn = asyncio.Lock()

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.turn:
            for _ in range(600):
                try:
                    if self.conn is None or self.conn.is_closed():
                        self.conn = await asyncpg.connect(self.dsn, timeout=5)
                    return await self.conn.fetch(query, *args)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                        asyncpg.InternalClientError):
                    if self.conn is not None:
                        self.conn.terminate()
                    self.conn = None
                    await asyncio.sleep(0.1)
        raise RuntimeError("Postgres did not come back within a minute")

    async def unfinished(self, ids: list[int]) -> list[int]:
        rows = await self.fetch("SELECT id FROM tasks WHERE id = ANY($1::bigint[])"
                                " AND status IN ('queued', 'processing')", ids)
        return [r["id"] for r in rows]

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


class Chaos:
    def __init__(self, cluster: Cluster, db: Postgres, client: Client, started: float,
                 rng: random.Random) -> None:
        self.cluster = cluster
        self.db = db
        self.client = client
        self.started = started
        self.rng = rng
        self.faults: list[Fault] = []
        self._watchers: list[asyncio.Task[None]] = []

    def now(self) -> float:
        return time.monotonic() - self.started

    async def run(self, plan_: list[tuple[float, str]]) -> None:
        for at, kind in plan_:
            await asyncio.sleep(max(0.0, at - self.now()))
            if kind != "web_kill":
                await self._work_in_flight()
            fault = Fault(kind, round(self.now(), 1))
            # the tasks the fault can cut off: a flush loses queued jobs too, a web kill
            # only requests (the client retries them under their keys)
            cut_off = {"redis_flush_restart": ["queued", "processing"],
                       "web_kill": []}.get(kind, ["processing"])
            rows = await self.db.fetch("SELECT id FROM tasks WHERE status = ANY($1::text[])",
                                       cut_off)
            fault.affected = [r["id"] for r in rows]
            began = time.monotonic()
            await getattr(self, kind)(fault)
            self.faults.append(fault)
            self._watchers.append(asyncio.create_task(self._recovery(fault, began)))

    async def _work_in_flight(self, wait_s: float = 5.0) -> None:
        """A fault that can cut off jobs waits (a few seconds at most) for a task to be
        under way: killing an idle worker, or flushing an empty queue, proves little."""
        for _ in range(int(wait_s / 0.05)):
            if await self.db.fetch("SELECT 1 FROM tasks WHERE status = 'processing' LIMIT 1"):
                return
            await asyncio.sleep(0.05)

    async def wait_recoveries(self) -> None:
        await asyncio.gather(*self._watchers)

    async def worker_kill(self, fault: Fault) -> None:
        fault.target = self.rng.choice(["worker-0", "worker-1"])
        await asyncio.to_thread(self.cluster.kill, fault.target)
        await asyncio.sleep(0.5)  # a platform's restart is not instant either
        self.cluster.spawn(fault.target)

    async def worker_sigterm(self, fault: Fault) -> None:
        fault.target = self.rng.choice(["worker-0", "worker-1"])
        code = await asyncio.to_thread(self.cluster.terminate, fault.target, STOP_TIMEOUT_S)
        fault.note = f"exit code {code}" if code is not None else "did not stop: killed"
        self.cluster.spawn(fault.target)

    async def web_kill(self, fault: Fault) -> None:
        fault.target = "web"
        await asyncio.to_thread(self.cluster.kill, "web")
        await asyncio.sleep(0.3)
        self.cluster.spawn("web")

    async def redis_flush_restart(self, fault: Fault) -> None:
        fault.target = "redis"
        await asyncio.to_thread(self.cluster.restart_redis_flushed)

    async def postgres_restart(self, fault: Fault) -> None:
        fault.target = "postgres"
        await asyncio.to_thread(self.cluster.restart_postgres)

    async def _recovery(self, fault: Fault, began: float) -> None:
        """Recovered: the web answers again and every task the fault could have cut off
        (processing then; for a flush, queued too) has finished."""
        deadline = began + 300
        while time.monotonic() < deadline:
            if await self._web_answers() and not await self.db.unfinished(fault.affected):
                fault.recovered_s = round(time.monotonic() - began, 1)
                return
            await asyncio.sleep(0.25)

    async def _web_answers(self) -> bool:
        """The web serves a request that needs Postgres and Redis."""
        user_id, key = self.client.accounts[0]
        try:
            async with self.client.session.get(
                    f"{self.cluster.base_url}/api/v1/list/domain",
                    params={"key": key, "caller_id": user_id},
                    timeout=aiohttp.ClientTimeout(total=2)) as r:
                return r.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False


# -- checking what happened ---------------------------------------------------------


async def verify(db: Postgres, specs: dict[int, Spec], stats: LoadStats,
                 deadline: float) -> dict[str, Any]:
    """Compare Postgres with what the accepted tasks asked for."""
    accepted = {stats.accepted[s]: specs[s] for s in stats.accepted}
    tasks = {r["id"]: r for r in await db.fetch(
        "SELECT id, type, status, results, error, attempts FROM tasks")}
    problems: dict[str, list[str]] = {"lost": [], "duplicated": [], "stuck": []}

    for task_id, spec in accepted.items():
        row = tasks.get(task_id)
        if row is None:
            problems["lost"].append(f"task {task_id} (#{spec.seq}) is not in Postgres")
        elif row["status"] in ("queued", "processing"):
            problems["stuck"].append(f"task {task_id} still {row['status']} "
                                     f"{deadline:.0f} s after the last fault")
    for task_id in sorted(set(tasks) - set(accepted)):
        problems["duplicated"].append(f"task {task_id} in Postgres, accepted by no request")

    # every item: asked for by exactly one task, made once, by that task
    owner = {item: task_id for task_id, spec in accepted.items() for item in spec.expects}
    made = {r["address"]: r["task_id"] for r in await db.fetch(
        "SELECT address, task_id FROM mailboxes")}
    made |= {r["name"]: r["task_id"] for r in await db.fetch(
        "SELECT name, task_id FROM domains")}
    failed = []
    for task_id, spec in accepted.items():
        row = tasks.get(task_id)
        if row is None or row["status"] in ("queued", "processing"):
            continue
        if row["status"] == "failed":
            failed.append(f"task {task_id} ({spec.kind}): {row['error']}")
        results = row["results"] if isinstance(row["results"], dict) else \
            json.loads(row["results"])
        for item in spec.expects:
            outcome = (results.get(item) or {}).get("status")
            if row["status"] == "completed" and outcome != CREATED:
                kind = "duplicated" if outcome == "Already exists." else "lost"
                problems[kind].append(f"task {task_id}: {item} is {outcome!r}")
            if outcome == CREATED and item not in made:
                problems["lost"].append(f"task {task_id}: {item} reported created, not in "
                                        f"Postgres")
    for item, task_id in made.items():
        if item not in owner:
            problems["duplicated"].append(f"{item} in Postgres, asked for by no task")
        elif task_id != owner[item]:
            problems["duplicated"].append(f"{item} made by task {task_id}, asked for by "
                                          f"{owner[item]}")
    doubled = await db.fetch("SELECT address FROM mailboxes GROUP BY address"
                             " HAVING count(*) > 1")
    problems["duplicated"] += [f"{r['address']} twice" for r in doubled]
    problems["duplicated"] += stats.key_conflicts
    # the stored keys name the task the client was given
    for r in await db.fetch("SELECT account_id, key, task_id FROM idempotency_keys"):
        given = {task_id for task_id, spec in accepted.items() if spec.idem == r["key"]}
        if given and r["task_id"] not in given:
            problems["duplicated"].append(f"key {r['key']} stored with task {r['task_id']}")
    reruns = [r for r in tasks.values() if r["attempts"] > 1]
    return {
        "problems": problems,
        "failed": failed,
        "tasks_by_type": dict(Counter(s.kind for s in accepted.values())),
        "items_expected": len(owner),
        "mailboxes_in_postgres": sum(1 for i in made if "@" in i),
        "tasks_rerun": len(reruns),
        "extra_runs": sum(r["attempts"] - 1 for r in reruns),
    }


# -- running it -------------------------------------------------------------------------


async def run(args: argparse.Namespace, profile: Profile, workdir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    random.seed(args.seed)
    cluster = Cluster(workdir)
    began = time.monotonic()
    await asyncio.to_thread(cluster.start_servers)
    try:
        await asyncio.to_thread(cluster.cli, "migrate")
        accounts = []
        for name in ("chaos-a", "chaos-b"):
            made = json.loads(cluster.cli("--json", "account", "create", "--name", name)
                              .strip().splitlines()[-1])
            accounts.append((made["user_id"], made["key"]))
        cluster.spawn("web")
        for n in range(2):
            cluster.spawn(f"worker-{n}")
        base, load = plan(profile, args.tasks, rng)
        specs = {s.seq: s for s in base + load}
        db = Postgres(cluster.database_url)
        started = time.monotonic()
        client = Client(cluster.base_url, accounts, started)
        try:
            await asyncio.gather(*(client.send(s) for s in base))
            chaos = Chaos(cluster, db, client, started, rng)
            faults = asyncio.create_task(chaos.run(schedule(profile, args.load_s, rng)))
            await _paced(client, load, args.load_s, profile.concurrency)
            await faults
            last_fault = max(f.at_s for f in chaos.faults)
            last_accept = max(client.stats.accepted_at.values(), default=0.0)
            deadline = max(last_fault + SETTLE_AFTER_FAULT_S, last_accept + 30)
            settled = await _settle(db, list(client.stats.accepted.values()), started,
                                    deadline)
            await asyncio.wait_for(chaos.wait_recoveries(), 330)
            result = await verify(db, specs, client.stats, SETTLE_AFTER_FAULT_S)
        finally:
            await client.close()
            await db.close()
    finally:
        await asyncio.to_thread(cluster.stop)
    stats = client.stats
    injected = Counter(f.kind for f in chaos.faults)
    recovered = [f for f in chaos.faults if f.recovered_s is not None]
    longest = max(recovered, key=lambda f: f.recovered_s or 0.0, default=None)
    settled_after = None if settled is None else round(settled - last_fault, 1)
    report: dict[str, Any] = {
        "seed": args.seed,
        "tasks_planned": len(specs),
        "tasks_accepted": len(stats.accepted),
        "tasks_by_type": result["tasks_by_type"],
        "requests_refused": stats.refused,
        "http_sends": stats.sends,
        "client_retries": dict(stats.retries),
        "idempotency": {
            "keys_sent_twice": sum(1 for s in specs.values() if s.repeat),
            "replays_received": stats.replays,
            "keys_with_more_than_one_task_id": sum("gave task ids" in c
                                                   for c in stats.key_conflicts),
            "reused_with_another_body": stats.mismatch_sent,
            "refused_422": stats.mismatch_refused,
            "same_key_in_both_accounts": len({s.idem for s in load if s.account == 0}
                                             & {s.idem for s in load if s.account == 1}),
        },
        "items_expected": result["items_expected"],
        "mailboxes_in_postgres": result["mailboxes_in_postgres"],
        "faults_injected": {k: injected.get(k, 0) for k in FAULTS},
        "faults": [f.__dict__ | {"affected": len(f.affected)} for f in chaos.faults],
        "tasks_rerun": result["tasks_rerun"],
        "extra_runs": result["extra_runs"],
        "recovery_settings": {name: getattr(Settings, name) for name in RECOVERY_SETTINGS},
        "longest_recovery_s": longest.recovered_s if longest else None,
        "longest_recovery_fault": (f"{FAULT_NAMES[longest.kind]} at {longest.at_s} s"
                                   if longest else None),
        "unrecovered_faults": len(chaos.faults) - len(recovered),
        "settled_after_last_fault_s": settled_after,
        "failed": result["failed"],
        "lost": len(result["problems"]["lost"]),
        "duplicated": len(result["problems"]["duplicated"]),
        "stuck": len(result["problems"]["stuck"]),
        "problems": result["problems"],
        "duration_s": round(time.monotonic() - began, 1),
        "cores": os.cpu_count(),
    }
    report["ok"] = (report["lost"] == report["duplicated"] == report["stuck"] == 0
                    and all(report["faults_injected"][k] >= 1 for k in FAULTS)
                    and settled_after is not None and settled_after <= SETTLE_AFTER_FAULT_S)
    return report


async def _paced(client: Client, load: list[Spec], load_s: float, concurrency: int) -> None:
    """Start the load's requests evenly over `load_s` seconds, `concurrency` at a time."""
    slots = asyncio.Semaphore(concurrency)
    rate = len(load) / load_s
    began = time.monotonic()

    async def one(spec: Spec) -> None:
        try:
            await client.send(spec)
        finally:
            slots.release()

    running = []
    for i, spec in enumerate(load):
        await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
        await slots.acquire()
        running.append(asyncio.create_task(one(spec)))
    await asyncio.gather(*running)


async def _settle(db: Postgres, task_ids: list[int], started: float,
                  deadline: float) -> float | None:
    """When (seconds since the load began) every task had finished; None if some had not
    by `deadline`."""
    while True:
        if not await db.unfinished(task_ids):
            return time.monotonic() - started
        if time.monotonic() - started > deadline:
            return None
        await asyncio.sleep(0.25)


def render(report: dict[str, Any]) -> str:
    faults = report["faults_injected"]
    idem = report["idempotency"]
    retries = ", ".join(f"{k}: {v}" for k, v in report["client_retries"].items()) or "none"
    lines = [
        f"mailprov fault injection · seed {report['seed']} · {report['duration_s']} s on "
        f"{report['cores']} cores",
        f"tasks accepted        {report['tasks_accepted']} of {report['tasks_planned']} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(report['tasks_by_type'].items()))})",
        f"items asked for       {report['items_expected']} (mailboxes in Postgres: "
        f"{report['mailboxes_in_postgres']})",
        f"idempotency keys      {idem['keys_sent_twice']} sent twice, "
        f"{idem['replays_received']} replays received, "
        f"{idem['keys_with_more_than_one_task_id']} keys with two task ids; "
        f"{idem['refused_422']}/{idem['reused_with_another_body']} reuses with another "
        f"body refused (422); {idem['same_key_in_both_accounts']} keys used by both accounts",
        f"client retries        {retries}",
        "faults injected       " + ", ".join(f"{FAULT_NAMES[k]} x{v}" for k, v in faults.items()),
        "recovery settings     defaults: " + ", ".join(
            f"{k} {v}" for k, v in report["recovery_settings"].items()),
        f"jobs re-run           {report['tasks_rerun']} tasks ran more than once "
        f"({report['extra_runs']} extra runs)",
        f"longest recovery      {report['longest_recovery_s']} s "
        f"({report['longest_recovery_fault']})",
        f"all tasks final       {report['settled_after_last_fault_s']} s after the last fault",
        f"failed tasks          {len(report['failed'])}",
        f"lost {report['lost']} · duplicated {report['duplicated']} · stuck {report['stuck']}"
        f" · {'OK' if report['ok'] else 'FAILED'}",
        "",
        "   at s  fault                   target     affected  recovered in",
    ]
    for f in report["faults"]:
        recovered = "-" if f["recovered_s"] is None else f"{f['recovered_s']} s"
        lines.append(f"{f['at_s']:7.1f}  {FAULT_NAMES[f['kind']]:<22}  {f['target']:<9}  "
                     f"{f['affected']:>8}  {recovered}{'  ' + f['note'] if f['note'] else ''}")
    for kind in ("lost", "duplicated", "stuck"):
        for problem in report["problems"][kind][:20]:
            lines.append(f"{kind}: {problem}")
    for failure in report["failed"][:20]:
        lines.append(f"failed: {failure}")
    for refusal in report["requests_refused"][:20]:
        lines.append(f"refused: {refusal}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, help="tasks to accept (default 2000; 200 quick)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="a small run, under a minute (the test suite runs this)")
    parser.add_argument("--load-s", type=float, help="how long the load lasts")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--keep", action="store_true",
                        help="keep the data and process logs (kept anyway on failure)")
    args = parser.parse_args()
    profile = QUICK if args.quick else FULL
    args.tasks = args.tasks or profile.tasks
    args.load_s = args.load_s or profile.load_s
    workdir = Path(tempfile.mkdtemp(prefix="mailprov-chaos-"))
    workdir.chmod(0o711)  # Postgres runs as `nobody` when we are root: it must get in
    report = asyncio.run(run(args, profile, workdir))
    print(json.dumps(report, indent=2) if args.json else render(report))
    if args.keep or not report["ok"]:
        print(f"data and process logs kept in {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    raise SystemExit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
