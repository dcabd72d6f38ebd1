"""Structured logs: one JSON object per line from web and worker, carrying the request,
account and task they belong to, and never a key, a password or a hash."""

import hashlib
import io
import json
import logging

import pytest

from service.core import logs

JOHN = {"Email_fullname": "john", "single_bulk": "single", "Domain": "example.com",
        "Params": {"password": "a supplied secret 123"}}
BULK = {"Email_fullname": "team", "single_bulk": "bulk", "Domain": "example.com",
        "Params": {"count": 3}}
LIST = {"Email_fullname": "import", "single_bulk": "bulk", "Domain": "example.com",
        "Params": {"mailboxes": [{"local_part": "ann", "password": "ann's own secret"},
                                 {"local_part": "bob",
                                  "password_hash": "{SHA512-CRYPT}$6$salt$abcdefghijk"}]}}


async def test_a_whole_flow_logs_ids_and_no_secret(make, client, db, settings, captured):
    account_id, key = await make.account()
    await make.domain(key)
    tasks = []
    for body, route in ((JOHN, "create_mailbox_single"), (BULK, "create_mailbox_bulk"),
                        (LIST, "create_mailbox_bulk")):
        r = await make.post(route, body, key)
        assert r.status == 200, await r.text()
        tasks.append((await r.json())["task_id"])
    await make.run_worker()
    shown = {}
    for task_id in tasks:
        status, body = await make.task(key, task_id)
        assert status == 200 and body["status"] == "completed", body
        shown.update({a: i["password"] for a, i in body["results"].items() if "password" in i})
    assert len(shown) == 3  # team1-3 are generated; the others' were supplied
    # a wrong key, in the query string and in a header
    assert (await client.get("/api/v1/list/domain", params={"key": "K" * 32,
                                                            "caller_id": 1})).status == 401
    assert (await client.get("/api/v1/get/task", params={"task_id": 1},
                             headers={"Authorization": f"Bearer {key}x"})).status == 401

    text = captured.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    hashes = [r["password_hash"] for r in await db.pool.fetch("SELECT password_hash "
                                                               "FROM mailboxes")]
    secrets = [key, hashlib.sha256(key.encode()).hexdigest(), "a supplied secret 123",
               "ann's own secret", "$6$salt$abcdefghijk", "{ARGON2ID}", "$argon2id$",
               *shown.values(), *hashes]
    leaked = [s for s in secrets if s in text]
    assert not leaked, leaked

    requests = [line for line in lines if line.get("route")]
    assert {line["route"] for line in requests} >= {"create_domain", "create_mailbox_single",
                                                    "create_mailbox_bulk", "get_task",
                                                    "list_domain"}
    for line in requests:
        assert line["request_id"] and line["status"] and line["duration_ms"] >= 0
        # a successful read (a poll) is a DEBUG line; a write, or any failure, INFO
        quiet = line["method"] == "GET" and line["status"] < 400
        assert line["level"] == ("DEBUG" if quiet else "INFO")
        assert line["logger"] == "mailprov.web" and line["time"]
    authed = [line for line in requests if line["status"] == 200]
    assert authed and all(line["account_id"] == account_id for line in authed)
    assert all("account_id" not in line for line in requests if line["status"] == 401)

    jobs = [line for line in lines if line.get("job", "").startswith("provision_")
            and "outcome" in line]
    assert {line["task_id"] for line in jobs} >= set(tasks)
    for line in jobs:
        assert line["outcome"] == "done" and line["task_status"] == "completed"
        assert line["account_id"] == account_id and line["duration_ms"] >= 0
    bulk = next(line for line in jobs if line["task_id"] == tasks[1])
    assert bulk["items_created"] == 3 and bulk["task_type"] == "mailbox_bulk"
    # arq's own lines about a job carry its task too
    assert any(line["logger"] == "arq.worker" and line.get("task_id") == tasks[0]
               and "provision_mailbox_single" in line["message"] for line in lines)


def test_the_guard_redacts_what_code_should_never_have_logged(captured):
    log = logging.getLogger("mailprov.test")
    key = "Ab3dEfGh1jKlMn0pQrStUvWxYz012345"
    password = "Xk3pQ9zLm2Rt7Vb4Nc8W"
    argon = "{ARGON2ID}$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
    with logs.scope(request_id="0123456789abcdef0123456789abcdef", task_id=7):
        log.warning("oops %s %s %s", key, password, argon,
                    extra={"password": "hunter2", "api_key": "x", "route": "get_task"})
        try:
            raise ValueError(f"bad hash {argon}")
        except ValueError:
            log.exception("failed")
    text = captured.getvalue()
    for secret in (key, password, argon, "hunter2", "argon2id", "c2FsdHNhbHQ"):
        assert secret not in text, secret
    first, second = (json.loads(line) for line in text.splitlines())
    assert first["message"] == "oops [redacted] [redacted] [redacted]"
    assert first["password"] == first["api_key"] == "[redacted]"
    # what looks like a secret only by accident stays readable
    assert first["request_id"] == "0123456789abcdef0123456789abcdef" and first["task_id"] == 7
    assert first["route"] == "get_task"
    assert "ValueError: bad hash [redacted]" in second["exc_info"]
    # nothing leaks out of a scope
    log.info("after")
    assert "task_id" not in json.loads(captured.getvalue().splitlines()[-1])


def test_text_lines_for_a_terminal_carry_the_same_fields():
    stream = io.StringIO()
    record = logging.LogRecord("mailprov.worker", logging.INFO, __file__, 1,
                               "job %s: with %s", ("done", "Ab3dEfGh1jKlMn0pQrStUvWxYz012345"),
                               None)
    record.duration_ms = 12.5
    with logs.scope(task_id=42):
        logs.handler("text", stream).handle(record)
    line = stream.getvalue()
    assert "INFO mailprov.worker: job done: with [redacted]" in line
    assert "task_id=42" in line and "duration_ms=12.5" in line
    with pytest.raises(ValueError):
        logs.handler("xml")


KEY = "Ab3dEfGh1jKlMn0pQrStUvWxYz012345"


@pytest.mark.parametrize("text", [
    f"?key={KEY}_\\x01 HTTP/1.1", f"key={KEY}abc", f"{KEY}_", f"_{KEY}", f"x{KEY}",
    "key=" + "".join(f"%{ord(c):02X}" for c in KEY), f"Bearer {KEY[:16]}%41{KEY[16:]}",
    "pw Xk3pQ9zLm2Rt7Vb4Nc8W_", "pw _Xk3pQ9zLm2Rt7Vb4Nc8Wq",
])
def test_the_guard_finds_a_secret_without_word_boundaries(text):
    """A key (or a generated password) next to `_`, more letters, or written with %XX
    escapes is still found: `_` is a word character, so `\\b` missed `<KEY>_`."""
    redacted = logs.redact(text)
    assert "[redacted]" in redacted
    assert not any(piece in redacted for piece in (KEY[:12], KEY[-12:], "%41%62%33%64",
                                                   "Xk3pQ9zLm2"))


def test_the_guard_keeps_what_only_looks_alike_by_accident():
    for text in ("request 0123456789abcdef0123456789abcdef done", "HTTPRequestEntityTooLarge",
                 "task 1099511627776001", "mailprov-test:abcd1234:queue"):
        assert logs.redact(text) == text


def test_library_loggers_are_redacted_whatever_handles_them():
    """aiohttp's own lines (a malformed request's raw bytes) are guarded as they are made,
    even where something else configured logging and our formatter is not the one used."""
    logs.configure_logging()
    stream = io.StringIO()
    plain = logging.StreamHandler(stream)  # no mailprov formatter
    server = logging.getLogger("aiohttp.server")
    server.addHandler(plain)
    try:
        try:
            raise ValueError(f"Invalid char in url: b'GET /?key={KEY}_\\x01'")
        except ValueError:
            server.exception("Error handling request from %s %s", "10.0.0.1", KEY)
    finally:
        server.removeHandler(plain)
    text = stream.getvalue()
    assert "Error handling request from 10.0.0.1 [redacted]" in text
    assert "ValueError" in text and KEY not in text
