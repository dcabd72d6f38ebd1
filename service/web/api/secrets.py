"""What a task's payload keeps of a password a client supplies, for both faces: the one
place that turns a request's `password` or `password_hash` into payload fields.

A `password` is hashed here, in the web's hashing pool, as the worker hashes generated
ones (`{ARGON2ID}`, each with its own salt); a `password_hash` is kept as given. The
plaintext never reaches the payload, Postgres or a log. An entry with neither gets `{}`:
the worker generates its password.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from service.web.call import Call
from service.web.state import HASHER

# passwords per trip to a hashing process: amortises the round trip of a bulk's
BATCH = 16


async def payload_secrets(call: Call,
                          entries: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """For each entry, the fields its payload item keeps: `{"password_hash": ...}`, or
    `{}` when it names no password."""
    hasher = call.app[HASHER]
    plain = [entry["password"] for entry in entries if "password" in entry]
    hashed = iter([h for batch in hasher.hash_batches(plain, BATCH) for h in await batch])
    return [{"password_hash": next(hashed)} if "password" in entry
            else {"password_hash": entry["password_hash"]} if "password_hash" in entry
            else {}
            for entry in entries]


async def payload_secret(call: Call, entry: Mapping[str, Any]) -> dict[str, str]:
    """payload_secrets of one entry."""
    return (await payload_secrets(call, [entry]))[0]
