"""Domains that send and verify (issue 14), against real servers on loopback: a Knot DNS
serving a zone this test writes (MAILPROV_DNS_RESOLVER points at it), and for the
signing proof a Postfix of the test's own whose milter is an OpenDKIM reading the files
`mailprov mailstack dkim` wrote; dkimpy verifies what Postfix relays, against the key
Knot serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import json
import os
import re
import shutil
import smtplib
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim as dkimpy
import pytest
from arq.connections import ArqRedis

from service.cli.embedded import free_port
from service.core.settings import Settings
from tests.conftest import url
from tests.integration.signing_servers import Knot, OpenDkim, Postfix, Sink
from worker import domain_dns
from worker.context import KEY, JobContext
from worker.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]
ZONE = "example.com"
MX = "mx.mailprov.test"


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Knot]:
    server = Knot(tmp_path_factory.mktemp("knot"), ZONE)
    yield server
    server.stop()


@pytest.fixture
async def settings(settings: Settings, knot: Knot) -> AsyncIterator[Settings]:
    """The test's settings, verification asking the test's Knot; /ops on."""
    knot.publish([])
    yield settings.replace(dns_resolver=knot.resolver, mx_host=MX, dns_timeout_s=2.0,
                           ops_token="ops-token-for-the-test-" + "x" * 20)


async def _domain(make: Any, key: str) -> None:
    r = await make.rest("POST", "domain_create", key, json={"domain": ZONE})
    task = await make.done(key, r)
    assert task["status"] == "completed", task


async def _dns(make: Any, key: str) -> dict[str, Any]:
    r = await make.rest("GET", "domain_dns", key, domain=ZONE)
    assert r.status == 200, r.body
    return r.body


async def _verify(make: Any, key: str) -> dict[str, Any]:
    task = await make.done(key, await make.rest("POST", "domain_verify", key, domain=ZONE))
    assert task["status"] == "completed" and task["type"] == "domain_verify", task
    return task


async def _status_in_both_faces(make: Any, client: Any, account_id: int, key: str) -> set[str]:
    resource = await make.rest("GET", "domain", key, domain=ZONE)
    listing = await client.get(url(client, "list_domain"),
                               params={"key": key, "caller_id": str(account_id)})
    body = await listing.json()
    # the MailAPI's list keeps its shape: only the status's value may now be `verified`
    assert set(body["results"][ZONE]) == {"status", "domain_quota", "mailbox_count",
                                          "created_at"}
    return {resource.body["status"], body["results"][ZONE]["status"]}


def _published(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{k: r[k] for k in ("type", "name", "value")} for r in records]


async def test_verification_reports_each_record_and_verifies_in_both_faces(
        make, client, knot, settings, db):
    account_id, key = await make.account()
    await _domain(make, key)
    dns = await _dns(make, key)
    records = dns["records"]
    assert [(r["type"], r["role"]) for r in records] == [
        ("MX", "mx"), ("TXT", "spf"), ("TXT", "dkim"), ("TXT", "dmarc"),
        ("CNAME", "autoconfig"), ("CNAME", "autodiscover")]
    mx, spf, dkim_record = records[0], records[1], records[2]
    assert mx["name"] == ZONE and mx["value"] == f"10 {MX}."
    assert spf["name"] == ZONE and spf["value"] == "v=spf1 mx -all"
    # full owner names, TXT values unquoted, CloudMailin's fields on the DKIM record
    assert re.fullmatch(r"mp\d{8}-[0-9a-f]{4}\._domainkey\.example\.com", dkim_record["name"])
    assert dkim_record["value"].startswith("v=DKIM1; k=rsa; p=MIIB")
    assert dkim_record["dkim_domain"] == dkim_record["name"]
    assert dkim_record["dkim_selector"] == dkim_record["name"].split(".")[0]
    assert dkim_record["dkim_public_record"] == dkim_record["value"]
    assert records[3]["name"] == f"_dmarc.{ZONE}"
    assert {r["name"] for r in records[4:]} == {f"autoconfig.{ZONE}", f"autodiscover.{ZONE}"}
    assert all(r["state"] == "unchecked" and not r["verified"] for r in records)

    # nothing published: each record missing, the domain stays active
    task = await _verify(make, key)
    assert set(task["results"]) == {f"{r['type']} {r['name']}" for r in records}
    assert {v["status"] for v in task["results"].values()} == {"Missing."}
    dns = await _dns(make, key)
    assert [r["state"] for r in dns["records"]] == ["missing"] * 6
    assert not (dns["mx_verified"] or dns["spf_verified"] or dns["dkim_verified"])
    assert await _status_in_both_faces(make, client, account_id, key) == {"active"}

    # exactly what GET .../dns returned: verified, in both faces
    knot.publish(_published(records))
    task = await _verify(make, key)
    assert {v["status"] for v in task["results"].values()} == {"Published as expected."}
    dns = await _dns(make, key)
    assert all(r["verified"] for r in dns["records"]), dns
    assert dns["mx_verified"] and dns["spf_verified"] and dns["dkim_verified"]
    assert dns["status"] == "verified" and dns["checked_at"] and dns["lost_at"] is None
    assert await _status_in_both_faces(make, client, account_id, key) == {"verified"}

    # another key's value at the selector: wrong, not missing, and no longer verified
    other = re.sub(r"p=MIIB(.)", lambda m: "p=MIIB" + ("A" if m[1] != "A" else "B"),
                   dkim_record["value"])
    knot.publish([*_published(records[:2]), {**_published([dkim_record])[0], "value": other}])
    task = await _verify(make, key)
    assert task["results"][f"TXT {dkim_record['name']}"]["status"] == \
        "Published with another value."
    found = (await _dns(make, key))["records"][2]
    assert found["state"] == "wrong" and not found["dkim_verified"]
    assert found["found"] == [other]
    assert await _status_in_both_faces(make, client, account_id, key) == {"active"}

    # the periodic recheck: verified again, then the records disappear
    knot.publish(_published(records))
    await _verify(make, key)
    assert await _status_in_both_faces(make, client, account_id, key) == {"verified"}
    knot.publish([])
    ctx = {KEY: JobContext(settings.replace(dns_recheck_after_s=0), db,
                           ArqRedis.from_url(settings.redis_url), None, WorkerMetrics())}
    try:
        assert await domain_dns.recheck(ctx) == 1
    finally:
        await ctx[KEY].redis.aclose()
    dns = await _dns(make, key)
    assert dns["status"] == "active" and dns["lost_at"] is not None
    assert {r["state"] for r in dns["records"]} == {"missing"}
    assert await _status_in_both_faces(make, client, account_id, key) == {"active"}


def _mailstack_dkim(settings: Settings, out: Path, socket: str) -> str:
    """`mailprov mailstack dkim` as an operator runs it; its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPROV_")}
    env.update(DATABASE_URL=settings.database_url, MAILPROV_SECRET_KEY=settings.secret_key)
    done = subprocess.run([sys.executable, "-m", "service.cli", "--json", "mailstack", "dkim",
                           "--out", str(out), "--socket", socket], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def _send(port: int, subject: str) -> None:
    message = EmailMessage()
    message["From"] = f"alice@{ZONE}"
    message["To"] = "bob@elsewhere.test"
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.replace(' ', '.')}@{ZONE}>"
    message.set_content("Signed on the way out.\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.send_message(message)


def _selector(message: bytes) -> str:
    signature = email.message_from_bytes(message)["DKIM-Signature"]
    assert signature is not None, message.decode(errors="replace")
    return re.search(r"\bs=([^;\s]+)", signature)[1]  # type: ignore[index]


@pytest.fixture
def signer_files() -> Iterator[Path]:
    """Where `mailstack dkim` writes. OpenDKIM refuses a key with a world-writable
    directory above it (/tmp), as an operator's under /etc/opendkim has none: these go
    under the checkout's ignored .mailprov/, or, for a checkout under such a directory,
    under the home directory's cache."""
    for base in (ROOT / ".mailprov", Path.home() / ".cache" / "mailprov-test"):
        base.mkdir(parents=True, exist_ok=True)
        if not any(p.stat().st_mode & stat.S_IWOTH for p in (base, *base.parents)):
            break
    else:
        raise AssertionError(f"no directory without a world-writable parent: {base}")
    out = Path(tempfile.mkdtemp(prefix="opendkim-test-", dir=base))
    yield out
    shutil.rmtree(out, ignore_errors=True)


async def test_mail_leaves_signed_before_and_after_a_rotation_and_no_key_leaks(
        make, client, knot, settings, tmp_path, captured, signer_files):
    _, key = await make.account()
    seen: list[str] = []  # every response body and page this test is shown

    async def rest(method: str, route: str, **parts: Any) -> Any:
        r = await make.rest(method, route, key, **parts)
        seen.append(json.dumps(r.body))
        return r

    task = await make.done(key, await rest("POST", "domain_create", json={"domain": ZONE}))
    seen.append(json.dumps(task))
    first = task["results"][ZONE]["dkim_selector"]
    records = (await rest("GET", "domain_dns", domain=ZONE)).body["records"]
    knot.publish(_published(records))

    out, milter = signer_files, free_port()
    seen.append(_mailstack_dkim(settings, out, f"inet:{milter}@127.0.0.1"))
    assert oct((out / "keys").stat().st_mode & 0o777) == "0o700"
    [key_file] = (out / "keys").glob("*.private")
    assert key_file.name == f"{first}._domainkey.{ZONE}.private"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    pems = [key_file.read_text()]

    sink = Sink()
    await sink.start()
    stopping = contextlib.ExitStack()
    try:
        signer = OpenDkim(out / "opendkim.conf", milter, tmp_path / "opendkim.log")
        stopping.callback(signer.stop)
        postfix = Postfix(sink.port, milter)
        stopping.callback(postfix.stop)
        await asyncio.to_thread(_send, postfix.port, "before rotation")
        before = await sink.next_message(1)
        assert _selector(before) == first
        assert dkimpy.verify(before, dnsfunc=knot.txt_lookup), before.decode(errors="replace")

        rotated = await make.done(key, await rest("POST", "domain_dkim_rotate", domain=ZONE,
                                                  json={}))
        seen.append(json.dumps(rotated))
        second = rotated["results"][ZONE]["dkim_selector"]
        assert second != first
        records = (await rest("GET", "domain_dns", domain=ZONE)).body["records"]
        dkim_records = [r for r in records if r["role"] == "dkim"]
        assert [r["dkim_selector"] for r in dkim_records] == [second, first]
        assert dkim_records[0]["retire_at"] is None and dkim_records[1]["retire_at"]
        knot.publish(_published(records))
        seen.append(_mailstack_dkim(settings, out, f"inet:{milter}@127.0.0.1"))
        [key_file] = (out / "keys").glob("*.private")
        assert key_file.name == f"{second}._domainkey.{ZONE}.private"
        pems.append(key_file.read_text())
        signer.reload()
        # SIGUSR1 is read between messages: send until the new key signs
        for attempt in range(2, 20):
            await asyncio.to_thread(_send, postfix.port, f"after rotation {attempt}")
            after = await sink.next_message(attempt)
            if _selector(after) == second:
                break
        assert _selector(after) == second
        # both selectors verify during the grace period
        assert dkimpy.verify(after, dnsfunc=knot.txt_lookup), after.decode(errors="replace")
        assert dkimpy.verify(before, dnsfunc=knot.txt_lookup)
    finally:
        stopping.close()
        await sink.stop()

    # no private key in any response, log line or /ops page
    ops = {"Authorization": f"Bearer {settings.ops_token}"}
    for path in [url(client, "ops")] + [url(client, "ops_task", task_id=t)
                                         for t in (task["id"], rotated["id"])]:
        page = await client.get(path, headers=ops)
        assert page.status == 200
        seen.append(await page.text())
    everything = "\n".join(seen) + captured.getvalue()
    assert "PRIVATE KEY" not in everything
    for pem in pems:
        body = "".join(pem.splitlines()[1:-1])
        for chunk in (body[i:i + 40] for i in range(0, len(body), 40)):
            assert chunk not in everything
