"""The queue page, `/ops`: the queue now, the last hour as a chart, the latest failures,
and each task's detail, with a button to retry a failed one.

Server-rendered HTML with an inline SVG chart and no external assets; it refreshes itself.
It answers 404 while `ops_token` is empty. The token comes as `Authorization: Bearer`,
or once as `?token=`, which is swapped for a cookie and dropped from the address.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from html import escape
from typing import Any

from aiohttp import web

from service.core import oversight
from service.core.errors import NotFound
from service.core.oversight import age, when
from service.web.state import ARQ, DB, READS, SETTINGS

COOKIE = "mailprov_ops"
REFRESH_S = 10
CHART_W, CHART_H, BAR_GAP = 600, 120, 1

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .8em}h2{font-size:1.05em;margin:1.5em 0 .5em}
.cards{display:flex;gap:.8em;flex-wrap:wrap}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:8em}
.card b{display:block;font-size:1.6em}.card.bad b{color:#b3261e}
table{border-collapse:collapse;background:#fff}
td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f0f0f0}.err{color:#b3261e}.muted{color:#777}
pre{background:#fff;border:1px solid #ddd;padding:.6em;overflow:auto;max-height:30em}
svg{background:#fff;border:1px solid #ddd}button{cursor:pointer}
"""


def _cookie_value(token: str) -> str:
    # the cookie holds a digest, so the token itself sits in no browser's cookie store
    return hashlib.sha256(f"mailprov-ops:{token}".encode()).hexdigest()


def _authorized(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return hmac.compare_digest(header[7:].strip().encode(), token.encode())
    cookie = request.cookies.get(COOKIE, "")
    return hmac.compare_digest(cookie.encode(), _cookie_value(token).encode())


def _denied(request: web.Request) -> web.Response | None:
    """None when the caller holds the token. Else: 404 while the page is off, or a 401
    page with a token form. A valid `?token=` becomes a cookie, and the page is reloaded
    without it in the address. (Returned, not raised: the error middleware would turn a
    raised 401 into the API's JSON error.)"""
    token = request.app[SETTINGS].ops_token
    if not token:
        raise NotFound
    given = request.query.get("token")
    if given is not None and hmac.compare_digest(given.encode(), token.encode()):
        redirect = web.HTTPSeeOther(str(request.rel_url.without_query_params("token")))
        redirect.set_cookie(COOKIE, _cookie_value(token), httponly=True, samesite="Strict",
                            path="/ops", secure=request.secure)
        raise redirect
    if _authorized(request, token):
        return None
    form = ("<p>This page needs the ops token (<code>MAILPROV_OPS_TOKEN</code>).</p>"
            "<form method=get><input type=password name=token autofocus> "
            "<button>Open</button></form>")
    response = _html(_page("mailprov ops", form, refresh=False), status=401)
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _page(title: str, body: str, *, refresh: bool = True) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if refresh else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
            f"<body>{body}</body></html>")


def _html(text: str, status: int = 200) -> web.Response:
    # the page carries nothing that may be cached or framed elsewhere
    return web.Response(text=text, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                 "Content-Security-Policy": "default-src 'none'; "
                                 "style-src 'unsafe-inline'; form-action 'self'"})


def chart(per_minute: list[tuple[datetime, int, int]]) -> str:
    """Finished tasks per minute as stacked bars (completed under failed), inline SVG."""
    top = max([c + f for _, c, f in per_minute] + [1])
    width = CHART_W / max(len(per_minute), 1)
    bars = []
    for i, (minute, completed, failed) in enumerate(per_minute):
        x = i * width
        h_ok = CHART_H * completed / top
        h_bad = CHART_H * failed / top
        label = escape(f"{minute.astimezone(UTC):%H:%M} UTC: {completed} completed, "
                       f"{failed} failed")
        bars.append(
            f'<g><title>{label}</title>'
            f'<rect x="{x:.1f}" y="{CHART_H - h_ok:.1f}" width="{width - BAR_GAP:.1f}" '
            f'height="{h_ok:.1f}" fill="#2e7d32"/>'
            f'<rect x="{x:.1f}" y="{CHART_H - h_ok - h_bad:.1f}" '
            f'width="{width - BAR_GAP:.1f}" height="{h_bad:.1f}" fill="#c62828"/></g>')
    return (f'<svg width="{CHART_W}" height="{CHART_H + 18}" role="img" '
            f'viewBox="0 0 {CHART_W} {CHART_H + 18}" '
            f'aria-label="tasks finished per minute, last hour">{"".join(bars)}'
            f'<text x="0" y="{CHART_H + 14}" font-size="11" fill="#777">-60 min</text>'
            f'<text x="{CHART_W}" y="{CHART_H + 14}" font-size="11" fill="#777" '
            f'text-anchor="end">now · peak {top}/min</text></svg>')


def _card(label: str, value: Any, bad: bool = False) -> str:
    return (f'<div class="card{" bad" if bad else ""}"><b>{escape(str(value))}</b>'
            f"{escape(label)}</div>")


def _retry_button(request: web.Request, task_id: int) -> str:
    action = request.app.router["ops_retry"].url_for(task_id=str(task_id))
    return (f'<form method="post" action="{escape(str(action))}" style="margin:0">'
            f"<button>Retry</button></form>")


async def queue_page(request: web.Request) -> web.Response:
    if (denied := _denied(request)) is not None:
        return denied
    app = request.app
    now = await oversight.summary(app[READS], app[ARQ], app[SETTINGS])
    failures = await oversight.recent_failures(app[READS])
    cards = "".join([
        _card(f"jobs in queue ({now.deferred} deferred)", now.depth),
        _card("tasks queued", now.queued),
        _card("processing", now.processing),
        _card("workers alive", len(now.workers), bad=not now.workers),
        _card("oldest queued", age(now.oldest_queued_age_s),
              bad=(now.oldest_queued_age_s or 0) > 60),
        _card("completed, last hour", now.completed_last_hour),
        _card("failed, last hour", now.failed_last_hour, bad=now.failed_last_hour > 0),
        _card("failed, not retried", now.failed, bad=now.failed > 0),
    ])
    router = app.router
    rows = "".join(
        f'<tr><td><a href="{router["ops_task"].url_for(task_id=str(t["id"]))}">{t["id"]}</a>'
        f'</td><td>{t["account_id"]}</td><td>{escape(t["type"])}</td>'
        f'<td>{escape(t["domain"])}</td><td class="err">{escape(t["error"] or "")}</td>'
        f'<td>{t["attempts"]}</td><td>{when(t["finished_at"])}</td>'
        f"<td>{_retry_button(request, t['id'])}</td></tr>"
        for t in failures)
    workers = "".join(
        f"<tr><td>{escape(w.id)}</td><td>{when(datetime.fromtimestamp(w.started, UTC))}</td>"
        f"<td><code>{escape(w.health)}</code></td>"
        f"<td{'' if w.hashing == 'ok' else ' class=err'}>{escape(w.hashing)}</td></tr>"
        for w in now.workers)
    body = (
        f"<h1>mailprov queue</h1><div class=cards>{cards}</div>"
        f"<h2>Finished per minute, last hour</h2>{chart(now.per_minute)}"
        f'<p class="muted">green: completed, red: failed. Updated '
        f"{when(datetime.now(UTC))} UTC; refreshes every {REFRESH_S} s.</p>"
        f"<h2>Latest failed tasks</h2>"
        + (f"<table><tr><th>task</th><th>account</th><th>type</th><th>domain</th>"
           f"<th>reason</th><th>attempts</th><th>finished (UTC)</th><th></th></tr>{rows}"
           f"</table>" if failures else "<p>None.</p>")
        + "<h2>Workers</h2>"
        + (f"<table><tr><th>worker</th><th>started (UTC)</th><th>arq health</th>"
           f"<th>hashing</th></tr>"
           f"{workers}</table>" if workers else '<p class="err">No worker is alive.</p>'))
    return _html(_page("mailprov queue", body))


async def task_page(request: web.Request) -> web.Response:
    if (denied := _denied(request)) is not None:
        return denied
    app = request.app
    task_id = int(request.match_info["task_id"])
    task = await oversight.task_detail(app[READS], app[ARQ], app[SETTINGS], task_id)
    if task is None:
        raise NotFound
    facts = [
        ("status", task["status"]), ("type", task["type"]), ("account", task["account_id"]),
        ("domain", task["domain"]), ("reason", task["error"] or "-"),
        ("progress", f"{task['progress_done']} / {task['progress_total']}"),
        ("attempts", task["attempts"]), ("job in queue", "yes" if task["in_queue"] else "no"),
        ("created", when(task["created_at"])), ("started", when(task["started_at"])),
        ("finished", when(task["finished_at"])), ("last change", when(task["updated_at"])),
        ("waited", age(task["waited_s"])), ("ran", age(task["ran_s"])),
    ]
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in facts)
    items = "".join(
        f"<tr><td>{escape(name)}</td><td>{escape(str(item.get('status')))}</td>"
        f"<td>{'yes' if item.get('generated') else ''}</td></tr>"
        for name, item in task["results"].items())
    retry = f"<p>{_retry_button(request, task_id)}</p>" if task["status"] == "failed" else ""
    deliveries = "".join(
        f"<tr><td>{d['id']}</td><td>{escape(d['url'])}</td><td>{escape(d['state'])}</td>"
        f"<td>{len(d['attempts'])}</td><td>{escape('; '.join(_attempt(a) for a in d['attempts']))}"
        f"</td></tr>" for d in await app[DB].task_deliveries(task_id=task_id))
    back = app.router["ops"].url_for()
    body = (
        f'<p><a href="{back}">&larr; queue</a></p><h1>Task {task_id}</h1>{retry}'
        f"<table>{rows}</table><h2>Items ({len(task['results'])})</h2>"
        + (f"<table><tr><th>item</th><th>result</th><th>password generated</th></tr>{items}"
           f"</table>" if items else "<p>No results yet.</p>")
        + "<h2>Webhook deliveries</h2>"
        + (f"<table><tr><th>id</th><th>endpoint</th><th>state</th><th>attempts</th>"
           f"<th>each attempt</th></tr>{deliveries}</table>" if deliveries
           else "<p>None.</p>")
        + "<h2>Payload</h2><p class=muted>Password hashes are hidden.</p>"
        f"<pre>{escape(json.dumps(task['payload'], indent=2, ensure_ascii=False))}</pre>")
    return _html(_page(f"mailprov task {task_id}", body,
                       refresh=task["status"] in ("queued", "processing")))


def _attempt(attempt: dict[str, Any]) -> str:
    """One delivery attempt, in a few words."""
    return f"{attempt['at']} {attempt['error'] or attempt['status']}"


async def retry(request: web.Request) -> web.Response:
    """POST: retry a failed task, then show it. The cookie is SameSite=Strict, so another
    site cannot post here on an operator's behalf."""
    if (denied := _denied(request)) is not None:
        return denied
    task_id = int(request.match_info["task_id"])
    try:
        await oversight.retry_task(request.app[DB], request.app[ARQ], task_id)
    except oversight.RetryRefused as exc:
        return _html(_page("mailprov ops", f"<p class=err>{escape(str(exc))}</p>",
                           refresh=False),
                     status=404 if isinstance(exc, oversight.NoSuchTask) else 409)
    raise web.HTTPSeeOther(str(request.app.router["ops_task"].url_for(task_id=str(task_id))))
