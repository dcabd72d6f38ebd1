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


def presented_key(request: web.Request, key: Any) -> str:
    """The request's key: a Bearer header, else `key` from the body or query string (None
    where only the header counts). 401 when it is missing or malformed."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        key = header[7:].strip()
    if not isinstance(key, str) or not accounts.KEY_FORMAT.fullmatch(key):
        raise InvalidApiKey
    return key


async def authenticate(request: web.Request, raw: Mapping[str, Any],
                       lookup: Lookup | None, bearer: bool = False) -> Call:
    """The call of the request's key (only its Bearer header when `bearer`); 401 when the
    key is not a live one. With a lookup whose value can be read from the raw input (or
    the path), the key and what it names are read in one round trip."""
    key_hash = accounts.digest(presented_key(request, None if bearer else raw.get("key")))
    db = request.app[DB]
    found = None
    target = None if lookup is None else lookup.raw(
        request.match_info if lookup.in_path else raw)
    if lookup is not None and target is not None:
        found = await lookup.fetch(db, key_hash, target)
        account_id = None if found is None else found["account_id"]
    else:
        account_id = await db.resolve_key(key_hash=key_hash)
    if account_id is None:
        raise InvalidApiKey
    logs.bind(account_id=account_id)  # on every line logged for the rest of the request
    return Call(request, account_id, key_hash, found, target)
