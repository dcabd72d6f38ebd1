"""The resource API's webhooks: an account's endpoints, and what was delivered to each
(worker/webhooks.py sends the deliveries)."""

from __future__ import annotations

from aiohttp import web

from service.core import webhooks
from service.core.errors import WebhookNotFound
from service.core.taskview import iso
from service.web.call import Call
from service.web.resources.schemas import path_id
from service.web.state import DB, SETTINGS

DELIVERIES_SHOWN = 100


async def create_webhook(call: Call) -> web.Response:
    """201 with the secret: the only time it is shown."""
    settings = call.app[SETTINGS]
    new = await webhooks.register(call.app[DB], settings.secret_key, call.account_id,
                                  call.data["url"], settings.webhook_allow_private)
    return web.json_response({"id": new.id, "url": new.url, "secret": new.secret},
                             status=201)


async def list_webhooks(call: Call) -> web.Response:
    rows = await call.app[DB].list_webhooks(account_id=call.account_id)
    return web.json_response({"webhooks": [
        {"id": r["id"], "url": r["url"], "created_at": iso(r["created_at"])} for r in rows]})


def _webhook_id(call: Call) -> int:
    try:
        return path_id(call.request.match_info["id"])
    except ValueError:
        raise WebhookNotFound from None


async def delete_webhook(call: Call) -> web.Response:
    if not await call.app[DB].delete_webhook(account_id=call.account_id,
                                             webhook_id=_webhook_id(call)):
        raise WebhookNotFound
    return web.json_response({"type": "success", "msg": "Webhook removed."})


async def webhook_deliveries(call: Call) -> web.Response:
    deliveries = await call.app[DB].webhook_deliveries(
        account_id=call.account_id, webhook_id=_webhook_id(call), limit=DELIVERIES_SHOWN)
    if deliveries is None:
        raise WebhookNotFound
    return web.json_response({"deliveries": deliveries})
