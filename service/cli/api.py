"""`mailprov create ...`, `mailprov task ...`, and `mailprov domain|mailbox|alias|alias-domain
...`: the API client (service/client.py) as commands, for operators and shell scripts.
Every write takes `--wait`.

The API's URL and key come from `--url`/`--key` or `MAILPROV_URL`/`MAILPROV_KEY`. With
`--json` each command prints one JSON document on stdout. Exit codes: 0 done,
1 the task failed or the API answered an error (the message goes to stderr), 2 misuse.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TextIO

import aiohttp

from service.cli.common import command, emit, group
from service.client import ApiError, MailprovClient, MailprovError, TaskFailed

DEFAULT_URL = "http://127.0.0.1:8080"

Submit = Callable[[MailprovClient], Awaitable[int]]


class ProgressBar:
    """A task's progress on `stream`: one bar redrawn in place on a terminal, one line per
    change otherwise (a log file or a pipe should not fill with carriage returns)."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.drawn = False

    def update(self, done: int, total: int) -> None:
        if self.tty:
            filled = self.WIDTH * done // total if total else self.WIDTH
            percent = 100 * done // total if total else 100
            bar = "#" * filled + "." * (self.WIDTH - filled)
            self.stream.write(f"\r[{bar}] {done}/{total} {percent:3d}%")
            self.drawn = True
        else:
            self.stream.write(f"progress: {done}/{total}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def summary(results: dict[str, Any]) -> dict[str, int]:
    """How many items ended with each result status, most frequent first."""
    return dict(Counter(item.get("status") for item in results.values()).most_common())


def _hide_passwords(task: dict[str, Any], show: bool) -> tuple[dict[str, Any], int]:
    """The task with its generated passwords left out unless `show`; how many were hidden."""
    if show:
        return task, 0
    results = task.get("results") or {}
    hidden = sum(1 for item in results.values() if item.get("password"))
    shown = {name: {k: v for k, v in item.items() if k != "password"}
             for name, item in results.items()}
    return {**task, "results": shown}, hidden


def _report(args: argparse.Namespace, task: dict[str, Any], status: str) -> tuple[dict[str, Any],
                                                                                  list[str]]:
    """The JSON document and the text lines that describe a task."""
    shown, hidden = _hide_passwords(task, getattr(args, "show_passwords", False))
    counts = summary(shown.get("results") or {})
    data = {"task_id": int(task["Task_id"]), "status": status, "summary": counts, "task": shown}
    head = f"task {task['Task_id']}"
    if "type" in task:
        head += f" ({task['type']}, {task['domain']})"
    head += f": {status}"
    if "progress" in task:
        head += f" {task['progress']['done']}/{task['progress']['total']}"
    lines = [head]
    if counts:
        lines.append(", ".join(f"{name}: {n}" for name, n in counts.items()))
    if hidden:
        lines.append(f"({hidden} generated passwords not shown; --show-passwords prints them)")
    lines += [f"{name}  {item['password']}" for name, item in shown["results"].items()
              if item.get("password")]
    return data, lines


def _fail(args: argparse.Namespace, message: str, data: dict[str, Any],
          lines: list[str] | None = None) -> NoReturn:
    if args.json:
        print(json.dumps({"error": message, **data}))
    elif lines:
        print("\n".join(lines))
    print(f"mailprov: {message}", file=sys.stderr)
    raise SystemExit(1)


def _client(args: argparse.Namespace) -> MailprovClient:
    key = args.key or os.environ.get("MAILPROV_KEY", "")
    if not key:
        args.usage_error("no API key: give --key or set MAILPROV_KEY")
    return MailprovClient(args.url or os.environ.get("MAILPROV_URL") or DEFAULT_URL, key)


def _call(args: argparse.Namespace, work: Callable[[MailprovClient], Awaitable[Any]]) -> Any:
    """Run `work` with a client; turn what can go wrong into a message and exit code 1."""
    api = _client(args)

    async def run() -> Any:
        async with api:
            return await work(api)

    try:
        return asyncio.run(run())
    except TaskFailed as exc:
        data, lines = _report(args, exc.body, "failed")
        _fail(args, str(exc), {**data, "reason": exc.reason}, lines[1:])
    except ApiError as exc:
        _fail(args, str(exc), {"http_status": exc.status, "reason": exc.reason,
                               "errors": exc.errors})
    except MailprovError as exc:
        _fail(args, str(exc), {})
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        # no URL in the message: a GET's URL holds the key
        _fail(args, f"cannot reach the API at {api.base_url}: {type(exc).__name__} {exc}", {})


def _create(args: argparse.Namespace, submit: Submit, progress: bool = False,
            made: dict[str, Any] | None = None) -> None:
    """Send a write; print its task id, or with --wait its outcome. What `submit` puts in
    `made` (a new alias's id) is printed too."""
    async def work(api: MailprovClient) -> tuple[int, dict[str, Any] | None]:
        task_id = await submit(api)
        if not args.wait:
            return task_id, None
        bar = ProgressBar(sys.stderr) if progress else None
        try:
            return task_id, await api.wait(task_id, timeout=args.timeout,
                                           on_progress=bar.update if bar else None)
        finally:
            if bar:
                bar.close()

    task_id, task = _call(args, work)
    made = made or {}
    named = [f"{name.replace('_', ' ')}: {value}" for name, value in made.items()]
    if task is None:
        emit(args, {"task_id": task_id, "status": "queued", **made},
             "\n".join([f"task {task_id} queued; `mailprov task {task_id}` shows it", *named]))
    else:
        data, lines = _report(args, task, "completed")
        emit(args, {**data, **made}, "\n".join([*lines, *named]))


def _password(args: argparse.Namespace) -> str | None:
    # `-` reads it from stdin, so it stays out of the shell history and the process list
    if args.password == "-":  # noqa: S105 - the stdin marker, not a password
        return sys.stdin.readline().rstrip("\r\n")
    return args.password


def cmd_create_domain(args: argparse.Namespace, settings: Any) -> None:
    _create(args, lambda api: api.create_domain(
        args.domain, quota_mb=args.quota_mb, max_mailboxes=args.max_mailboxes,
        default_mailbox_quota_mb=args.default_mailbox_quota_mb, description=args.description))


def cmd_create_mailbox(args: argparse.Namespace, settings: Any) -> None:
    if args.domain is None and "@" not in args.address:
        args.usage_error("give a full address (john@example.com) or --domain")
    password = _password(args)
    _create(args, lambda api: api.create_mailbox(
        args.address, args.domain, display_name=args.display_name, quota_mb=args.quota_mb,
        password=password))


def cmd_create_mailboxes(args: argparse.Namespace, settings: Any) -> None:
    password = _password(args)
    _create(args, lambda api: api.create_mailboxes(
        args.domain, prefix=args.prefix, count=args.count, start=args.start,
        display_name=args.display_name, quota_mb=args.quota_mb, password=password),
        progress=True)


def _show(args: argparse.Namespace, read: Callable[[MailprovClient], Awaitable[Any]]) -> None:
    """Print one resource: `field: value` lines, or its JSON."""
    data = _call(args, read)
    emit(args, data, "\n".join(f"{name}: {_text(value)}" for name, value in data.items()))


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return "-" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _list(args: argparse.Namespace, name: str, read: Callable[..., Awaitable[Any]],
          **filters: Any) -> None:
    """Print one page of a list: a line per item (its `name` and status), then where the
    page is."""
    page = _call(args, lambda api: read(api, page=args.page, size=args.size, sort=args.sort,
                                        **filters))
    meta = page["meta"]
    lines = [f"{item[name]}  {item.get('status', '')}".rstrip() for item in page["data"]]
    lines.append(f"page {meta['current_page']} of {meta['last_page']} ({meta['total']} in all)")
    emit(args, page, "\n".join(lines))


def _new_password(args: argparse.Namespace) -> str:
    """--password, `-` for a line of stdin; none given: asked for twice on a terminal, else
    read from stdin."""
    if args.password is not None:
        return _password(args) or ""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("New password: ")
    if getpass.getpass("Again: ") != first:
        args.usage_error("the two passwords differ")
    return first


def cmd_domain_show(args: argparse.Namespace, settings: Any) -> None:
    _show(args, lambda api: api.get_domain(args.domain))


def cmd_domain_list(args: argparse.Namespace, settings: Any) -> None:
    _list(args, "domain", MailprovClient.list_domains, search=args.search, active=args.active,
          deleted=args.deleted)


def cmd_domain_update(args: argparse.Namespace, settings: Any) -> None:
    _create(args, lambda api: api.update_domain(
        args.domain, active=args.active, aliases=args.aliases, mailboxes=args.mailboxes,
        defquota=args.defquota, maxquota=args.maxquota, quota=args.quota,
        backupmx=args.backupmx, description=args.description))


def cmd_domain_delete(args: argparse.Namespace, settings: Any) -> None:
    _create(args, lambda api: api.delete_domain(args.domain, purge=args.purge))


def cmd_domain_restore(args: argparse.Namespace, settings: Any) -> None:
    _create(args, lambda api: api.restore_domain(args.domain))


def cmd_domain_bulk_delete(args: argparse.Namespace, settings: Any) -> None:
    _create(args, lambda api: api.delete_domains(args.domains))


def cmd_mailbox_show(args: argparse.Namespace, settings: Any) -> None:
    _show(args, lambda api: api.get_mailbox(args.email))


def cmd_mailbox_list(args: argparse.Namespace, settings: Any) -> None:
    _list(args, "email", MailprovClient.list_mailboxes, domain=args.domain, search=args.search,
          active=args.active, deleted=args.deleted)


def cmd_mailbox_update(args: argparse.Namespace, settings: Any) -> None:
    _create(args, lambda api: api.update_mailbox(
        args.email, name=args.name, quota=args.quota, active=args.active,
        force_pw_update=args.force_pw_update, tls_enforce_in=args.tls_enforce_in,
        tls_enforce_out=args.tls_enforce_out))


def cmd_mailbox_passwd(args: argparse.Namespace, settings: Any) -> None:
    if args.password_hash is not None:
        _create(args, lambda api: api.change_password(args.email,
                                                      password_hash=args.password_hash))
        return
    password = _new_password(args)
    _create(args, lambda api: api.change_password(args.email, password))


def cmd_mailbox_delete(args: argparse.Namespace, settings: Any) -> None:
    _create(args, lambda api: api.delete_mailbox(args.email, purge=args.purge))


def cmd_mailbox_restore(args: argparse.Namespace, settings: Any) -> None:
    _create(args, lambda api: api.restore_mailbox(args.email))


def cmd_mailbox_bulk(args: argparse.Namespace, settings: Any) -> None:
    _create(args, lambda api: api.mailbox_action(args.action_name, args.emails), progress=True)


def cmd_alias_create(args: argparse.Namespace, settings: Any) -> None:
    made: dict[str, Any] = {}

    async def submit(api: MailprovClient) -> int:
        task_id, made["alias_id"] = await api.create_alias(args.address, args.to,
                                                           active=not args.inactive)
        return task_id

    _create(args, submit, made=made)


def cmd_alias_show(args: argparse.Namespace, settings: Any) -> None:
    _show(args, lambda api: api.get_alias(args.id))


def cmd_alias_list(args: argparse.Namespace, settings: Any) -> None:
    _list(args, "address", MailprovClient.list_aliases, domain=args.domain, search=args.search,
          active=args.active, deleted=args.deleted)


def cmd_alias_update(args: argparse.Namespace, settings: Any) -> None:
    _create(args, lambda api: api.update_alias(args.id, goto=args.to, active=args.active))


def cmd_alias_delete(args: argparse.Namespace, settings: Any) -> None:
    _create(args, lambda api: api.delete_alias(args.id, purge=args.purge))


def cmd_alias_restore(args: argparse.Namespace, settings: Any) -> None:
    _create(args, lambda api: api.restore_alias(args.id))


def cmd_alias_forget(args: argparse.Namespace, settings: Any) -> None:
    _create(args, lambda api: api.forget_alias(args.id))


def cmd_alias_bulk(args: argparse.Namespace, settings: Any) -> None:
    _create(args, lambda api: api.alias_action(args.action_name, args.ids))


def cmd_alias_domain_create(args: argparse.Namespace, settings: Any) -> None:
    _create(args, lambda api: api.create_alias_domain(args.alias_domain, args.target,
                                                      active=not args.inactive))


def cmd_alias_domain_show(args: argparse.Namespace, settings: Any) -> None:
    _show(args, lambda api: api.get_alias_domain(args.alias_domain))


def cmd_alias_domain_list(args: argparse.Namespace, settings: Any) -> None:
    _list(args, "alias_domain", MailprovClient.list_alias_domains, domain=args.domain,
          search=args.search, active=args.active)


def cmd_alias_domain_update(args: argparse.Namespace, settings: Any) -> None:
    _create(args, lambda api: api.update_alias_domain(args.alias_domain, active=args.active))


def cmd_alias_domain_delete(args: argparse.Namespace, settings: Any) -> None:
    _create(args, lambda api: api.delete_alias_domain(args.alias_domain))


def cmd_task(args: argparse.Namespace, settings: Any) -> None:
    task = _call(args, lambda api: api.task(args.task_id))
    data, lines = _report(args, task, task["status"])
    emit(args, data, "\n".join(lines))


def add_commands(subparsers: Any) -> None:
    """Register `create domain|mailbox|mailboxes` and `task` on mailprov's subparsers."""
    api = argparse.ArgumentParser(add_help=False)
    api.add_argument("--url", help=f"API base URL (default $MAILPROV_URL, else {DEFAULT_URL})")
    api.add_argument("--key", help="API key (default $MAILPROV_KEY, which keeps it out of "
                                   "the process list)")
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--wait", action="store_true",
                         help="poll the task until it is done and print its results")
    waiting.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                         help="how long --wait waits (default 600)")
    reveal = argparse.ArgumentParser(add_help=False)
    reveal.add_argument("--show-passwords", action="store_true",
                         help="print generated passwords (hidden by default)")
    mailbox = argparse.ArgumentParser(add_help=False)
    mailbox.add_argument("--display-name")
    mailbox.add_argument("--quota-mb", type=int)
    mailbox.add_argument("--password", help="a password (`-` reads it from stdin); "
                                            "default: one is generated")

    create = subparsers.add_parser("create", help="create through the API (as a client)")
    kinds = create.add_subparsers(dest="what", required=True)

    domain = command(kinds, "domain", cmd_create_domain, "create a domain", [api, waiting])
    domain.add_argument("domain")
    domain.add_argument("--quota-mb", type=int, help="the domain's total (default 10240)")
    domain.add_argument("--max-mailboxes", type=int, help="default 100")
    domain.add_argument("--default-mailbox-quota-mb", type=int, help="default 1024")
    domain.add_argument("--description")

    one = command(kinds, "mailbox", cmd_create_mailbox, "create one mailbox",
                  [api, waiting, reveal, mailbox])
    one.add_argument("address", help="john@example.com, or john with --domain")
    one.add_argument("--domain")

    many = command(kinds, "mailboxes", cmd_create_mailboxes,
                   "create PREFIX1..PREFIXn; --wait shows progress on stderr",
                   [api, waiting, reveal, mailbox])
    many.add_argument("--domain", required=True)
    many.add_argument("--prefix", required=True)
    many.add_argument("--count", type=int, required=True)
    many.add_argument("--start", type=int, default=1, help="the first number (default 1)")

    task = command(subparsers, "task", cmd_task, "show a task", [api, reveal])
    task.add_argument("task_id", type=int)

    _add_resource_commands(subparsers, api, waiting, reveal)


ACTIONS = ("activate", "deactivate", "delete", "restore", "forget")


def _add_resource_commands(subparsers: Any, api: argparse.ArgumentParser,
                           waiting: argparse.ArgumentParser,
                           reveal: argparse.ArgumentParser) -> None:
    """`domain`, `mailbox`, `alias` and `alias-domain`: the resource API's operations."""
    writes = [api, waiting]
    listing = argparse.ArgumentParser(add_help=False)
    listing.add_argument("--page", type=int, default=1)
    listing.add_argument("--size", type=int, default=100, help="at most 1000")
    listing.add_argument("--sort", help="a field, `-` first for descending")
    listing.add_argument("--search", help="a part of the name or address")
    listing.add_argument("--active", action=argparse.BooleanOptionalAction)
    listing.add_argument("--deleted", choices=("with", "only"),
                         help="list deleted ones too, or only them")
    purge = argparse.ArgumentParser(add_help=False)
    purge.add_argument("--purge", action="store_true",
                       help="delete for good at once, not softly (no restore)")
    switch = argparse.ArgumentParser(add_help=False)
    switch.add_argument("--active", action=argparse.BooleanOptionalAction)

    domains = group(subparsers, "domain", "read and change domains (the resource API)")
    one = command(domains, "show", cmd_domain_show, "show a domain", [api])
    one.add_argument("domain")
    command(domains, "list", cmd_domain_list, "list domains", [api, listing])
    change = command(domains, "update", cmd_domain_update, "change a domain",
                     [*writes, switch])
    change.add_argument("domain")
    for field, text in (("aliases", "most aliases"), ("mailboxes", "most mailboxes"),
                        ("defquota", "default mailbox quota, MB"),
                        ("maxquota", "largest mailbox quota, MB"), ("quota", "total, MB")):
        change.add_argument(f"--{field}", type=int, help=text)
    change.add_argument("--backupmx", action=argparse.BooleanOptionalAction)
    change.add_argument("--description")
    gone = command(domains, "delete", cmd_domain_delete,
                   "delete a domain with its sub-domains, mailboxes and aliases",
                   [*writes, purge])
    gone.add_argument("domain")
    back = command(domains, "restore", cmd_domain_restore, "undo a delete", writes)
    back.add_argument("domain")
    many = command(domains, "bulk-delete", cmd_domain_bulk_delete,
                   "delete up to 100 domains in one task", writes)
    many.add_argument("domains", nargs="+")

    mailboxes = group(subparsers, "mailbox", "read and change mailboxes (the resource API)")
    one = command(mailboxes, "show", cmd_mailbox_show, "show a mailbox", [api])
    one.add_argument("email")
    shown = command(mailboxes, "list", cmd_mailbox_list, "list mailboxes", [api, listing])
    shown.add_argument("--domain")
    change = command(mailboxes, "update", cmd_mailbox_update, "change a mailbox",
                     [*writes, switch])
    change.add_argument("email")
    change.add_argument("--name", help="the display name")
    change.add_argument("--quota", type=int, help="MB")
    for flag in ("force-pw-update", "tls-enforce-in", "tls-enforce-out"):
        change.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction)
    passwd = command(mailboxes, "passwd", cmd_mailbox_passwd, "change a mailbox's password",
                     writes)
    passwd.add_argument("email")
    secret = passwd.add_mutually_exclusive_group()
    secret.add_argument("--password", help="the new password (`-` reads a line of stdin); "
                                           "default: asked for on a terminal, else stdin")
    secret.add_argument("--password-hash", help="a {SCHEME}... hash, kept as given")
    gone = command(mailboxes, "delete", cmd_mailbox_delete, "delete a mailbox",
                   [*writes, purge])
    gone.add_argument("email")
    back = command(mailboxes, "restore", cmd_mailbox_restore, "undo a delete", writes)
    back.add_argument("email")
    many = command(mailboxes, "bulk", cmd_mailbox_bulk,
                   "activate, deactivate, delete, restore or forget many mailboxes", writes)
    many.add_argument("action_name", metavar="action", choices=ACTIONS)
    many.add_argument("emails", nargs="+")

    aliases = group(subparsers, "alias", "aliases and catch-alls (the resource API)")
    new = command(aliases, "create", cmd_alias_create,
                  "create an alias (@example.com: the domain's catch-all)", writes)
    new.add_argument("address")
    new.add_argument("--to", action="append", required=True, metavar="ADDRESS",
                     help="a destination; give it up to 50 times")
    new.add_argument("--inactive", action="store_true")
    one = command(aliases, "show", cmd_alias_show, "show an alias", [api])
    one.add_argument("id", type=int)
    shown = command(aliases, "list", cmd_alias_list, "list aliases", [api, listing])
    shown.add_argument("--domain")
    change = command(aliases, "update", cmd_alias_update, "change an alias",
                     [*writes, switch])
    change.add_argument("id", type=int)
    change.add_argument("--to", action="append", metavar="ADDRESS",
                        help="the new destinations (all of them)")
    for name, run, text, more in (("delete", cmd_alias_delete, "delete an alias", [purge]),
                                  ("restore", cmd_alias_restore, "undo a delete", []),
                                  ("forget", cmd_alias_forget, "delete an alias for good", [])):
        command(aliases, name, run, text, [*writes, *more]).add_argument("id", type=int)
    many = command(aliases, "bulk", cmd_alias_bulk,
                   "activate, deactivate, delete, restore or forget up to 25 aliases", writes)
    many.add_argument("action_name", metavar="action", choices=ACTIONS)
    many.add_argument("ids", nargs="+", type=int)

    alias_domains = group(subparsers, "alias-domain",
                          "alias domains: mail to x@alias goes to x@target")
    new = command(alias_domains, "create", cmd_alias_domain_create, "create an alias domain",
                  writes)
    new.add_argument("alias_domain")
    new.add_argument("--target", required=True, help="one of your domains")
    new.add_argument("--inactive", action="store_true")
    one = command(alias_domains, "show", cmd_alias_domain_show, "show an alias domain", [api])
    one.add_argument("alias_domain")
    shown = command(alias_domains, "list", cmd_alias_domain_list, "list alias domains",
                    [api, listing])
    shown.add_argument("--domain", help="only those of this target")
    change = command(alias_domains, "update", cmd_alias_domain_update,
                     "switch an alias domain on or off", writes)
    change.add_argument("alias_domain")
    change.add_argument("--active", action=argparse.BooleanOptionalAction, required=True)
    gone = command(alias_domains, "delete", cmd_alias_domain_delete,
                   "delete an alias domain (for good)", writes)
    gone.add_argument("alias_domain")
