"""Real servers for the DKIM and DNS tests, each of the test's own: Knot DNS serving a zone
the test writes, OpenDKIM in the foreground on the files `mailprov mailstack dkim` wrote,
Postfix with a private configuration directory and queue, and an SMTP sink that keeps
what Postfix relays to it. All listen on free loopback ports and are stopped by their own
pid (Postfix through its own pid file: `postfix -c DIR stop`); the machine's instances
are never touched.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import dns.resolver

from service.cli.embedded import free_port, port_open
from service.core import mailstack
from tests.integration.mailservers import MASTER_CF

STARTUP_S = 30.0


def _wait(check: object, what: str, within_s: float = STARTUP_S) -> None:
    deadline = time.monotonic() + within_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s:.0f} s: {what}")
        time.sleep(0.05)


def _txt(value: str) -> str:
    """A TXT value as a zone file holds it: quoted strings of at most 255 bytes each."""
    chunks = [value[i:i + 255] for i in range(0, len(value), 255)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


class Knot:
    """An authoritative Knot DNS for one zone; `publish` rewrites the zone and waits
    until the new serial is served."""

    def __init__(self, directory: Path, zone: str) -> None:
        self.dir, self.zone = directory, zone
        self.port = free_port()
        self.serial = 0
        self.conf = directory / "knot.conf"
        self.conf.write_text(f"""
server:
    listen: 127.0.0.1@{self.port}
    rundir: {directory}
log:
  - target: stderr
    any: error
database:
    storage: {directory}/db
control:
    listen: {directory}/knot.sock
template:
  - id: default
    storage: {directory}
    journal-content: none
    zonefile-sync: -1
    zonefile-load: whole
zone:
  - domain: {zone}
    file: zone
""")
        self.publish([])
        with (directory / "knotd.log").open("wb") as log:
            self.popen = subprocess.Popen(["knotd", "-c", str(self.conf)],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=log)
        try:
            _wait(lambda: self._served() == self.serial, "knotd serves the zone")
        except AssertionError:
            self.stop()
            raise

    @property
    def resolver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _served(self) -> int | None:
        asker = dns.resolver.Resolver(configure=False)
        asker.nameservers, asker.port, asker.lifetime = ["127.0.0.1"], self.port, 1.0
        try:
            return asker.resolve(self.zone, "SOA")[0].serial  # type: ignore[attr-defined]
        except dns.exception.DNSException:
            return None

    def txt_lookup(self, name: bytes | str, timeout: int = 5) -> bytes | None:
        """dkimpy's dnsfunc: the TXT record at `name`, served by this Knot."""
        asker = dns.resolver.Resolver(configure=False)
        asker.nameservers, asker.port, asker.lifetime = ["127.0.0.1"], self.port, timeout
        owner = name.decode() if isinstance(name, bytes) else name
        try:
            answer = asker.resolve(owner, "TXT")
        except dns.exception.DNSException:
            return None
        return b"".join(answer[0].strings)  # type: ignore[attr-defined]

    def publish(self, records: list[dict[str, str]]) -> None:
        """Serve exactly these records (each with type, name and value, as GET .../dns
        gives them), besides the SOA and NS."""
        self.serial += 1
        lines = [f"$ORIGIN {self.zone}.",
                 f"@ 300 IN SOA ns.{self.zone}. hostmaster.{self.zone}. {self.serial} "
                 "3600 600 86400 300",
                 f"@ 300 IN NS ns.{self.zone}.", "ns 300 IN A 127.0.0.1"]
        for r in records:
            value = _txt(r["value"]) if r["type"] == "TXT" else r["value"]
            lines.append(f"{r['name']}. 300 IN {r['type']} {value}")
        (self.dir / "zone").write_text("\n".join(lines) + "\n")
        if self.serial > 1:
            subprocess.run(["knotc", "-c", str(self.conf), "zone-reload", self.zone],
                           check=True, capture_output=True)
            _wait(lambda: self._served() == self.serial, "knotd serves the new zone")

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(10)


class OpenDkim:
    """OpenDKIM in the foreground on `mailprov mailstack dkim`'s opendkim.conf."""

    def __init__(self, conf: Path, port: int, log: Path) -> None:
        self.port = port
        with log.open("wb") as out:
            self.popen = subprocess.Popen(["opendkim", "-f", "-x", str(conf)],
                                          stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT)
        try:
            _wait(lambda: port_open("127.0.0.1", port), "opendkim listens")
        except AssertionError:
            self.stop()  # not left running when the test fails here
            raise

    def reload(self) -> None:
        """SIGUSR1: OpenDKIM reads its configuration and tables again."""
        self.popen.send_signal(10)

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(10)


class Sink:
    """An SMTP server that accepts every message and keeps it (just enough SMTP for
    Postfix's smtp client: no extensions, no TLS)."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.arrived = asyncio.Event()
        self.port = free_port()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", self.port)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        say("220 sink ESMTP")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"DATA":
                say("354 go on")
                data = []
                while (part := await reader.readline()) not in (b".\r\n", b""):
                    data.append(part[1:] if part.startswith(b"..") else part)
                self.messages.append(b"".join(data))
                self.arrived.set()
                say("250 kept")
            elif verb == b"QUIT":
                say("221 bye")
                break
            else:
                say("250 sink")  # EHLO, MAIL, RCPT, RSET, NOOP
            await writer.drain()
        await writer.drain()
        writer.close()

    async def next_message(self, count: int) -> bytes:
        """The `count`-th message to arrive (1-based), waiting for it."""
        while len(self.messages) < count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), STARTUP_S)
        return self.messages[count - 1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()




class Postfix:
    """A Postfix of the test's own: its configuration directory, queue and data
    directory under `directory`, smtpd on a free loopback port, every message relayed to
    the sink, and the milter (OpenDKIM) as `mailstack config --dkim-milter` writes it."""

    def __init__(self, relay_port: int, milter_port: int) -> None:
        # its own directory, outside pytest's 0700 tree: Postfix's daemons run as `postfix`
        directory = self.dir = Path(tempfile.mkdtemp(prefix="mailprov-postfix-"))
        directory.chmod(0o755)
        self.port = free_port()
        conf = directory / "conf"
        conf.mkdir()
        (directory / "queue").mkdir()
        (directory / "data").mkdir()
        shutil.chown(directory / "data", "postfix")
        (conf / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {directory}/queue
data_directory = {directory}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = mx.mailprov.test
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{relay_port}
smtp_dns_support_level = disabled
maillog_file = {directory}/postfix.log
maillog_file_prefixes = {directory}
alias_maps =
alias_database =
""" + "\n".join(mailstack.postfix_milters(f"inet:127.0.0.1:{milter_port}")) + "\n")
        (conf / "master.cf").write_text(f"127.0.0.1:{self.port} inet n - n - - smtpd\n"
                                        + MASTER_CF)
        self.conf = conf
        try:
            subprocess.run(["postfix", "-c", str(conf), "start"], check=True,
                           capture_output=True)
            _wait(lambda: port_open("127.0.0.1", self.port), "postfix's smtpd listens")
        except (AssertionError, subprocess.CalledProcessError):
            self.stop()
            raise

    def log(self) -> str:
        path = self.dir / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        # `postfix stop` signals the master whose pid this instance's queue holds
        subprocess.run(["postfix", "-c", str(self.conf), "stop"], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
