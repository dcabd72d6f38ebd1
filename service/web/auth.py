"""Who is calling: the API key, what it may do (its Grant), and what the request names,
read with it in one round trip.

Every check of a key passes the failed-auth throttle first (service/web/throttle.py),
except a key this process saw work within the last minute. A key's first success in a
minute (per process) also records its last use and tells the throttle it is good: the
hot path of an active key writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from service.core import accounts, logs
from service.core.accounts import Grant
from service.core.errors import InvalidApiKey
from service.web.call import Call
from service.web.clients import client_of
from service.web.ops.metrics import METRICS
from service.web.route import Lookup
from service.web.state import DB, KEY_USES, THROTTLE
from service.web.throttle import AuthThrottled


def bearer(request: web.Request) -> str | None:
    """The credentials of an `Authorization: Bearer` header; None without one."""
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else None


def presented_key(request: web.Request, key: Any) -> str | None:
    """The request's key: a Bearer header, else `key` from the body or query string; None
    when it is missing or malformed."""
    header = bearer(request)
    if header is not None:
        key = header
    if not isinstance(key, str) or not accounts.KEY_FORMAT.fullmatch(key):
        return None
    return key


def _refused(request: web.Request, counted: bool) -> InvalidApiKey:
    if counted:
        request.app[METRICS].auth_failures.inc()
    return InvalidApiKey()


# a body may name a key in several places (only the top-level `key` counts); a real one
# names it once, so a few are tried at most
MAX_CANDIDATES = 3


async def admit_body(request: web.Request, candidates: set[str] | None) -> None:
    """Before a body is parsed: pass only when one of the keys it could hold (or its
    Bearer header) is live. A request without a working key then costs a scan of its bytes
    and at most a key lookup per candidate, never a parse (the parse of a 1 MiB body costs
    tens of milliseconds). A key this process saw work within the minute passes at once,
    so this adds nothing to the hot path; the request is still authenticated by the key
    the parsed body holds. `candidates`: None when the body holds more than
    MAX_CANDIDATES."""
    header = bearer(request)
    if header is not None:
        candidates = {header}
    # more candidates than a real request has: tried as none (one failed check)
    tried = sorted(candidates or ())
    uses = request.app[KEY_USES]
    if any(uses.recent(accounts.digest(c)) for c in tried):
        return
    attempts = tried or [""]
    for n, candidate in enumerate(attempts, 1):
        try:
            # the metric counts the request's one 401, not each candidate's
            await authenticate(request, {"key": candidate}, None, last=n == len(attempts))
            return
        except InvalidApiKey:
            if n == len(attempts):
                raise


async def authenticate(request: web.Request, raw: Mapping[str, Any],
                       lookup: Lookup | None, *, bearer_only: bool = False,
                       last: bool = True, reuse: bool = False) -> Call:
    """The call of the request's key (only its Bearer header when `bearer_only`); 401 when
    the key is not a live one, 429 when its address failed too often. With a lookup whose
    value can be read from the raw input (or the path), the key and what it names are read
    in one round trip. `last`: a 401 from here is the request's answer (it counts in the
    metrics). `reuse`: a recent key's reusable lookup may answer from what it found last
    (Lookup.reusable), with no round trip at all."""
    app = request.app
    presented = presented_key(request, None if bearer_only else raw.get("key"))
    key_hash = None if presented is None else accounts.digest(presented)
    client = client_of(request)
    uses, throttle = app[KEY_USES], app[THROTTLE]
    recent = key_hash is not None and uses.recent(key_hash)
    counted = False
    if not recent:
        try:
            counted = await throttle.admit(client, key_hash)
        except AuthThrottled:
            app[METRICS].auth_throttled.inc()
            raise
    if key_hash is None:
        raise _refused(request, last)
    db = app[DB]
    target = None if lookup is None else lookup.raw(
        request.match_info if lookup.in_path else raw)
    if reuse and recent and lookup is not None and lookup.reusable and target is not None:
        reused = uses.found(key_hash, target)
        if reused is not None:
            logs.bind(account_id=reused["account_id"])
            return Call(request, Grant.of(reused), key_hash, reused, target, reused=True)
    if lookup is not None and target is not None:
        found = await lookup.fetch(db, key_hash, target)
        row = found
    else:
        found, row = None, await db.resolve_key(key_hash=key_hash)
    if row is None:
        if recent:  # it worked a moment ago: revoked or expired since
            uses.forget(key_hash)
            await throttle.failed(client)
        raise _refused(request, last)
    grant = Grant.of(row)
    if lookup is not None and lookup.reusable and found is not None and found["id"] is not None:
        uses.remember(key_hash, target, found)
    if not recent:
        await db.touch_key(key_id=grant.key_id)
        await throttle.trust(client, key_hash, counted)
        uses.mark(key_hash)
    logs.bind(account_id=grant.account_id)  # on every line logged for the rest of the request
    return Call(request, grant, key_hash, found, target)
