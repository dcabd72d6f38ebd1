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
