"""Normalisation and validation of domain names and mailbox local parts (api-v1.md, "Names").

Each function returns the canonical form or raises ValueError with a sentence a client
can read.
"""

from __future__ import annotations

import re

import idna

LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
LOCAL_PART = re.compile(r"[a-z0-9._+-]{1,64}")


IDNA_INVALID = "Not a valid internationalised domain name."
ACE_PREFIX = "xn--"


def _a_labels_valid(name: str) -> bool:
    """Whether the punycode (`xn--`) labels of an ASCII name are real IDNA: each decodes to
    a permitted name, and encodes back to itself (`xn--zz`, or `xn--ls8h`, an emoji, do
    not). The whole name is checked, so rules across labels (bidi) hold too."""
    try:
        return idna.encode(idna.decode(name)).decode("ascii") == name
    except (idna.IDNAError, UnicodeError, ValueError):
        return False


def domain(value: str) -> str:
    """Lower case, no trailing dot, IDNA (punycode) for international names; punycode
    labels given as such are validated as IDNA."""
    name = value.strip().lower().removesuffix(".")
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            raise ValueError(IDNA_INVALID) from None
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2:
        raise ValueError("Not a valid domain name: it needs at least two labels.")
    for part in labels:
        if not LABEL.fullmatch(part):
            raise ValueError(
                "Not a valid domain name: each label is 1-63 letters, digits or hyphens, "
                "not starting or ending with a hyphen."
            )
    if labels[-1].isdigit():
        # also rules out IPv4 literals
        raise ValueError("Not a valid domain name: the last label cannot be all digits.")
    if ACE_PREFIX in name and not _a_labels_valid(name):
        raise ValueError(IDNA_INVALID)
    return name


def label(value: str) -> str:
    """One sub-domain label."""
    name = value.strip().lower()
    if not LABEL.fullmatch(name):
        raise ValueError(
            "A sub-domain is one label of letters, numbers and hyphens (1-63 characters), "
            "not starting or ending with a hyphen."
        )
    if name.startswith(ACE_PREFIX) and not _a_labels_valid(name):
        raise ValueError("Not a valid internationalised sub-domain.")
    return name


def local_part(value: str) -> str:
    """The part of an address before the @."""
    name = value.strip().lower()
    if not LOCAL_PART.fullmatch(name) or name.startswith(".") or name.endswith(".") \
            or ".." in name:
        raise ValueError(
            "Not a valid mailbox name: 1-64 of a-z 0-9 . _ - +, not starting or ending "
            "with a dot, no two dots in a row."
        )
    return name


def address(value: str) -> str:
    """A mailbox address on a domain we could host: `john@example.com`."""
    local, at, host = value.strip().rpartition("@")
    if not at or not local:
        raise ValueError("Not a valid address: it needs a local part, an @ and a domain.")
    return f"{local_part(local)}@{domain(host)}"


def alias_address(value: str) -> str:
    """An alias's address: a mailbox address, or `@example.com` for the domain's catch-all."""
    text = value.strip()
    if text.startswith("@"):
        return "@" + domain(text[1:])
    return address(text)


def domain_of(value: str) -> str:
    """The domain part of an address or a catch-all."""
    return value.rpartition("@")[2]


# RFC 5322 dot-atom text: what a destination's local part may hold, wherever it is hosted
DOT_ATOM = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def destination(value: str) -> str:
    """Where an alias sends mail: any address, here or elsewhere. Lower-cased, as Postfix
    looks addresses up."""
    local, at, host = value.strip().lower().rpartition("@")
    if not at or len(local) > 64 or not DOT_ATOM.fullmatch(local):
        raise ValueError("Not a valid address: it needs a local part, an @ and a domain.")
    return f"{local}@{domain(host)}"
