"""Accounts and their API keys: 32 random letters and digits, stored only as their SHA-256.

The plaintext of a key exists only in the return value of the function that made it. A key
may be limited: read-only, to some domains, until a date (`Scope`); a request carries what
its key may do as a `Grant`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
from dataclasses import dataclass
from datetime import datetime

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


@dataclass(frozen=True)
class Scope:
    """What a key may do: everything (the default), only read, only some domains, and
    until when."""

    read_only: bool = False
    # the only domains it sees (exactly these names); None: all of its account's
    domains: frozenset[str] | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Grant:
    """A live key, as a request presents it: whose it is, and what it may do."""

    account_id: int
    key_id: int
    read_only: bool
    domains: frozenset[str] | None

    @classmethod
    def of(cls, row: Row) -> Grant:
        """From a row of resolve_key, or of a lookup read with the key."""
        domains = row["domains"]
        return cls(row["account_id"], row["key_id"], row["read_only"],
                   None if domains is None else frozenset(domains))

    def covers(self, domain: str) -> bool:
        """Whether the key may see and act on this domain."""
        return self.domains is None or domain in self.domains


async def require_account(db: Database, account_id: int) -> None:
    """NoSuchAccount, naming the user_id, when there is no such account."""
    if not await db.account_exists(account_id=account_id):
        raise NoSuchAccount(f"no account with user_id {account_id}")


async def create_key(db: Database, account_id: int, scope: Scope | None = None) -> str:
    """Another key of an existing account, with everything or only part of its power."""
    await require_account(db, account_id)
    return await _new_key(db, account_id, scope)


async def _new_key(store: Store, account_id: int, scope: Scope | None = None) -> str:
    scope = scope or Scope()
    key = generate()
    await store.create_api_key(account_id=account_id, key_hash=digest(key), prefix=prefix(key),
                               read_only=scope.read_only,
                               domains=None if scope.domains is None else sorted(scope.domains),
                               expires_at=scope.expires_at)
    return key


async def list_keys(db: Database, account_id: int) -> list[Row]:
    """An account's keys, oldest first: prefix, scope, expiry and last use, never a key."""
    await require_account(db, account_id)
    return await db.list_keys(account_id=account_id)


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
