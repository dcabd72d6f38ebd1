"""Domain exceptions. Each carries the status a client is answered with, and its message
in the docstring, so raising sites stay short: `raise DomainNotFound`. Each API face
renders them in its own error shape."""

from __future__ import annotations

import asyncio
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import asyncpg
import redis.exceptions

# A backing service is down or restarting: the web answers 503, a job tries again later.
BACKEND_DOWN: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    # a pooled connection whose session the server ended mid-operation (a restart) can
    # fail this way before the pool drops it (MagicStack/asyncpg#1069)
    asyncpg.InternalClientError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    # the hashing pool lost its processes on every try (service/core/passwords.py heals
    # a single loss by itself)
    BrokenProcessPool,
)


class ApiError(Exception):
    """Internal error."""

    status = 500

    def __init__(self, reason: str | None = None, *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        self.reason = reason or (self.__doc__ or "").strip()
        self.headers = headers or {}
        # extra top-level fields of the error body (a failed task's Task_id, results, ...)
        self.extra = extra
        super().__init__(self.reason)


class BadJson(ApiError):
    """The request body must be a JSON object."""

    status = 400


class BodyTooDeep(BadJson):
    """The request body is nested too deeply."""


class NotJson(ApiError):
    """The request body must be sent as JSON (Content-Type: application/json)."""

    status = 415


class InvalidApiKey(ApiError):
    """Invalid API key."""

    status = 401


class UnauthorizedCaller(ApiError):
    """Unauthorized caller."""

    status = 403


class ReadOnlyKey(ApiError):
    """This API key is read-only."""

    status = 403


class NotFound(ApiError):
    """Not found."""

    status = 404


class DomainNotFound(NotFound):
    """Domain not found for this account."""


class ParentDomainNotFound(NotFound):
    """Parent domain was not found."""


class TaskNotFound(NotFound):
    """Task ID was not found for this API key."""


class MailboxNotFound(NotFound):
    """Mailbox not found for this account."""


class AliasNotFound(NotFound):
    """Alias not found for this account."""


class AliasDomainNotFound(NotFound):
    """Alias domain not found for this account."""


class Conflict(ApiError):
    """Already exists."""

    status = 409


class DomainExists(Conflict):
    """Domain already exists."""


class AliasDomainExists(Conflict):
    """This name is hosted already, as a domain or as an alias domain."""


class MailboxExists(Conflict):
    """Mailbox already exists."""


class AddressIsAlias(Conflict):
    """An alias has this address already."""


class AliasExists(Conflict):
    """Alias already exists."""


class AliasShadowsMailbox(Conflict):
    """A mailbox has this address; an alias cannot shadow it."""


class DomainDeleted(Conflict):
    """The domain is deleted; restore it first."""


class ParentDomainDeleted(Conflict):
    """The parent domain is deleted; restore it first."""


class MailboxDeleted(Conflict):
    """The mailbox is deleted; restore it first."""


class AliasDeleted(Conflict):
    """The alias is deleted; restore it first."""


class NotDeleted(Conflict):
    """It is not deleted, so there is nothing to restore."""


class Invalid(ApiError):
    """Validation failed."""

    status = 422

    def __init__(self, reason: str | None = None, errors: dict[str, list[str]] | None = None,
                 **extra: Any) -> None:
        super().__init__(reason, **extra)
        if errors:
            self.extra["errors"] = errors


class TaskTypeMismatch(Invalid):
    """Task type does not match this endpoint."""


class TaskFailed(Invalid):
    """Task processing failed."""


class RateLimited(ApiError):
    """Rate limit exceeded: too many requests in the last hour."""

    status = 429


class SubDomainRateLimited(RateLimited):
    """Sub-domain requests are limited to once per hour for this domain."""


class Unavailable(ApiError):
    """A backing service is unavailable; try again shortly."""

    status = 503


class WebhookUrlInvalid(ApiError):
    """The URL must be an absolute http:// or https:// URL with a host name."""

    status = 422


class WebhookUrlPrivate(ApiError):
    """The URL's host is a private, loopback or link-local address, or resolves to one."""

    status = 422


class WebhookUrlUnresolvable(ApiError):
    """The URL's host name does not resolve."""

    status = 422


class WebhookNotFound(ApiError):
    """Webhook not found."""

    status = 404
