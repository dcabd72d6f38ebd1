"""Reading a request body as the JSON object every POST endpoint takes."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from service.core.errors import BadJson


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def json_body(request: web.Request, empty: bool = False) -> dict[str, Any]:
    """The body as a dict: 413 past the size limit (aiohttp's client_max_size), 400 when it
    is not a JSON object. With `empty`, no body at all counts as `{}`."""
    raw = await request.read()
    if empty and not raw.strip():
        return {}
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        # ValueError covers bad UTF-8, bad syntax, NaN and over-long integers
        raise BadJson from None
    if not isinstance(data, dict):
        raise BadJson
    return data
