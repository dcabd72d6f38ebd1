"""Accounts and their API keys: 32 random letters and digits, stored only as their SHA-256.

The plaintext of a key exists only in the return value of the function that made it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
from dataclasses import dataclass

from service.core.db import Database
from service.core.store import Row, Store

KEY_FORMAT = re.compile(r"[A-Za-z0-9]{32}")
PREFIX_LENGTH = 8
ALPHABET = string.ascii_letters + string.digits


def generate() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(32))


def digest(key: str) -> str:
    # A fast hash is right here: the key has ~190 bits of entropy, so there is nothing to
    # brute-force, and auth stays one indexed lookup.
    return hashlib.sha256(key.encode()).hexdigest()


def prefix(key: str) -> str:
    return key[:PREFIX_LENGTH]


class NoSuchAccount(LookupError):
    """There is no account with that user_id."""


class KeyNotRevoked(LookupError):
    """The key could not be revoked; the message says why."""


async def create_account(db: Database, name: str) -> tuple[int, str]:
    """A new account and its first API key."""
    async with db.transaction() as store:
        account_id = await store.create_account(name=name)
        key = await _new_key(store, account_id)
    return account_id, key


async def create_key(db: Database, account_id: int) -> str:
    """Another key of an existing account."""
    if not await db.account_exists(account_id=account_id):
        raise NoSuchAccount(f"no account with user_id {account_id}")
    return await _new_key(db, account_id)


async def _new_key(store: Store, account_id: int) -> str:
    key = generate()
    await store.create_api_key(account_id=account_id, key_hash=digest(key), prefix=prefix(key))
    return key


@dataclass(frozen=True)
class KeyRef:
    """A key as an operator names it: whole, or by its first characters."""

    key_hash: str
    prefix: str

    @classmethod
    def parse(cls, given: str) -> KeyRef:
        whole = digest(given) if KEY_FORMAT.fullmatch(given) else ""
        short = prefix(given) if len(given) >= PREFIX_LENGTH and not whole else ""
        if not (whole or short):
            raise KeyNotRevoked(f"give a whole key or its first {PREFIX_LENGTH} characters")
        return cls(whole, short)


async def revoke_key(db: Database, given: str) -> list[Row]:
    """Revoke a key given whole or by its prefix (which must name exactly one live key)."""
    ref = KeyRef.parse(given)
    found = [k for k in await db.find_keys(key_hash=ref.key_hash, prefix=ref.prefix)
             if k["revoked_at"] is None]
    if len(found) > 1 and ref.prefix:
        raise KeyNotRevoked(f"{len(found)} keys start with {ref.prefix}; give the whole key")
    revoked = await db.revoke_keys(key_hash=ref.key_hash, prefix=ref.prefix)
    if not revoked:
        raise KeyNotRevoked("no active key matches")
    return revoked
