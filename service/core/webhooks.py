"""Webhook endpoints: registering one (its URL checked, its secret made and sealed), and
what a delivery is signed with. The deliveries themselves are worker/webhooks.py's."""

from __future__ import annotations

import asyncio
import ipaddress
import secrets as random
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from service.core import secrets
from service.core.errors import (
    ApiError,
    WebhookUrlInvalid,
    WebhookUrlPrivate,
    WebhookUrlUnresolvable,
)
from service.core.store import Row, Store

SIGNATURE_HEADER = "Mailprov-Signature"
# the secret's own key, derived from MAILPROV_SECRET_KEY (service/core/secrets.py)
SECRET_PURPOSE = "webhook-secret"  # noqa: S105 - a purpose label
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix
MAX_URL = 2000
RESOLVE_TIMEOUT_S = 5.0


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def _addresses(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _host_port(url: str) -> tuple[str, int]:
    """The URL's host and port; WebhookUrlInvalid when it is not a usable one."""
    if len(url) > MAX_URL or any(c.isspace() for c in url):
        raise WebhookUrlInvalid
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookUrlInvalid from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookUrlInvalid
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_url(url: str, allow_private: bool) -> None:
    """Refuse a URL the service must not POST to: every address its host resolves to must
    be a public one, unless `allow_private`."""
    host, port = _host_port(url)
    if allow_private:
        return
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):  # TimeoutError is an OSError
            addresses = await _addresses(host, port)
    except (OSError, ValueError):  # UnicodeError (a label too long) is a ValueError
        raise WebhookUrlUnresolvable from None
    if not addresses or not all(_public(a) for a in addresses):
        raise WebhookUrlPrivate


async def allowed(url: str, allow_private: bool) -> bool:
    """At delivery time: whether the URL still resolves to public addresses only (a name
    that now points inside is not followed)."""
    try:
        await check_url(url, allow_private)
    except ApiError:
        return False
    return True


@dataclass(frozen=True)
class NewWebhook:
    id: int
    url: str
    secret: str  # shown once, at registration


async def register(store: Store, secret_key: str, account_id: int, url: str,
                   allow_private: bool) -> NewWebhook:
    """Check the URL, make a secret, keep it sealed; the endpoint with its secret."""
    await check_url(url, allow_private)
    secret = SECRET_PREFIX + random.token_hex(24)
    row: Row = await store.create_webhook(
        account_id=account_id, url=url,
        secret_sealed=secrets.seal(secret_key, secret, SECRET_PURPOSE))
    return NewWebhook(row["id"], row["url"], secret)
