"""The one wrapper that applies a route's policy, in the same order for every route, so
no handler repeats it (the order is Policy's docstring; service/web/route.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from service.core.errors import DomainNotFound, ReadOnlyKey, UnauthorizedCaller
from service.web import idempotency
from service.web.accepts import StaleRead
from service.web.api.schemas import load, values_at
from service.web.auth import MAX_CANDIDATES, admit_body, authenticate
from service.web.body import key_candidates, parse, raw_body
from service.web.call import Call
from service.web.route import Route
from service.web.state import DB, DOMAIN_PATHS, SCHEMAS


def wrap(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler of a route: its policy, then its handler."""
    policy = route.policy
    if policy is None:
        return route.handler

    async def handle(request: web.Request) -> web.StreamResponse:
        raw: Mapping[str, Any] = request.query
        if policy.body is not None:
            body = await raw_body(request, policy.empty_body)
            if body is None:
                raw = {}
            else:
                # only a body whose key works is parsed: no request without one costs more
                # than a scan of its bytes and a key lookup
                await admit_body(request, set() if policy.bearer
                                 else key_candidates(body, MAX_CANDIDATES))
                raw = parse(body)
        idempotent = policy.idempotent and idempotency.HEADER in request.headers
        # a task-recording write may build on its key's last read (Lookup.reusable)
        reuse = policy.task is not None and not idempotent
        call = await authenticate(request, raw, policy.lookup, bearer_only=policy.bearer,
                                  reuse=reuse)
        try:
            return await _admitted(route, call, raw, idempotent)
        except StaleRead:
            # the key or what it read has changed since: the long way, read afresh
            call = await authenticate(request, raw, policy.lookup, bearer_only=policy.bearer)
            return await _admitted(route, call, raw, idempotent)

    handle.__name__ = route.name
    return handle


async def _admitted(route: Route, call: Call, raw: Mapping[str, Any],
                    idempotent: bool) -> web.StreamResponse:
    if route.writes and call.key.read_only:
        raise ReadOnlyKey
    if idempotent:
        return await idempotency.run(call, raw, lambda: _proceed(route, call, raw))
    return await _proceed(route, call, raw)


async def _proceed(route: Route, call: Call, raw: Mapping[str, Any]) -> web.StreamResponse:
    policy = route.policy
    assert policy is not None
    request = call.request
    call.data = data = load(request.app[SCHEMAS][route.name], raw)
    if policy.caller and data["caller_id"] != call.account_id:
        raise UnauthorizedCaller
    # a read counts against its limit whatever it finds; a write only once it is accepted
    if not route.writes:
        await call.count(policy.rate, reads=True)
    key = call.key
    lookup = policy.lookup
    if lookup is not None:
        # a path parameter is read as sent (None: it names nothing); a field as validated
        wanted = call.looked_up if lookup.in_path else lookup.validated(data)
        if wanted is not None and call.looked_up != wanted:
            # the raw value could not be read cheaply, yet it validated: read it now
            call.found = await lookup.fetch(request.app[DB], call.key_hash, wanted)
        found = call.found
        if (wanted is None or found is None or found["id"] is None
                or not key.covers(found[lookup.domain])):
            raise lookup.missing
    # every domain the request names, wherever its schema has one (a key limited to other
    # domains is told what it would be told of a domain that does not exist)
    for path in request.app[DOMAIN_PATHS][route.name]:
        if not all(key.covers(name) for name in values_at(data, path)):
            raise lookup.missing if lookup is not None else DomainNotFound
    if policy.check is not None:
        assert call.found is not None
        policy.check(data, call.found)
    if route.writes:
        if policy.task is not None and call.recording is None:
            # counted with its job's enqueue, one round trip for both (Call.submit)
            call.pending_rate = policy.rate
        else:
            await call.count(policy.rate, reads=False)
    return await route.handler(call)
