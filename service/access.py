"""Who is calling, and whether they may: API keys, the `caller_id` check, rate limits."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service import apikeys, logs
from service.errors import InvalidApiKey, UnauthorizedCaller
from service.schemas import CallerQuery, load
from service.state import DB, LIMITER, RATE, SETTINGS

# bucket -> the Settings field holding its hourly limit
BUCKETS = {
    "create_domain": "rate_create_domain",
    "create_mailbox_single": "rate_create_mailbox_single",
    "create_mailbox_bulk": "rate_create_mailbox_bulk",
    "get": "rate_get",
}


async def authenticate(request: web.Request, key: Any) -> int:
    """The account id behind the request's key: a Bearer header, else `key` from the body
    or query string. 401 when there is none."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        key = header[7:].strip()
    if not isinstance(key, str) or not apikeys.KEY_FORMAT.fullmatch(key):
        raise InvalidApiKey
    account_id = await request.app[DB].fetchval("resolve_key", apikeys.digest(key))
    if account_id is None:
        raise InvalidApiKey
    logs.bind(account_id=account_id)  # on every line logged for the rest of the request
    return account_id


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
