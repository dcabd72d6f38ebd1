"""Where a request comes from: the peer's address, or, when the peer is one of
MAILPROV_TRUSTED_PROXIES, the first address in `X-Forwarded-For`, read from the right,
that is not a trusted proxy. A client cannot choose its own address by sending the header:
it is believed only from a proxy named in the settings, and only as far back as the
proxies that added it are trusted."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

from service.web.state import CLIENT, TRUSTED_PROXIES, Network


def trusted_networks(setting: str) -> list[Network]:
    """MAILPROV_TRUSTED_PROXIES as networks; ValueError naming the entry that is not one."""
    networks = []
    for entry in filter(None, (part.strip() for part in setting.split(","))):
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"MAILPROV_TRUSTED_PROXIES: {entry!r} is not an address or "
                             "network") from None
    return networks


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(request: web.Request, trusted: Sequence[Network]) -> str:
    """Where the request comes from (see the module's docstring)."""
    peer = request.remote or "unknown"
    if not trusted or not _trusted(peer, trusted):
        return peer
    hops = [hop.strip() for header in request.headers.getall("X-Forwarded-For", [])
            for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        try:
            address = str(ipaddress.ip_address(hop))
        except ValueError:
            # only a hop a trusted proxy did not add can be garbage, and the proxy adds
            # its peer at the right: stop at what it vouched for
            return peer
        if not _trusted(address, trusted):
            return address
    return peer


def client_of(request: web.Request) -> str:
    """The request's client address (the throttle's and the log line's), found once."""
    if CLIENT not in request:
        trusted: list[Network] = request.app[TRUSTED_PROXIES]
        request[CLIENT] = client_address(request, trusted)
    return request[CLIENT]
