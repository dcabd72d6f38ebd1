"""OpenDKIM's files for the hosted domains: KeyTable, SigningTable, opendkim.conf and one
private key file per domain (`mailprov mailstack dkim --out DIR`).

OpenDKIM is the signer because it is a milter Postfix already speaks to, packaged in
Debian, and it reads its keys from flat tables that can be regenerated and reloaded
(SIGUSR1) without a restart or a database driver; a rotation is a rewrite of these files.

This is the one place a private key is unsealed outside the worker: OpenDKIM needs the
PEM. Key files are written 0600 in a 0700 directory, each file written under a
temporary name and renamed, so a reload never reads half a file; keys no longer listed
(a retired selector, a deleted domain) are removed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.core import dkim

DEFAULT_SOCKET = "inet:8891@127.0.0.1"


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(temporary, mode)  # an umask must not loosen it, nor a file left from before
    os.replace(temporary, path)


def conf(out: Path, socket: str) -> str:
    """opendkim.conf: sign (mode s) mail from local and authenticated senders."""
    return (
        "# written by `mailprov mailstack dkim`; rewritten on every run\n"
        f"KeyTable          file:{out / 'KeyTable'}\n"
        f"SigningTable      refile:{out / 'SigningTable'}\n"
        f"Socket            {socket}\n"
        "Mode              s\n"
        # relaxed headers survive the rewrapping some relays do; simple body is the default
        "Canonicalization  relaxed/simple\n"
        # a From added after signing would pass the signature off as someone else's
        "OversignHeaders   From\n"
        "Syslog            no\n"
        "UMask             007\n")


def write(out: Path, keys: Sequence[Any], secret_key: str,
          socket: str = DEFAULT_SOCKET) -> list[str]:
    """Write the files for `keys` (rows: domain, selector, algorithm, private_key_sealed)
    into `out`; the signing names (`selector._domainkey.domain`) written."""
    key_dir = out / "keys"
    key_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(key_dir, 0o700)
    table, signing, written = [], [], set()
    for row in keys:
        name = dkim.owner(row["selector"], row["domain"])
        path = key_dir / f"{name}.private"
        _write(path, dkim.unseal_private_key(secret_key, row["private_key_sealed"]), 0o600)
        written.add(path.name)
        table.append(f"{name} {row['domain']}:{row['selector']}:{path}\n")
        # a refile pattern: every sender of the domain, sub-domains having rows of their own
        signing.append(f"*@{row['domain']} {name}\n")
    for stale in key_dir.glob("*.private"):
        if stale.name not in written:
            stale.unlink()
    _write(out / "KeyTable", "".join(table))
    _write(out / "SigningTable", "".join(signing))
    _write(out / "opendkim.conf", conf(out, socket))
    return [line.split()[0] for line in table]
