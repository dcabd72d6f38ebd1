"""What mailprov keeps under `MAILPROV_SECRET_KEY`: sealed secrets and keyed fingerprints.

- `seal` / `unseal`: a password a client supplies waits for the worker in its task's
  payload, sealed (authenticated encryption), never in plaintext and never hashed in the
  request. Every path that accepts a password seals it with `seal(settings.secret_key,
  password)`; the worker unseals, hashes and erases it (worker/jobs.py). Later issues seal
  DKIM private keys the same way, under a purpose of their own.
- `fingerprint`: an HMAC under the same secret, for values that must be compared but that
  may hold a secret (an Idempotency-Key's request): without the secret key, a fingerprint
  cannot be used to test guesses of what went into it.

AES-256-GCM rather than Fernet: both are authenticated, but GCM binds associated data (the
purpose, so a ciphertext sealed for one use is refused in another), takes a 256-bit key,
and costs 28 bytes per token where Fernet adds a version, a timestamp, a 16-byte IV and a
32-byte HMAC. Its one hazard, a repeated nonce, is out of reach: each seal draws a fresh
96-bit random nonce, and one key seals far fewer than the 2^32 messages NIST allows.

The secret is a random string (`python -c 'import secrets; print(secrets.token_urlsafe(32))'`),
not a password, so HKDF is the right derivation (a slow password KDF would add nothing);
each purpose gets its own derived key.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MIN_LENGTH = 32
GENERATE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"

# purposes: each derives its own key from the secret
PASSWORD = "password"  # noqa: S105 - a purpose label
IDEMPOTENCY = "idempotency-fingerprint"

# the payload field of a mailbox item that holds its sealed password until the worker
# has hashed it (the name matches logs.SECRET_FIELD: the ops page and logs hide it)
SEALED_PASSWORD = "password_sealed"  # noqa: S105 - a field name

VERSION = "v1."
NONCE_BYTES = 12


class SecretKeyMissing(ValueError):
    """MAILPROV_SECRET_KEY is not set, or too short to be a random key."""


class Unsealable(ValueError):
    """A sealed value was not made with this secret key and purpose, or was altered."""


def check_secret_key(secret_key: str) -> None:
    """Raise SecretKeyMissing, with what to do, unless `secret_key` can be used."""
    if len(secret_key) < MIN_LENGTH:
        state = "is not set" if not secret_key else f"is shorter than {MIN_LENGTH} characters"
        raise SecretKeyMissing(f"MAILPROV_SECRET_KEY {state}; generate one with {GENERATE}")


@functools.lru_cache(maxsize=16)
def _derived(secret_key: str, purpose: str) -> bytes:
    check_secret_key(secret_key)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=f"mailprov {purpose}".encode()).derive(secret_key.encode())


def seal(secret_key: str, plaintext: str, purpose: str = PASSWORD) -> str:
    """`plaintext` encrypted and authenticated under the secret key, as ASCII text."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(_derived(secret_key, purpose)).encrypt(nonce, plaintext.encode(),
                                                           purpose.encode())
    return VERSION + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def unseal(secret_key: str, token: str, purpose: str = PASSWORD) -> str:
    """The plaintext `seal` was given; Unsealable when the token is not one of ours."""
    if not token.startswith(VERSION):
        raise Unsealable("not a sealed value")
    try:
        raw = base64.urlsafe_b64decode(token.removeprefix(VERSION))
        plain = AESGCM(_derived(secret_key, purpose)).decrypt(
            raw[:NONCE_BYTES], raw[NONCE_BYTES:], purpose.encode())
    except (InvalidTag, ValueError, binascii.Error):
        raise Unsealable("the value was sealed under another key, or altered") from None
    return plain.decode()


def fingerprint(secret_key: str, data: bytes, purpose: str = IDEMPOTENCY) -> str:
    """HMAC-SHA256 of `data` under the secret key, hex."""
    return hmac.new(_derived(secret_key, purpose), data, hashlib.sha256).hexdigest()
