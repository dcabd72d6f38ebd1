"""The DNS records a hosted domain must publish, and a check of what DNS really serves.

`expected` lists every record (GET /api/v1/domains/{domain}/dns shows them, and the
verify job checks them): MX, SPF, one DKIM TXT per published key, DMARC, and the
autoconfig/autodiscover names mail clients look up. `check` asks the resolver in
MAILPROV_DNS_RESOLVER (default: the system's) for each and says, per record, whether it
is there as expected (`verified`), absent (`missing`), there with another value
(`wrong`), or could not be read (`error`: a timeout, SERVFAIL). A domain is verified
when MX, SPF and the signing key's DKIM record hold; DMARC and the client names are
advice, checked and shown but not required.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.resolver

from service.core import dkim
from service.core.settings import Settings

VERIFIED, MISSING, WRONG, ERROR, UNCHECKED = "verified", "missing", "wrong", "error", "unchecked"
# the roles whose records must all hold for a domain to be `verified`
REQUIRED = ("mx", "spf", "dkim")
MX_PREFERENCE = 10


@dataclass(frozen=True)
class Record:
    type: str
    name: str
    value: str
    role: str
    # a DKIM record's key (selector, algorithm, public key, retire_at); None for others
    key: Any = None
    # a DKIM record of a key that no longer signs, published until it retires
    retiring: bool = False

    @property
    def id(self) -> str:
        """The record's key in a check's results: one record per type and name."""
        return f"{self.type} {self.name}"

    @property
    def required(self) -> bool:
        return self.role in REQUIRED and not self.retiring


@dataclass(frozen=True)
class Finding:
    state: str
    found: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"state": self.state, "found": list(self.found)}


def _bare(name: str) -> str:
    return name.lower().rstrip(".")


def mx_host(settings: Settings) -> str:
    return _bare(settings.mx_host or settings.imap_host or socket.getfqdn())


def expected(settings: Settings, domain: str, keys: Sequence[Any]) -> list[Record]:
    """Every record `domain` should publish; `keys` are its DKIM keys (rows with
    selector, algorithm, public_key, retire_at), the signing one first."""
    mx = mx_host(settings)
    clients = _bare(settings.autoconfig_host) or mx
    records = [Record("MX", domain, f"{MX_PREFERENCE} {mx}.", "mx"),
               Record("TXT", domain, settings.spf_record, "spf")]
    records += [Record("TXT", dkim.owner(k["selector"], domain),
                       dkim.record(k["algorithm"], k["public_key"]), "dkim", k,
                       retiring=k["retire_at"] is not None) for k in keys]
    records += [Record("TXT", f"_dmarc.{domain}", settings.dmarc_record, "dmarc"),
                Record("CNAME", f"autoconfig.{domain}", f"{clients}.", "autoconfig"),
                Record("CNAME", f"autodiscover.{domain}", f"{clients}.", "autodiscover")]
    return records


def resolver(settings: Settings) -> dns.asyncresolver.Resolver:
    """The resolver verification asks: MAILPROV_DNS_RESOLVER, else the system's."""
    configured = settings.dns_resolver.strip()
    if not configured:
        chosen = dns.asyncresolver.Resolver()
    else:
        chosen = dns.asyncresolver.Resolver(configure=False)
        host, port = _host_port(configured)
        chosen.nameservers = [host]
        chosen.port = port
    chosen.lifetime = settings.dns_timeout_s
    return chosen


def _host_port(value: str) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]:port` or a bare IPv6 address; a name is looked up once."""
    host, port = value, 53
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = int(rest.lstrip(":") or 53)
    elif value.count(":") == 1:
        host, port_text = value.split(":")
        port = int(port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        host = str(socket.getaddrinfo(host, port, proto=socket.IPPROTO_UDP)[0][4][0])
    return host, port


def check_resolver_setting(settings: Settings) -> None:
    """ValueError naming MAILPROV_DNS_RESOLVER when it cannot be read."""
    if settings.dns_resolver.strip():
        try:
            _host_port(settings.dns_resolver.strip())
        except (ValueError, OSError) as exc:
            raise ValueError(f"MAILPROV_DNS_RESOLVER={settings.dns_resolver!r}: "
                             f"not host or host:port ({exc})") from None


async def _answers(chosen: dns.asyncresolver.Resolver, name: str,
                   rdtype: str) -> list[Any] | None:
    """The record set, or None when the name or the type is not there."""
    try:
        answer = await chosen.resolve(name, rdtype, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    return list(answer)


def _text(rdata: Any) -> str:
    return b"".join(rdata.strings).decode("utf-8", "replace")


def _normal(value: str) -> str:
    return " ".join(value.split()).lower()


def _judge(record: Record, rdatas: list[Any]) -> Finding:
    """Whether what DNS serves at the record's name holds the record."""
    if record.type == "MX":
        found = tuple(f"{r.preference} {r.exchange.to_text()}" for r in rdatas)
        ok = any(_bare(r.exchange.to_text()) == _bare(record.value.split()[1]) for r in rdatas)
    elif record.type == "CNAME":
        found = tuple(r.target.to_text() for r in rdatas)
        ok = any(_bare(t) == _bare(record.value) for t in found)
    else:
        texts = [_text(r) for r in rdatas]
        if record.role == "dkim":
            want = dkim.tags(record.value)
            found = tuple(t for t in texts if "p" in dkim.tags(t))
            ok = any(dkim.tags(t)["p"] == want["p"]
                     and dkim.tags(t).get("k", "rsa") == want["k"] for t in found)
        else:
            # the SPF or DMARC record among the name's TXT records, by its version tag
            version = record.value.split(";")[0].split()[0].lower()
            found = tuple(t for t in texts if _normal(t).startswith(version))
            ok = any(_normal(t) == _normal(record.value) for t in found)
    if ok:
        return Finding(VERIFIED)
    return Finding(WRONG if found else MISSING, found)


async def _find(chosen: dns.asyncresolver.Resolver, record: Record) -> Finding:
    try:
        rdatas = await _answers(chosen, record.name, record.type)
    except dns.exception.DNSException as exc:
        return Finding(ERROR, (type(exc).__name__,))
    return Finding(MISSING) if rdatas is None else _judge(record, rdatas)


async def check(settings: Settings, records: Sequence[Record]) -> dict[str, Finding]:
    """What DNS serves for each record, by its id; the queries run at once, so a check
    takes one round trip (at most MAILPROV_DNS_TIMEOUT_S), not one per record."""
    chosen = resolver(settings)
    found = await asyncio.gather(*(_find(chosen, r) for r in records))
    return {r.id: f for r, f in zip(records, found, strict=True)}


def verdict(records: Sequence[Record], findings: dict[str, Finding]) -> bool | None:
    """True when every required record holds, False when one is missing or wrong, None
    when DNS could not say (a resolver error leaves the domain's status as it was)."""
    states = [findings[r.id].state for r in records if r.required]
    if "dkim" not in {r.role for r in records if r.required}:
        return False  # a domain without a signing key cannot be verified
    if all(s == VERIFIED for s in states):
        return True
    if any(s in (MISSING, WRONG) for s in states):
        return False
    return None
