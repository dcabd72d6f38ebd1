"""A domain's DNS: the records to publish (GET), a verification and a DKIM rotation (tasks).

The records are built from the settings and the domain's keys on every read, so a
changed MAILPROV_MX_HOST or a rotation shows at once; what the last check found is
joined to them by type and name.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.core import dnscheck
from service.core.errors import DomainDeleted
from service.core.store import Row
from service.web.call import Call
from service.web.resources.shapes import iso
from service.web.state import DB, SETTINGS


def check_live(data: dict[str, Any], domain: Row) -> None:
    """A deleted domain is neither verified nor given keys."""
    if domain["deleted_at"] is not None:
        raise DomainDeleted


def _record(record: dnscheck.Record, found: dict[str, Any]) -> dict[str, Any]:
    state = found.get("state", dnscheck.UNCHECKED)
    shown = {"type": record.type, "name": record.name, "value": record.value,
             "role": record.role, "required": record.required,
             "verified": state == dnscheck.VERIFIED, "state": state,
             "found": found.get("found", [])}
    if record.role == "dkim":
        shown |= {"dkim_selector": record.key["selector"], "dkim_domain": record.name,
                  "dkim_public_record": record.value,
                  "dkim_verified": state == dnscheck.VERIFIED,
                  "dkim_algorithm": record.key["algorithm"],
                  "retire_at": iso(record.key["retire_at"])}
    return shown


async def get_dns(call: Call) -> web.Response:
    domain = call.found
    assert domain is not None  # the route's lookup
    db = call.app[DB]
    keys = await db.domain_dkim_keys(domain_id=domain["id"])
    check = await db.domain_dns(domain_id=domain["id"])
    findings = (check and check["dns_results"]) or {}
    records = dnscheck.expected(call.app[SETTINGS], domain["name"], keys)
    shown = [_record(r, findings.get(r.id, {})) for r in records]

    def holds(role: str) -> bool:
        return any(s["verified"] for s in shown if s["role"] == role and s["required"])

    return web.json_response({
        "domain": domain["name"],
        "status": "deleted" if domain["deleted_at"] is not None else domain["status"],
        "records": shown, "mx_verified": holds("mx"), "spf_verified": holds("spf"),
        "dkim_verified": holds("dkim"),
        "checked_at": iso(check["dns_checked_at"]) if check else None,
        "lost_at": iso(check["dns_lost_at"]) if check else None})


async def verify(call: Call) -> web.Response:
    domain = call.found
    assert domain is not None  # the route's lookup
    task_id = await call.submit("domain_verify", domain["name"], {"domain_id": domain["id"]}, 1)
    return call.accepted(task_id, f"Scheduled to check the DNS records of {domain['name']}.")


async def rotate(call: Call) -> web.Response:
    domain = call.found
    assert domain is not None  # the route's lookup
    algorithm = call.data.get("algorithm") or call.app[SETTINGS].dkim_algorithm
    task_id = await call.submit("dkim_rotate", domain["name"],
                                {"domain_id": domain["id"], "algorithm": algorithm}, 1)
    return call.accepted(task_id, f"Scheduled to make a new {algorithm} DKIM key for "
                                  f"{domain['name']}; the current one stays published for "
                                  "the grace period.")

