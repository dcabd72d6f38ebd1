"""What the mail stack reads (api-resources.md, "What the mail stack reads"): the maps and
queries that `mailprov mailstack config` writes, run by the real `postmap` (Postfix's pgsql
maps) and a real Dovecot (its SQL passdb and userdb), see only active, not deleted rows of
live domains, serve aliases, catch-alls, alias domains and the postmaster, and follow a
password change. (tests/integration/test_mail_stack_e2e.py runs the whole stack.)

Both use private configuration in a temporary directory; nothing of the machine's own
Postfix or Dovecot is read or touched. Dovecot runs in the foreground as a child of the
test and is stopped by its own pid.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from service.core import mailstack


async def _run(*argv: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode()


class Postfix:
    """postmap -q against the generated maps, in a private configuration directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        (directory / "main.cf").write_text("compatibility_level = 3.6\n")
        # where Debian's postfix-pgsql says its map type lives
        shutil.copy("/etc/postfix/dynamicmaps.cf", directory / "dynamicmaps.cf")

    async def lookup(self, name: str, key: str) -> str | None:
        code, out = await _run("postmap", "-c", str(self.directory), "-q", key,
                               f"pgsql:{self.directory / 'pgsql' / name}.cf")
        assert code in (0, 1), out  # 1: not found
        return out.strip() if code == 0 else None


@asynccontextmanager
async def dovecot(directory: Path) -> AsyncIterator[Path]:
    """A Dovecot of our own (auth only, no protocols) reading the generated
    dovecot-sql.conf.ext in `directory`; its configuration file."""
    config = directory / "dovecot.conf"
    config.write_text(f"""
base_dir = {directory}/run
state_dir = {directory}/state
log_path = {directory}/dovecot.log
protocols =
ssl = no
passdb {{
  driver = sql
  args = {directory}/dovecot-sql.conf.ext
}}
userdb {{
  driver = sql
  args = {directory}/dovecot-sql.conf.ext
}}
""")
    process = await asyncio.create_subprocess_exec("dovecot", "-F", "-c", str(config))
    try:
        async with asyncio.timeout(20):
            while not (directory / "run" / "auth-userdb").exists():
                assert process.returncode is None, (directory / "dovecot.log").read_text()
                await asyncio.sleep(0.05)
        yield config
    finally:
        process.terminate()
        await process.wait()


async def test_the_mail_stack_reads_the_live_rows(make, db, settings):
    _, key = await make.account()
    for body in ({"domain": "example.org"}, {"domain": "backup.example", "backupmx": True},
                 {"domain": "old.example"}):
        await make.done(key, await make.rest("POST", "domain_create", key, body))
    for local, extra in (("john", {"password": "john-first-secret", "quota": 2048}),
                         ("off", {"active": False}), ("gone", {})):
        await make.done(key, await make.rest("POST", "mailbox_create", key, {
            "domain": "example.org", "local_part": local, **extra}))
    await make.done(key, await make.rest("POST", "mailbox_create", key,
                                         {"domain": "old.example", "local_part": "a"}))
    await make.done(key, await make.rest("DELETE", "mailbox_delete", key,
                                         email="gone@example.org"))
    await make.done(key, await make.rest("DELETE", "domain_delete", key, domain="old.example"))
    for address, goto in (("sales@example.org", ["john@example.org", "boss@elsewhere.example"]),
                          ("@example.org", ["john@example.org"]),
                          ("off-alias@example.org", ["john@example.org"])):
        await make.done(key, await make.rest("POST", "alias_create", key,
                                             {"address": address, "goto": goto}))
    off_alias = await db.pool.fetchval(
        "SELECT id FROM aliases WHERE address = 'off-alias@example.org'")
    await make.done(key, await make.rest("PUT", "alias_update", key, {"active": False},
                                         id=off_alias))
    await make.done(key, await make.rest("POST", "alias_domain_create", key, {
        "alias_domain": "example.net", "target_domain": "example.org"}))
    home = await db.pool.fetchval("SELECT home FROM mailboxes WHERE address = 'john@example.org'")

    directory = Path(tempfile.mkdtemp(prefix="mailprov-mailstack-"))
    # Dovecot's own processes run as its users and must reach their sockets
    os.chmod(directory, 0o755)  # noqa: S103 - nothing secret in it
    try:
        mailstack.write(mailstack.Site(settings.database_url), directory)
        postfix = Postfix(directory / "postfix")
        expected = {
            ("domains", "example.org"): "example.org",
            ("domains", "backup.example"): None,
            ("domains", "old.example"): None,
            ("backup-domains", "backup.example"): "backup.example",
            ("alias-domains", "example.net"): "example.net",
            ("alias-domains", "example.org"): None,
            ("mailboxes", "john@example.org"): f"{home}/",
            ("mailboxes", "off@example.org"): None,
            ("mailboxes", "gone@example.org"): None,
            ("mailboxes", "a@old.example"): None,
            ("aliases", "sales@example.org"): "john@example.org,boss@elsewhere.example",
            ("aliases", "@example.org"): "john@example.org",
            ("aliases", "john@example.org"): "john@example.org",
            ("aliases", "off-alias@example.org"): None,
            ("aliases", "off@example.org"): None,
            ("alias-domain-maps", "sales@example.net"): "sales@example.org",
            # through the target's catch-all
            ("alias-domain-maps", "nobody@example.net"): "nobody@example.org",
            ("alias-domain-maps", "@example.net"): None,
            ("alias-domain-maps", "x@example.com"): None,
            ("roles", "postmaster@example.org"): "john@example.org",
            ("roles", "abuse@example.org"): "john@example.org",
            ("roles", "sales@example.org"): None,
            ("roles", "postmaster@old.example"): None,
        }
        for (name, lookup), answer in expected.items():
            assert await postfix.lookup(name, lookup) == answer, (name, lookup)

        dovecot_dir = directory / "dovecot"
        os.chmod(dovecot_dir, 0o755)  # noqa: S103 - Dovecot's own users reach their sockets
        async with dovecot(dovecot_dir) as config:
            async def auth(user: str, password: str) -> int:
                return (await _run("doveadm", "-c", str(config), "auth", "test", user,
                                   password))[0]

            assert await auth("john@example.org", "john-first-secret") == 0
            assert await auth("john@example.org", "wrong-secret") != 0
            code, out = await _run("doveadm", "-c", str(config), "user", "john@example.org")
            assert code == 0, out
            assert f"home\t/var/vmail/{home}" in out and "quota_rule\t*:storage=2048M" in out
            for gone in ("gone@example.org", "off@example.org", "a@old.example"):
                code, out = await _run("doveadm", "-c", str(config), "user", gone)
                assert code != 0 and "doesn't exist" in out, (gone, out)
            # a password change reaches Dovecot once its task has completed
            await make.done(key, await make.rest("PUT", "mailbox_update", key,
                                                 {"password": "john-second-secret"},
                                                 email="john@example.org"))
            assert await auth("john@example.org", "john-second-secret") == 0
            assert await auth("john@example.org", "john-first-secret") != 0
            # and a delete takes the mailbox out at once
            await make.done(key, await make.rest("DELETE", "mailbox_delete", key,
                                                 email="john@example.org"))
            assert await auth("john@example.org", "john-second-secret") != 0
    finally:
        shutil.rmtree(directory, ignore_errors=True)
