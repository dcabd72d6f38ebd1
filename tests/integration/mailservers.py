"""A Postfix and a Dovecot of the test's own, configured by `mailprov mailstack config`
(service/core/mailstack.py), on free loopback ports, with a private queue, run directory
and mail root in a temporary directory. Nothing of the machine's own Postfix or Dovecot is
read, started or touched; each process is stopped by its own pid (Postfix by the pid its
master wrote in its own queue directory). Used by tests/integration/test_mail_stack_e2e.py
and the bench's mail stack scenario.

Both daemons start as root (they drop privileges themselves) and deliver as uid/gid
VMAIL_ID, which needs no passwd entry.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from service.cli.embedded import free_port, port_open
from service.core import mailstack

VMAIL_ID = 5000
# the daemons of Debian's master.cf that a virtual-only Postfix uses, none chrooted: a
# chroot would need copies of /etc files in the private queue directory
MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@dataclass
class MailServers:
    """Where the two listen, and the files they run from."""

    directory: Path
    database_url: str
    smtp_port: int = field(default_factory=free_port)
    imap_port: int = field(default_factory=free_port)
    lmtp_port: int = field(default_factory=free_port)
    doveadm_port: int = field(default_factory=free_port)
    doveadm_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    dovecot: asyncio.subprocess.Process | None = None

    @property
    def doveadm_url(self) -> str:
        return f"http://127.0.0.1:{self.doveadm_port}"

    @property
    def postfix_dir(self) -> Path:
        return self.directory / "postfix"

    def site(self) -> mailstack.Site:
        return mailstack.Site(
            database_url=self.database_url, postfix_dir=str(self.postfix_dir),
            dovecot_dir=str(self.directory / "dovecot"),
            vmail_root=str(self.directory / "vmail"), vmail_uid=VMAIL_ID, vmail_gid=VMAIL_ID,
            smtp_listen=f"127.0.0.1:{self.smtp_port}", imap_address="127.0.0.1",
            imap_port=self.imap_port, lmtp_port=self.lmtp_port,
            doveadm_port=self.doveadm_port, doveadm_key=self.doveadm_key,
            base_dir=str(self.directory / "run"), log_path=str(self.directory / "dovecot.log"))

    def write(self) -> None:
        """The generated files, and what a private Postfix instance adds to them."""
        mailstack.write(self.site(), self.directory)
        vmail = self.directory / "vmail"
        vmail.mkdir()
        os.chown(vmail, VMAIL_ID, VMAIL_ID)
        # Postfix makes what is under them (`postfix start` runs its checks)
        (self.directory / "postfix-queue").mkdir()
        (self.directory / "postfix-data").mkdir()
        shutil.chown(self.directory / "postfix-data", "postfix")
        generated = (self.postfix_dir / "main.cf").read_text()
        # mynetworks: the tests' client on 127.0.0.1 is a stranger, so what it may do the
        # world may
        (self.postfix_dir / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.directory}/postfix-queue
data_directory = {self.directory}/postfix-data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mailprov-test.localhost
mydestination =
mynetworks = 192.0.2.1/32
alias_maps =
alias_database =
local_recipient_maps =
maillog_file_prefixes = {self.directory}
maillog_file = {self.directory}/postfix.log
smtputf8_enable = no
{generated}""")
        # a refused login answers at once, and costs no penalty to the next ones from
        # 127.0.0.1 (up to 15 s each): the tests try wrong passwords on purpose, and the
        # bench tries a login until the mailbox exists
        with (self.directory / "dovecot" / "dovecot.conf").open("a") as conf:
            conf.write("auth_failure_delay = 0\n"
                       "service anvil {\n  unix_listener anvil-auth-penalty {\n"
                       "    mode = 0\n  }\n}\n")
        master = (self.postfix_dir / "master.cf").read_text()
        (self.postfix_dir / "master.cf").write_text(MASTER_CF + master)

    async def postfix(self, command: str) -> None:
        process = await asyncio.create_subprocess_exec(
            "postfix", "-c", str(self.postfix_dir), command,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"postfix {command}: {out.decode()}{self.logs()}")

    def logs(self) -> str:
        return "".join(f"\n--- {name}\n" + (self.directory / name).read_text()[-4000:]
                       for name in ("postfix.log", "dovecot.log")
                       if (self.directory / name).exists())

    async def start(self) -> None:
        # the daemons' own users must reach their sockets and files in here
        os.chmod(self.directory, 0o755)  # noqa: S103 - nothing secret in the directory
        self.write()
        await self.postfix("start")
        self.dovecot = await asyncio.create_subprocess_exec(
            "dovecot", "-F", "-c", str(self.directory / "dovecot" / "dovecot.conf"))
        async with asyncio.timeout(30):
            for port in (self.smtp_port, self.imap_port, self.lmtp_port, self.doveadm_port):
                while not port_open("127.0.0.1", port):
                    if self.dovecot.returncode is not None:
                        raise RuntimeError(f"dovecot exited {self.dovecot.returncode}"
                                           f"{self.logs()}")
                    await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.dovecot is not None and self.dovecot.returncode is None:
            self.dovecot.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.dovecot.wait()
            except TimeoutError:
                self.dovecot.kill()
                await self.dovecot.wait()
        if (self.directory / "postfix-queue" / "pid" / "master.pid").exists():
            await self.postfix("stop")


@asynccontextmanager
async def running(database_url: str) -> AsyncIterator[MailServers]:
    """Both, started; stopped and removed at the end."""
    servers = MailServers(Path(tempfile.mkdtemp(prefix="mailprov-mailstack-")), database_url)
    try:
        await servers.start()
        yield servers
    finally:
        await servers.stop()
        shutil.rmtree(servers.directory, ignore_errors=True)
