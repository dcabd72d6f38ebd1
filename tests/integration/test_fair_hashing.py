"""The worker's fair hashing (worker/hashing.py) on a real process pool: accounts take
turns, each account's hashes come back in order, and work a job gave up is dropped."""

from __future__ import annotations

import asyncio
import contextlib

from service.core import passwords
from service.core.passwords import Hasher
from worker.hashing import MAX_BATCH, FairHasher

A, B = 1, 2


async def test_a_newcomer_waits_for_the_running_batches_only(hasher: Hasher):
    fair = FairHasher(hasher)
    finished: list[tuple[int, int]] = []
    a = fair.submit(A, [f"a-{i}" for i in range(400)])
    for i, future in enumerate(a):
        future.add_done_callback(lambda _, i=i: finished.append((A, i)))
    await a[3]  # A is under way, its batches sized from what a hash costs
    (b,) = fair.submit(B, ["b-0"])
    # A's hashes done when B came: at least 4, more when this test resumed late (a busy
    # machine runs other callbacks first)
    before = len(finished)
    b.add_done_callback(lambda _: finished.append((B, 0)))
    hashed = await b
    ahead = finished.index((B, 0))
    # from B's arrival, at most the batches running then, the one A is owed (it was ahead
    # in line), and one more while B's ran; far less than what A still had to do
    assert ahead - before <= 2 * hasher.processes * MAX_BATCH < 400 - before, (before, ahead)
    assert passwords.verify(hashed, "b-0")
    results = await asyncio.gather(*a)
    # each future holds the hash of its own password
    assert all(passwords.verify(h, f"a-{i}") for i, h in enumerate(results) if i % 25 == 0)


async def test_accounts_alternate_batch_by_batch(hasher: Hasher):
    fair = FairHasher(hasher)
    await asyncio.gather(*fair.submit(A, ["warm-up"] * 8))  # the cost is measured
    finished: list[int] = []
    futures = {who: fair.submit(who, [f"{who}-{i}" for i in range(400)]) for who in (A, B)}
    for who, batch in futures.items():
        for future in batch:
            future.add_done_callback(lambda _, who=who: finished.append(who))
    await asyncio.gather(*futures[A], *futures[B])
    # A, first in, takes the idle processes; from then on the two take turns, so in the
    # first half of the work each has had about half (give or take the running batches)
    half = finished[:400]
    assert abs(half.count(A) - 200) <= 2 * hasher.processes * MAX_BATCH, half.count(A)


async def test_a_job_that_stops_leaves_nothing_queued(hasher: Hasher):
    fair = FairHasher(hasher)
    many = fair.hashes(A, [f"a-{i}" for i in range(300)])
    async with contextlib.aclosing(many):
        first = await anext(many)
    assert passwords.verify(first, "a-0")
    assert fair._queues == {}  # the 299 it did not wait for are gone
    assert passwords.verify((await asyncio.gather(*fair.submit(B, ["b"])))[0], "b")
