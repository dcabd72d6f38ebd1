"""The resource API's tasks: every task of the account, whichever face recorded it."""

from __future__ import annotations

from aiohttp import web

from service.web.api.tasks import generated_passwords, waited
from service.web.call import Call
from service.web.resources import shapes


async def get_task(call: Call) -> web.Response:
    task = await waited(call)
    return web.json_response(shapes.task(task, await generated_passwords(call, task)))
