"""What a task's payload keeps of a password a client supplies, for both faces: the one
place that turns a request's `password` or `password_hash` into payload fields.

A `password` is sealed under MAILPROV_SECRET_KEY (service/core/secrets.py); the worker
unseals it, hashes it (`{ARGON2ID}`, each mailbox with its own salt) and erases it in the
transaction that writes the mailbox. A `password_hash` is kept as given. The plaintext
never reaches the payload, Postgres or a log, and the request never waits for a hash. An
entry with neither gets `{}`: the worker generates its password.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.core import secrets
from service.web.call import Call
from service.web.state import SETTINGS


def payload_secret(call: Call, entry: Mapping[str, Any]) -> dict[str, str]:
    """The fields a payload item keeps of `entry`'s password: sealed, or a hash as given,
    or none. Each seal is a new ciphertext, so the payload does not show which mailboxes
    share a password."""
    if "password" in entry:
        return {secrets.SEALED_PASSWORD: secrets.seal(call.app[SETTINGS].secret_key,
                                                      entry["password"])}
    if "password_hash" in entry:
        return {"password_hash": entry["password_hash"]}
    return {}
