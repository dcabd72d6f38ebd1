"""API keys: 32 random letters and digits, stored only as their SHA-256."""

from __future__ import annotations

import hashlib
import re
import secrets
import string

KEY_FORMAT = re.compile(r"[A-Za-z0-9]{32}")
PREFIX_LENGTH = 8


def generate() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(32))


def digest(key: str) -> str:
    # A fast hash is right here: the key has ~190 bits of entropy, so there is nothing to
    # brute-force, and auth stays one indexed lookup.
    return hashlib.sha256(key.encode()).hexdigest()


def prefix(key: str) -> str:
    return key[:PREFIX_LENGTH]
