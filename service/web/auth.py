"""Who is calling: the API key, and what the request names, read with it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from service.core import accounts, logs
from service.core.errors import InvalidApiKey
from service.web.call import Call
from service.web.route import Lookup
from service.web.state import DB


def bearer(request: web.Request) -> str | None:
    """The credentials of an `Authorization: Bearer` header; None without one."""
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else None


def presented_key(request: web.Request, key: Any) -> str:
    """The request's key: a Bearer header, else `key` from the body or query string. 401
    when it is missing or malformed."""
    header = bearer(request)
    if header is not None:
        key = header
    if not isinstance(key, str) or not accounts.KEY_FORMAT.fullmatch(key):
        raise InvalidApiKey
    return key


def _cheap(lookup: Lookup, value: Any) -> Any:
    """What the lookup reads, from the raw input; None when that takes validation."""
    if not isinstance(value, str):
        return None
    try:
        return lookup.normalise(value)
    except ValueError:
        return None


async def authenticate(request: web.Request, raw: Mapping[str, Any],
                       lookup: Lookup | None) -> Call:
    """The call of the request's key; 401 when the key is not a live one. With a lookup
    whose value can be read from the raw input, the key and what it names are read in
    one round trip."""
    key_hash = accounts.digest(presented_key(request, raw.get("key")))
    db = request.app[DB]
    found = None
    target = None if lookup is None else _cheap(lookup, raw.get(lookup.field))
    if lookup is not None and target is not None:
        found = await lookup.fetch(db, key_hash, target)
        account_id = None if found is None else found["account_id"]
    else:
        account_id = await db.resolve_key(key_hash=key_hash)
    if account_id is None:
        raise InvalidApiKey
    logs.bind(account_id=account_id)  # on every line logged for the rest of the request
    return Call(request, account_id, key_hash, found, target)
