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


# a member named "key" (its letters may be \\u escapes) whose value is 32 letters or digits
# (each of which may be a \\u00XX escape): every way JSON can spell a well-formed API key
KEY_MEMBER = re.compile(
    rb'"(?:k|\\u006[bB])(?:e|\\u0065)(?:y|\\u0079)"[ \t\r\n]*:[ \t\r\n]*'
    rb'"((?:[A-Za-z0-9]|\\u00[0-9A-Fa-f]{2}){32})"')
ESCAPE = re.compile(rb"\\u00([0-9A-Fa-f]{2})")
KEY_CHARS = re.compile(r"[A-Za-z0-9]{32}")


def key_candidates(raw: bytes, most: int) -> set[str] | None:
    """Every well-formed API key a `key` member of the JSON text could hold, at any depth,
    found at C speed without parsing it: the body's top-level key, if it is well formed,
    is among them. None when there are more than `most` (no real request has)."""
    found = set()
    for match in KEY_MEMBER.finditer(raw):
        value = ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), match[1]).decode("latin-1")
        if KEY_CHARS.fullmatch(value):
            found.add(value)
            if len(found) > most:
                return None
    return found


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def raw_body(request: web.Request, empty: bool = False) -> bytes | None:
    """The body's bytes: 413 past the size limit, 415 unless it is sent as JSON. With
    `empty`, no body at all is None (a restore names all it needs in its path)."""
    raw = await request.read()
    if empty and not raw.strip():
        return None
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
