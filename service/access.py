"""Who is calling, and whether they may: API keys, the `caller_id` check, rate limits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from marshmallow import Schema

from service import apikeys, logs
from service.errors import Invalid, InvalidApiKey, UnauthorizedCaller
from service.schemas import CallerQuery, load
from service.state import DB, LIMITER, RATE, SETTINGS

# bucket -> the Settings field holding its hourly limit
BUCKETS = {
    "create_domain": "rate_create_domain",
    "create_mailbox_single": "rate_create_mailbox_single",
    "create_mailbox_bulk": "rate_create_mailbox_bulk",
    "get": "rate_get",
}


def presented_key(request: web.Request, key: Any) -> str:
    """The request's key: a Bearer header, else `key` from the body or query string. 401
    when it is missing or malformed."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        key = header[7:].strip()
    if not isinstance(key, str) or not apikeys.KEY_FORMAT.fullmatch(key):
        raise InvalidApiKey
    return key


async def resolve(request: web.Request, key: Any, query: str = "resolve_key",
                  *args: Any) -> Any:
    """Run a named query that resolves the key (and what the request reads with it, in the
    same round trip); its row, with `account_id`. 401 when the key is not a live one."""
    digest = apikeys.digest(presented_key(request, key))
    row = await request.app[DB].fetchrow(query, digest, *args)
    if row is None:
        raise InvalidApiKey
    logs.bind(account_id=row["account_id"])  # on every line logged for the rest of the request
    return row


async def authenticate(request: web.Request, key: Any) -> int:
    """The account id behind the request's key (401 when there is none)."""
    return (await resolve(request, key))["account_id"]


async def load_authenticated(request: web.Request, key: Any, schema: Schema,
                             data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate `data` before the key is resolved (so one query can resolve both), yet
    answer a bad key with 401 before any validation error, as everywhere else."""
    try:
        return load(schema, data)
    except Invalid:
        await authenticate(request, key)
        raise


async def limit(request: web.Request, account_id: int, bucket: str) -> None:
    """Count the request against the account's hourly limit (429 when over); the decision's
    headers go on the response."""
    hourly = getattr(request.app[SETTINGS], BUCKETS[bucket])
    request[RATE] = await request.app[LIMITER].hit(account_id, bucket, hourly)


async def caller(request: web.Request, schema: CallerQuery) -> tuple[int, dict[str, Any]]:
    """Auth, query and rate limit of a list endpoint; 403 when `caller_id` is not the key's
    account."""
    account_id = await authenticate(request, request.query.get("key"))
    query = load(schema, request.query)
    if query["caller_id"] != account_id:
        raise UnauthorizedCaller
    await limit(request, account_id, "get")
    return account_id, query
