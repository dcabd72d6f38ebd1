"""A page of a listing as the resource API answers it, addy.io's shape:
`{"data": [...], "meta": {...}, "links": {"first", "last", "prev", "next"}}`.

`first` and `last` reach their page by number (each costs what the first page does:
service/core/sql/paging.sql); `prev` and `next` carry a cursor as well, so following
them costs the same however deep the page. Links keep the request's filters and sort.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from service.core.errors import ApiError
from service.core.paging import Cursor, PageRequest, key_text
from service.core.store import LISTINGS, Row
from service.web.call import Call
from service.web.state import READS

Shape = Callable[[Row], dict[str, Any]]
Handler = Callable[[Call], Awaitable[web.Response]]

# the filters of every listing, as the validated query names them (each listing's query
# schema takes only its own)
FILTERS = ("domain", "search", "active", "status", "type")


def page_request(call: Call) -> PageRequest:
    """The validated query of a list request as the store's page request."""
    data = call.data
    sort = data["sort"]
    return PageRequest(
        account_id=call.account_id, number=data["page_number"], size=data["page_size"],
        sort=sort.lstrip("-"), descending=sort.startswith("-"), cursor=data["page_cursor"],
        filters={name: data[name] for name in FILTERS if name in data},
        deleted=data.get("deleted") or "without",
        domains=None if call.key.domains is None else sorted(call.key.domains))


def lister(listing: str, shape: Shape) -> Handler:
    """The handler of a list route: pages of `listing`, each row shown by `shape`."""

    async def handle(call: Call) -> web.Response:
        return await paged(call, listing, shape)

    handle.__name__ = f"list_{listing}"
    return handle


def reader(shape: Shape) -> Handler:
    """The handler of a read route: what its lookup found, shown by `shape`."""

    async def handle(call: Call) -> web.Response:
        assert call.found is not None  # the route's lookup
        return web.json_response(shape(call.found))

    handle.__name__ = f"read_{shape.__name__}"
    return handle


def deleted_once(error: type[ApiError], what: str) -> Callable[[dict[str, Any], Row], None]:
    """A DELETE's check: a deleted `what` is deleted again only for good (?purge=true)."""

    def check(data: dict[str, Any], found: Row) -> None:
        if found["deleted_at"] is not None and not data["purge"]:
            raise error(f"The {what} is deleted already; ?purge=true deletes it for good.")

    return check


async def paged(call: Call, listing: str, shape: Shape) -> web.Response:
    """One page of `listing` (a page_* query of the store), each row shown by `shape`."""
    request = page_request(call)
    page = await getattr(call.app[READS], listing)(request)
    size, number = request.size, request.number
    last = max(1, -(-page.total // size))
    column = LISTINGS[listing].sorts[request.sort][0]

    def link(to: int, how: str | None = None, row: Row | None = None) -> str:
        query = [(k, v) for k, v in call.request.query.items() if not k.startswith("page[")]
        query += [("page[number]", str(to)), ("page[size]", str(size))]
        if how is not None and row is not None:
            cursor = Cursor(how, key_text(row[column]), row["id"], request.sort_spec)
            query.append(("page[cursor]", cursor.encode()))
        return str(call.request.url.with_query(query))

    return web.json_response({
        "data": [shape(row) for row in page.rows],
        "meta": {"current_page": number, "last_page": last, "per_page": size,
                 "total": page.total},
        "links": {
            "first": link(1), "last": link(last),
            "prev": link(number - 1, "to", page.prev) if page.prev and number > 1 else None,
            "next": link(number + 1, "from", page.next) if page.next else None,
        },
    })
