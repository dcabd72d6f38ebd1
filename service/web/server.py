"""Serving the app: aiohttp's server, with its own answers in the API's contract.

A request too malformed to reach the app (a bad request line, a bad header, a byte that
does not belong) is answered by aiohttp itself, before any middleware: in plain text,
with a `Server: Python/… aiohttp/…` banner, and logged at ERROR with its raw bytes.
aiohttp has no hook for that answer (aio-libs/aiohttp#3287), so `Runner` gives its server
a protocol whose `handle_error` answers in the MailAPI's error contract, with an
`X-Request-ID` and no banner, and logs one line through the redaction guard.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from http import HTTPStatus

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from service.web.middleware import new_request_id
from service.web.route import MAILAPI

log = logging.getLogger("mailprov.web")

# what every response says it comes from (aiohttp would name itself and Python, versions
# included)
SERVER = "mailprov"
MALFORMED = "The request is not valid HTTP."


async def hide_banner(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: no version banner on any response the app answers."""
    response.headers["Server"] = SERVER


class _Protocol(RequestHandler):
    """aiohttp's connection handler, answering what it cannot parse in the contract."""

    __slots__ = ()

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        request_id = new_request_id()
        if status >= 500:
            log.error("unhandled error in the HTTP server (request %s)", request_id,
                      exc_info=exc)
        else:
            # a port scanner or TLS spoken to a plain port is noise; anything else is worth
            # a line (the redaction guard takes any key out of the bytes it quotes)
            level = logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.WARNING
            log.log(level, "malformed request from %s: %s (request %s)", request.remote,
                    " ".join(str(exc or message or "").split()), request_id,
                    extra={"status": status, "request_id": request_id})
        if request.writer.output_size > 0:
            raise ConnectionError("a response is partly sent: no error response can follow")
        reason = MALFORMED if status == 400 else f"{HTTPStatus(status).phrase}."
        response = MAILAPI.error(status, reason, headers={"X-Request-ID": request_id,
                                                          "Server": SERVER})
        response.force_close()
        return response


class _Server(web.Server):
    """aiohttp's low-level server, making connections with `_Protocol`."""

    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """An AppRunner whose server answers malformed requests in the contract."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # the same object; only how it makes connections differs
        return server


async def serve(app: web.Application, host: str, port: int,
                listening: Callable[[], None] = lambda: None) -> None:
    """Serve `app` until SIGINT or SIGTERM, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = Runner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        listening()
        await stop.wait()
    finally:
        await runner.cleanup()
