"""DKIM keys: made by the worker, sealed at rest, published as TXT records.

A domain gets an RSA 2048 key when it is provisioned (MAILPROV_DKIM_ALGORITHM, or a
rotation's choice, may say Ed25519). Its selector is dated (`mp20260414-3fa2`): a
customer reading their zone sees when each key was made, and a second rotation on the
same day still gets a name of its own.

The private key is sealed with `secrets.seal` under a purpose of its own, so a sealed
password can never be unsealed as a key or the other way round. It is unsealed in exactly
one place, `mailprov mailstack dkim`, which writes the key files the signer reads
(service/core/opendkim.py). Nothing else reads `private_key_sealed`, and no response, log
line or ops page shows it.

Ed25519 (RFC 8463) keys are small and fast, but many receivers still verify only RSA;
RSA stays the default for that reason.
"""

from __future__ import annotations

import base64
import secrets as random
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from service.core import secrets

ALGORITHMS = ("rsa", "ed25519")
RSA_BITS = 2048
PURPOSE = "dkim-private-key"
# the record's owner is <selector>._domainkey.<domain>
LABEL = "_domainkey"


class UnknownAlgorithm(ValueError):
    """A DKIM algorithm mailprov does not make keys for."""


@dataclass(frozen=True)
class NewKey:
    """A key to store: the public half as a record's `p=`, the private half sealed."""

    selector: str
    algorithm: str
    public_key: str
    private_key_sealed: str


def check_algorithm(algorithm: str) -> str:
    if algorithm not in ALGORITHMS:
        raise UnknownAlgorithm(f"DKIM algorithm {algorithm!r}: use one of "
                               f"{', '.join(ALGORITHMS)}")
    return algorithm


def selector(now: datetime | None = None) -> str:
    """A dated selector, unique enough to rotate more than once a day."""
    day = (now or datetime.now(UTC)).strftime("%Y%m%d")
    return f"mp{day}-{random.token_hex(2)}"


def generate(secret_key: str, algorithm: str = "rsa") -> NewKey:
    """A new key pair; the private key PEM (PKCS#8, what OpenDKIM reads) sealed."""
    check_algorithm(algorithm)
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        public = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        private = ed25519.Ed25519PrivateKey.generate()
        # RFC 8463: `p=` is the raw 32-byte key, not a SubjectPublicKeyInfo
        public = private.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode("ascii")
    return NewKey(selector(), algorithm, base64.b64encode(public).decode("ascii"),
                  secrets.seal(secret_key, pem, PURPOSE))


def unseal_private_key(secret_key: str, sealed: str) -> str:
    """The private key's PEM. Only the signer's files may hold it (module docstring)."""
    return secrets.unseal(secret_key, sealed, PURPOSE)


def owner(selector: str, domain: str) -> str:
    """The name a key's TXT record is published at."""
    return f"{selector}.{LABEL}.{domain}"


def record(algorithm: str, public_key: str) -> str:
    """The TXT record's value, unquoted (RFC 6376 section 3.6.1)."""
    return f"v=DKIM1; k={algorithm}; p={public_key}"


def tags(value: str) -> dict[str, str]:
    """A DKIM record's tags (`v=DKIM1; k=rsa; p=...`), whitespace in values removed, as
    RFC 6376 allows folding it anywhere."""
    found = {}
    for part in value.split(";"):
        name, sep, tag_value = part.partition("=")
        if sep:
            found[name.strip().lower()] = "".join(tag_value.split())
    return found
