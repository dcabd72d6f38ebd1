"""Brakes on bad keys: failed key checks counted per client address in Redis; past the
limit, 429 before any key lookup, while good keys keep working."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.web.app import create_app
from tests.conftest import url

WRONG = "W" * 32


async def _api_key_scans(db) -> int:
    """How often Postgres has read api_keys (index or sequential scans), by its own
    statistics: an observer outside the app."""
    return await db.pool.fetchval(
        "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables "
        "WHERE relname = 'api_keys'")


async def _until_gone(db, application_name: str) -> None:
    """Wait until the app's connections have ended: a backend flushes its statistics as
    it exits."""
    for _ in range(200):
        if not await db.pool.fetchval("SELECT count(*) FROM pg_stat_activity "
                                      "WHERE application_name = $1", application_name):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the app's connections did not end")


async def test_wrong_keys_from_one_address_stop_reaching_postgres(make, db, settings):
    """500 wrong keys from one address: at most the limit (20) are looked up, the rest get
    429 with Retry-After; a right key from another address is unaffected meanwhile, and
    so is a key that worked from the address being refused."""
    flood_app = settings.replace(
        database_url=f"{settings.database_url}?application_name=mailprov-flood")
    _, key = await make.account("a")
    task = await make.domain(key)
    before = await _api_key_scans(db)
    good_requests = 0
    async with TestClient(TestServer(create_app(flood_app), host="127.0.0.1")) as web:
        path = url(web, "get_task")
        # the key worked from here before the flood (one lookup, and its last use written)
        assert (await web.get(path, params={"key": key, "task_id": task})).status == 200
        good_requests += 1

        async def wrong(n: int) -> tuple[int, dict[str, str], dict]:
            r = await web.get(path, params={"key": f"{n:032d}", "task_id": task})
            return r.status, dict(r.headers), await r.json()

        other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=other) as elsewhere:
            async def right() -> int:
                async with elsewhere.get(web.make_url(path),
                                         params={"key": key, "task_id": task}) as r:
                    return r.status

            answers = []
            for batch in range(10):
                answers += await asyncio.gather(*(wrong(batch * 50 + i) for i in range(50)))
                assert await right() == 200
                good_requests += 1
        # the address is refused, but the key that worked from it still works
        assert (await web.get(path, params={"key": key, "task_id": task})).status == 200
        good_requests += 1
        metrics = await (await web.get("/metrics")).text()
    statuses = [status for status, _, _ in answers]
    assert statuses.count(401) == 20 and statuses.count(429) == 480, statuses
    _, headers, body = next(a for a in answers if a[0] == 429)
    assert 0 < int(headers["Retry-After"]) <= 60 and headers["X-RateLimit-Limit"] == "20"
    assert body["reason"] == "Too many failed API key checks from this address; try again later."
    assert "mailprov_auth_failures_total 20.0" in metrics
    assert "mailprov_auth_throttled_total 480.0" in metrics

    await _until_gone(db, "mailprov-flood")
    scans = await _api_key_scans(db) - before
    # every good request is one lookup; the key's last use is written once (a scan of its
    # own); what is left is what the wrong keys cost Postgres
    assert good_requests <= scans - 1
    assert scans - 1 - good_requests <= 20, scans


async def test_a_key_never_seen_good_waits_like_the_others(make, settings):
    _, key = await make.account()
    tight = settings.replace(auth_failures_per_minute=3)
    async with TestClient(TestServer(create_app(tight))) as web:
        for expected in (401, 401, 401, 429):
            r = await web.get(url(web, "list_domain"), params={"key": WRONG, "caller_id": 1})
            assert r.status == expected
        # a key that never worked from anywhere is one more unknown key to this address
        r = await web.get(url(web, "list_domain"), params={"key": key, "caller_id": 1})
        assert r.status == 429
        # malformed and missing keys count as failures too, and are refused alike
        r = await web.post(url(web, "create_domain"), json={"Domain": "x.example"})
        assert r.status == 429


@pytest.mark.parametrize("trusted", [True, False])
async def test_forwarded_for_counts_only_behind_a_trusted_proxy(make, settings, captured,
                                                               trusted):
    account_id, _ = await make.account()
    tight = settings.replace(auth_failures_per_minute=2,
                             trusted_proxies="127.0.0.1/32, 10.0.0.0/8" if trusted else "")
    async with TestClient(TestServer(create_app(tight))) as web:
        async def as_from(address: str) -> int:
            # a proxy of ours (10.1.2.3) in between, and a client that lies on the left
            chain = f"6.6.6.6, {address}, 10.1.2.3"
            r = await web.get(url(web, "list_domain"), params={
                "key": WRONG, "caller_id": account_id}, headers={"X-Forwarded-For": chain})
            return r.status

        first = [await as_from("203.0.113.7") for _ in range(3)]
        second = [await as_from("198.51.100.9") for _ in range(3)]
    if trusted:  # each address has its own window
        assert first == second == [401, 401, 429]
    else:  # the header is ignored: one address, the peer's
        assert first == [401, 401, 429] and second == [429] * 3
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    refused = [line for line in lines if line.get("status") == 401]
    assert len(refused) == (4 if trusted else 2)
    expected = {"203.0.113.7", "198.51.100.9"} if trusted else {"127.0.0.1"}
    assert {line["client"] for line in refused} == expected


async def test_the_throttle_lets_checks_through_while_redis_is_away(make, settings):
    """Redis down: the throttle steps aside rather than refuse every key it has not seen
    work (a wrong key is still looked up, and 401); a poll, whose GET rate limit also
    steps aside while Redis is away, answers 200."""
    _, key = await make.account()
    task = await make.domain(key)
    away = settings.replace(redis_url="redis://127.0.0.1:1/0", rate_get=10**9)
    async with TestClient(TestServer(create_app(away))) as web:
        r = await web.get(url(web, "get_task"), params={"key": WRONG, "task_id": task})
        assert r.status == 401
        r = await web.get(url(web, "get_task"), params={"key": key, "task_id": task})
        assert r.status == 200, await r.text()
