"""Reading a request body as the JSON object every POST endpoint takes, cheapest checks
first: its size (aiohttp's client_max_size), its content type, its depth, then parsing."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from service.core.errors import BadJson, BodyTooDeep, NotJson

# deeper than any request needs (the deepest, a bulk's mailbox, is 4); nothing downstream
# (validation, the Idempotency-Key fingerprint) then ever recurses far
MAX_DEPTH = 32
# application/json, and the structured-syntax suffix of RFC 6839 (application/merge-patch+json)
JSON_TYPE = re.compile(r"application/(?:[\w.+-]+\+)?json", re.IGNORECASE)

# a JSON string, unrolled ("normal* (escape normal*)*") so the regex engine does not backtrack
STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# the depth of containers does not depend on their kind: objects count as lists
AS_LISTS = bytes.maketrans(b"{}", b"[]")
NOT_BRACKETS = bytes(b for b in range(256) if b not in b"{}[]")


def _deeper_than(raw: bytes, limit: int) -> bool:
    """Whether the JSON text nests containers more than `limit` deep. Done in passes over
    the bytes at C speed, with no recursion: strings dropped, brackets kept, and then each
    pass removes every innermost `[]`, one level a pass. A 1 MiB body costs milliseconds."""
    brackets = STRING.sub(b"", raw).translate(AS_LISTS, NOT_BRACKETS)
    for _ in range(limit):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"")
    return bool(brackets)


def may_name(raw: bytes, member: str) -> bool:
    """False only when the JSON text certainly has no member named `member` (at any
    depth): its quoted name does not occur, and no `\\u` escape could spell it. A scan at
    C speed, so a request that cannot hold a key is refused without parsing its body."""
    return f'"{member}"'.encode() in raw or b"\\u" in raw


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def raw_body(request: web.Request) -> bytes:
    """The body's bytes: 413 past the size limit, 415 unless it is sent as JSON."""
    raw = await request.read()
    if not JSON_TYPE.fullmatch(request.content_type):
        raise NotJson
    return raw


def parse(raw: bytes) -> dict[str, Any]:
    """The body as a dict: 400 when it is not a JSON object, or nests too deeply."""
    if _deeper_than(raw, MAX_DEPTH):
        raise BodyTooDeep
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        # ValueError covers bad UTF-8, bad syntax, NaN and over-long integers
        raise BadJson from None
    if not isinstance(data, dict):
        raise BadJson
    return data
