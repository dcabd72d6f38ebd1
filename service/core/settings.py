"""One settings object, read from the environment (12-factor).

`DATABASE_URL`, `REDIS_URL` and `PORT` keep their platform names so a Procfile host can
inject them; everything else is `MAILPROV_<FIELD NAME IN CAPITALS>`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from service.core.redisconn import check_url

# how long an Idempotency-Key's record is kept (the web replays it, the sweeper deletes it)
IDEMPOTENCY_TTL_S = 24 * 3600

PLATFORM_NAMES = {"database_url": "DATABASE_URL", "redis_url": "REDIS_URL", "port": "PORT"}


def boolean(text: str) -> bool:
    """A yes/no setting: 1/0, true/false, yes/no (bool("0") would be True)."""
    try:
        return {"1": True, "true": True, "yes": True, "0": False, "false": False,
                "no": False}[text.lower()]
    except KeyError:
        raise ValueError(text) from None


def env_name(field: str) -> str:
    return PLATFORM_NAMES.get(field, "MAILPROV_" + field.upper())


@dataclass(frozen=True)
class Settings:
    database_url: str = "postgresql://postgres@127.0.0.1:5432/mailprov"
    redis_url: str = "redis://127.0.0.1:6379/0"
    port: int = 8080
    host: str = "0.0.0.0"  # noqa: S104 - a Procfile host routes to the container's port
    # every Redis key (queue, rate limits, passwords) starts with this, so installations
    # and test runs can share one Redis
    redis_prefix: str = "mailprov:"
    # a standby for reads that may be a little stale (lists, the ops page, metrics); empty:
    # every read goes to DATABASE_URL. DATABASE_URL may name several hosts
    # (postgresql://h1:5432,h2:5432/db?target_session_attrs=read-write): the pools find
    # the primary among them, again after a switchover
    database_replica_url: str = ""
    db_pool_min: int = 2
    db_pool_max: int = 10

    # seals the passwords clients supply until the worker hashes them, and keys the
    # Idempotency-Key fingerprints (service/core/secrets.py); serve and worker need it
    secret_key: str = field(default="", repr=False)

    max_body_bytes: int = 1024 * 1024
    bulk_max: int = 1000
    sub_domains_max: int = 10

    # requests per account per rolling hour
    rate_create_domain: int = 100
    rate_create_mailbox_single: int = 1000
    rate_create_mailbox_bulk: int = 100
    rate_get: int = 36000
    # resource API writes other than creates (update, delete, restore, bulk actions,
    # aliases, alias domains), per account per rolling hour
    rate_write: int = 10000
    rate_sub_domain_window_s: int = 3600
    # failed API key checks per client address per minute; past it, 429 before any lookup
    auth_failures_per_minute: int = 20
    # proxies (addresses or CIDR networks, comma-separated) whose X-Forwarded-For is believed
    trusted_proxies: str = ""

    imap_host: str = ""
    imap_port: int = 993
    password_ttl_s: int = 3600
    # how long a failed task keeps the sealed passwords of items it did not write, so that
    # `tasks retry` can still make them as asked; then the sweeper erases them
    failed_task_secrets_ttl_s: int = 7 * 24 * 3600

    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    # 0 = one hashing process per core
    hash_processes: int = 0

    # arq: its defaults (0.5 s polls, 10 jobs) cap a worker far below what Postgres can take
    worker_poll_delay_s: float = 0.05
    worker_max_jobs: int = 20
    worker_job_timeout_s: int = 300
    worker_max_tries: int = 5
    # how often a worker writes its health key (read by `mailprov worker --check` and /ops)
    # and checks its hashing pool; the key lives one second longer, so a probe sees a
    # stalled worker within seconds. The key is also the worker's heartbeat: its tasks are
    # freed for other workers once it is gone
    worker_health_check_interval_s: int = 5
    # the worker's Prometheus endpoint; 0 = off. Workers sharing a host need ports of their own
    worker_metrics_port: int = 0
    # rows per transaction in a bulk task: locks stay short and progress shows
    bulk_chunk_size: int = 100
    # the sweeper frees the tasks of workers whose heartbeat is gone, and re-enqueues tasks
    # still queued after this long
    sweep_queued_after_s: int = 5
    sweep_interval_s: int = 2
    # ... and tasks still `processing` this long past the job timeout with no write (a run
    # arq dropped while its worker lived on: a timeout, its tries used up)
    sweep_processing_margin_s: int = 30
    # on SIGTERM a worker takes no new jobs and gives running ones this long to finish;
    # the rest are cancelled and run again
    worker_shutdown_grace_s: int = 20
    # soft-deleted domains, mailboxes and aliases can be restored for this long, then a
    # worker's cron job removes them for good (worker/retention.py)
    retention_days: int = 30

    # Dovecot's doveadm HTTP API (http://127.0.0.1:PORT): when both are set, the worker
    # ends the IMAP sessions of mailboxes switched off, deleted or given a new password
    # (worker/kicks.py). Empty: no kicks
    doveadm_url: str = ""
    doveadm_key: str = field(default="", repr=False)
    doveadm_timeout_s: float = 3.0
    # DNS (service/core/dnscheck.py): what GET /domains/{domain}/dns asks a customer to
    # publish, and how verification reads it back. MX: this host (default: the IMAP host,
    # else this machine's name); autoconfig/autodiscover: theirs (default: the MX host)
    mx_host: str = ""
    autoconfig_host: str = ""
    spf_record: str = "v=spf1 mx -all"
    dmarc_record: str = "v=DMARC1; p=quarantine; adkim=r; aspf=r"
    # `host` or `host:port` (`[v6]:port`) of the resolver verification asks; empty: the
    # system's (/etc/resolv.conf)
    dns_resolver: str = ""
    dns_timeout_s: float = 5.0
    # a verified domain's records are checked again once its last check is this old
    dns_recheck_after_s: int = 6 * 3600
    # DKIM (service/core/dkim.py): a new domain's key, and how long a rotated-out key
    # stays published (mail it signed is still in flight or being verified)
    dkim_algorithm: str = "rsa"
    dkim_grace_s: int = 7 * 24 * 3600
    # webhooks (worker/webhooks.py): endpoints on private, loopback and link-local
    # addresses are refused unless this is set (a test's local receiver, a private network)
    webhook_allow_private: bool = False

    # the /ops queue page answers 404 while this is empty
    ops_token: str = ""
    # "json": one JSON object per line; "text": for a person at a terminal
    log_format: str = "json"
    # DEBUG also logs each successful read (a poll, a list) and probe; INFO logs writes,
    # failures and everything else
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from `env` (default: os.environ), then apply `overrides`."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = env_name(f.name)
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            kind: Any = type(f.default)
            if kind is bool:
                kind = boolean
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise SystemExit(f"setting {name}={raw!r} is not a valid {kind.__name__}") from None
        values.update(overrides)
        settings = cls(**values)
        try:  # the form of REDIS_URL is checked once here, for every command
            check_url(settings.redis_url)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
        return settings

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def queue_name(self) -> str:
        return f"{self.redis_prefix}queue"


def setting_names() -> list[tuple[str, str, Any]]:
    """(environment name, field, default) for every setting, for the README and `--help`."""
    return [
        (env_name(f.name), f.name, f.default)
        for f in fields(Settings)
    ]
