"""The one route table: every route of the web process, its policy and its documentation.

A request's path: this table -> the policy wrapper (service/web/policy.py) -> the handler
-> the store -> a task row -> the queue -> a job (worker/jobs.py) -> the store. The OpenAPI
document is generated from the same table (service/web/api/apidoc.py).
"""

from __future__ import annotations

from typing import Any

from service.core import errors, names
from service.core.store import Row, Store
from service.web.api import apidoc, domains, mailboxes, responses, tasks
from service.web.api import schemas as s
from service.web.api.apidoc import reason, response
from service.web.call import TASK_ROUTE
from service.web.ops import metrics, page, probes
from service.web.resources import alias_domains as r_alias_domains
from service.web.resources import aliases as r_aliases
from service.web.resources import dns as r_dns
from service.web.resources import domains as r_domains
from service.web.resources import mailboxes as r_mailboxes
from service.web.resources import responses as rr
from service.web.resources import schemas as rs
from service.web.resources import shapes
from service.web.resources import tasks as r_tasks
from service.web.resources import webhooks as r_webhooks
from service.web.resources.pages import deleted_once, lister, reader
from service.web.route import MAILAPI, RESOURCES, Doc, Lookup, Policy, Route

API = "/api/v1"


def _task_id(value: Any) -> int | None:
    """A task id as a query string gives it; None when it is not plainly one."""
    if isinstance(value, str) and value.isdigit() and 0 < int(value) <= s.PG_BIGINT_MAX:
        return int(value)
    return None


async def _key_with_task(store: Store, key_hash: str, task_id: int) -> Row | None:
    return await store.resolve_key_with_task(key_hash=key_hash, task_id=task_id)


async def _key_with_domain(store: Store, key_hash: str, domain: str) -> Row | None:
    return await store.resolve_key_with_domain(key_hash=key_hash, domain=domain)


TASK = Lookup("task_id", _task_id, _key_with_task, errors.TaskNotFound, domain="domain")
DOMAIN = Lookup("Domain", names.domain, _key_with_domain, errors.DomainNotFound, domain="name",
                reusable=True)
PARENT = Lookup("Domain", names.domain, _key_with_domain, errors.ParentDomainNotFound,
                domain="name")
LISTED_DOMAIN = Lookup("domain", names.domain, _key_with_domain, errors.DomainNotFound,
                       domain="name")


# the resource API's lookups: what its paths and bodies name, read with the key


async def _key_with_domain_entry(store: Store, key_hash: str, domain: str) -> Row | None:
    return await store.resolve_key_with_domain_entry(key_hash=key_hash, domain=domain)


async def _key_with_domain_usage(store: Store, key_hash: str, domain: str) -> Row | None:
    return await store.resolve_key_with_domain_entry(key_hash=key_hash, domain=domain,
                                                     usage=True)


async def _key_with_mailbox(store: Store, key_hash: str, address: str) -> Row | None:
    return await store.resolve_key_with_mailbox(key_hash=key_hash, address=address)


async def _key_with_alias(store: Store, key_hash: str, alias_id: int) -> Row | None:
    return await store.resolve_key_with_alias(key_hash=key_hash, alias_id=alias_id)


async def _key_with_alias_domain(store: Store, key_hash: str, name: str) -> Row | None:
    return await store.resolve_key_with_alias_domain(key_hash=key_hash, name=name)


async def _key_with_new_mailbox(store: Store, key_hash: str,
                                new: tuple[str, str]) -> Row | None:
    domain, local_part = new
    return await store.resolve_key_with_address(key_hash=key_hash, domain=domain,
                                                address=f"{local_part}@{domain}")


async def _key_with_new_alias(store: Store, key_hash: str, address: str) -> Row | None:
    return await store.resolve_key_with_address(key_hash=key_hash,
                                                domain=names.domain_of(address),
                                                address=address)


async def _key_with_alias_target(store: Store, key_hash: str,
                                 new: tuple[str, str]) -> Row | None:
    name, target = new
    return await store.resolve_key_with_alias_target(key_hash=key_hash, name=name,
                                                     target=target)


def _domain_pair(values: tuple[str, str]) -> tuple[str, str]:
    return names.domain(values[0]), names.domain(values[1])


def _new_mailbox(values: tuple[str, str]) -> tuple[str, str]:
    return names.domain(values[0]), names.local_part(values[1])


# `domain=`: the column of the found row's domain (a key limited to others does not see it)
TASK_AT = Lookup("task_id", rs.path_id, _key_with_task, errors.TaskNotFound, domain="domain",
                 in_path=True)
DOMAIN_AT = Lookup("domain", names.domain, _key_with_domain_entry, errors.DomainNotFound,
                   domain="name", in_path=True)
DOMAIN_USAGE_AT = Lookup("domain", names.domain, _key_with_domain_usage, errors.DomainNotFound,
                         domain="name", in_path=True)
MAILBOX_AT = Lookup("email", names.address, _key_with_mailbox, errors.MailboxNotFound,
                    domain="domain", in_path=True)
ALIAS_AT = Lookup("id", rs.path_id, _key_with_alias, errors.AliasNotFound, domain="domain",
                  in_path=True)
# an alias domain belongs to the key's domains through its target
ALIAS_DOMAIN_AT = Lookup("alias_domain", names.domain, _key_with_alias_domain,
                         errors.AliasDomainNotFound, domain="target", in_path=True)
NEW_MAILBOX = Lookup(("domain", "local_part"), _new_mailbox, _key_with_new_mailbox,
                     errors.DomainNotFound, domain="name")
NEW_ALIAS = Lookup("address", names.alias_address, _key_with_new_alias, errors.DomainNotFound,
                   domain="name")
NEW_ALIAS_DOMAIN = Lookup(("alias_domain", "target_domain"), _domain_pair,
                          _key_with_alias_target, errors.DomainNotFound, domain="name")


def _read(path: str, name: str, handler: Any, query: type, tag: str, summary: str,
          description: str, ok: Any, lookup: Lookup | None = None) -> Route:
    """A read of the resource API: 200 with a resource or a page."""
    return Route("GET", f"{API}/{path}", name, handler,
                 Policy(RESOURCES, query=query, rate="get", lookup=lookup, bearer=True),
                 Doc(tag, summary, description, ok, "The resource." if lookup else "A page."))


def _write(method: str, path: str, name: str, handler: Any, task: str, tag: str,
           summary: str, description: str, *, body: type | None = None,
           query: type | None = None, lookup: Lookup | None = None, check: Any = None,
           rate: str = "write", conflicts: str = "", accepted: Any = rr.Accepted,
           empty_body: bool = False, example: dict[str, Any] | None = None) -> Route:
    """A write of the resource API: checked at once, then 202 and its task's Location.
    `conflicts` says what else than an Idempotency-Key in flight answers 409; `example` is
    a body it accepts (every route with a body has one; a bodiless restore's is `{}`)."""
    errors_ = {}
    if conflicts:
        errors_["409"] = apidoc.optional_retry_after(response(
            f"{conflicts[0].upper()}{conflicts[1:]}; or a request with this Idempotency-Key "
            "is still being handled (with `Retry-After`).", rr.ResourceError))
    return Route(method, f"{API}/{path}", name, handler,
                 Policy(RESOURCES, body=body, query=query, rate=rate, idempotent=True,
                        lookup=lookup, check=check, task=task, bearer=True,
                        empty_body=empty_body),
                 Doc(tag, summary, description, accepted,
                     "Accepted: the task is recorded; poll it at `Location`.", errors_,
                     example=example if example is not None or body is None else {}))


NO_WEBHOOK = {"404": response(f"Not the account's: {reason(errors.WebhookNotFound)}",
                              rr.ResourceError)}
ALREADY_DELETED = "it is deleted already (`?purge=true` deletes it for good)"
NOT_DELETED = f"it is not deleted: {reason(errors.NotDeleted)}"

# the resource API (api-resources.md): its routes, in the contract's order
RESOURCE_ROUTES: list[Route] = [
    _read("tasks", "tasks", lister("page_tasks", shapes.task), rs.TasksQuery, "tasks", "List tasks",
          "Every task of the account, of either face; newest first unless `sort=created_at`. "
          "Filters: `filter[status]`, `filter[type]`. A page shows no generated passwords: "
          "GET /tasks/{{task_id}} does, for a while after completion.", rr.TaskPage),
    _read(r"tasks/{task_id:\d{1,18}}", TASK_ROUTE, r_tasks.get_task, rs.TaskWaitQuery,
          "tasks", "Read a task", "Any task of the account, whichever face recorded it; "
          "`results` per item, a generated password in its item for a while after "
          "completion. `?wait=N` (at most 60) holds the answer until the task finishes or "
          "its progress moves, or N seconds pass.",
          rr.Task, TASK_AT),

    _read("domains", "domains", lister("page_domains", shapes.domain), rs.DomainsQuery, "domains",
          "List domains", "Sort: `domain`, `created_at`; filters: `filter[search]`, "
          "`filter[active]`, `filter[deleted]` (`with`, `only`).", rr.DomainPage),
    _write("POST", "domains", "domain_create", r_domains.create_domain, "domain", "domains",
           "Create a domain", "Seed 003's fields; `maxquota` defaults to `quota`. The domain "
           "is listed as `pending` until its task has provisioned it.",
           body=rs.NewDomain, rate="create_domain",
           conflicts=f"the name is hosted already (by anyone): {reason(errors.DomainExists)}",
           example={"domain": "example.com", "mailboxes": 10, "quota": 10240}),
    _write("POST", "domains/bulk-delete", "domain_bulk_delete", r_domains.bulk_delete,
           "domain_bulk_delete", "domains", "Delete domains",
           "Up to 100 domains, soft, each with its sub-domains, mailboxes and aliases: one "
           "task with a result per domain (`Not found.` for one that is not the account's).",
           body=rs.DomainBulkDelete,
           example={"domains": ["example.com"]}),
    _read("domains/{domain}", "domain", reader(shapes.domain), rs.NoQuery, "domains",
          "Read a domain", "Deleted ones too (`status`: `deleted`), until they are purged.",
          rr.Domain, DOMAIN_AT),
    _write("PUT", "domains/{domain}", "domain_update", r_domains.update_domain,
           "domain_update", "domains", "Change a domain",
           "Any writable field but `domain`. No limit may drop below what is in use, and "
           "`defquota` <= `maxquota` <= `quota` must hold: 422 otherwise.",
           body=rs.DomainChange, lookup=DOMAIN_USAGE_AT, check=r_domains.check_change,
           conflicts=f"the domain is deleted: {reason(errors.DomainDeleted)}",
           example={"mailboxes": 20, "description": "Main domain"}),
    _write("DELETE", "domains/{domain}", "domain_delete", r_domains.delete_domain,
           "domain_delete", "domains", "Delete a domain",
           "Soft: with its sub-domains, mailboxes and aliases, at once invisible to the mail "
           "stack and the MailAPI; `restore` brings all back within the retention. "
           "`?purge=true` deletes it all for good, at once.",
           query=rs.Purge, lookup=DOMAIN_AT, check=deleted_once(errors.DomainDeleted, "domain"),
           conflicts=ALREADY_DELETED),
    _write("POST", "domains/{domain}/restore", "domain_restore", r_domains.restore_domain,
           "domain_restore", "domains", "Restore a domain",
           "Undo a soft delete within the retention, with what was deleted with it.",
           body=rs.Empty, empty_body=True, lookup=DOMAIN_AT, check=r_domains.check_restore,
           conflicts=f"{NOT_DELETED}; or its parent is deleted: "
                     f"{reason(errors.ParentDomainDeleted)}"),

    _read("domains/{domain}/dns", "domain_dns", r_dns.get_dns, rs.NoQuery, "domains",
          "The DNS records to publish",
          "Every record the domain needs: MX (MAILPROV_MX_HOST), SPF, one DKIM TXT per "
          "published key (with CloudMailin's `dkim_*` fields), DMARC, and the autoconfig "
          "and autodiscover names. `name` is the full owner name; TXT values are "
          "unquoted. `verified`, `state` and `found` are what the last check found.",
          rr.DomainDns, DOMAIN_AT),
    _write("POST", "domains/{domain}/verify", "domain_verify", r_dns.verify, "domain_verify",
           "domains", "Verify the DNS records",
           "A `domain_verify` task: DNS is asked for each record (through "
           "MAILPROV_DNS_RESOLVER), with a result per record (`Missing.`, `Published with "
           "another value.`, ...). When MX, SPF and the signing key's DKIM record hold, the "
           "domain becomes `verified` in both faces; a verified domain whose records are "
           "gone goes back to `active`.", body=rs.Empty, empty_body=True, lookup=DOMAIN_AT,
           check=r_dns.check_live, conflicts=f"the domain is deleted: "
                                             f"{reason(errors.DomainDeleted)}"),
    _write("POST", "domains/{domain}/dkim/rotate", "domain_dkim_rotate", r_dns.rotate,
           "dkim_rotate", "domains", "Rotate the DKIM key",
           "A `dkim_rotate` task: a new key (`algorithm`: `rsa`, 2048 bits, or `ed25519`; "
           "default MAILPROV_DKIM_ALGORITHM) with a new dated selector signs from then on; "
           "the old key stays published (GET .../dns lists both) for "
           "MAILPROV_DKIM_GRACE_S, then is removed. Publish the new record before the "
           "signer's files are regenerated (`mailprov mailstack dkim`).",
           body=rs.DkimRotate, empty_body=True, lookup=DOMAIN_AT, check=r_dns.check_live,
           conflicts=f"the domain is deleted: {reason(errors.DomainDeleted)}",
           example={"algorithm": "rsa"}),

    _read("mailboxes", "mailboxes", lister("page_mailboxes", shapes.mailbox), rs.MailboxesQuery,
          "mailboxes", "List mailboxes", "Sort: `email`, `created_at`; filters: "
          "`filter[domain]`, `filter[search]` (address or name), `filter[active]`, "
          "`filter[deleted]`.", rr.MailboxPage),
    _write("POST", "mailboxes", "mailbox_create", r_mailboxes.create_mailbox, "mailbox_single",
           "mailboxes", "Create a mailbox",
           "A `mailbox_single` task, as create/mailbox/single records it. Without `password` "
           "or `password_hash` a password is generated, shown in the task's result for a "
           "while after completion. 422 when it would break the domain's limits.",
           body=rs.NewMailbox, lookup=NEW_MAILBOX, check=r_mailboxes.check_create,
           rate="create_mailbox_single",
           conflicts=f"the address is taken: {reason(errors.MailboxExists)} (a deleted "
                     f"mailbox keeps it until purged), {reason(errors.AddressIsAlias)}, or "
                     f"the domain is deleted",
           example={"domain": "example.com", "local_part": "john", "name": "John Doe",
                    "quota": 1024}),
    _write("POST", "mailboxes/bulk", "mailbox_bulk_action", r_mailboxes.bulk,
           "mailbox_bulk_action", "mailboxes", "Act on many mailboxes",
           "`activate`, `deactivate`, `delete`, `restore` or `forget` (delete for good) up to "
           "{bulk_max} addresses: one task, a result per address.", body=rs.MailboxBulk,
           example={"action": "deactivate", "emails": ["john@example.com"]}),
    _read("mailboxes/{email}", "mailbox", reader(shapes.mailbox), rs.NoQuery, "mailboxes",
          "Read a mailbox", "Deleted ones too, until they are purged. Never a password.",
          rr.Mailbox, MAILBOX_AT),
    _write("PUT", "mailboxes/{email}", "mailbox_update", r_mailboxes.update_mailbox,
           "mailbox_update", "mailboxes", "Change a mailbox",
           "`name`, `password` (hashed as creates do) or `password_hash` (kept as given), "
           "`quota` (within the domain's `maxquota` and what its `quota` has left), `active`, "
           "the flags.", body=rs.MailboxChange, lookup=MAILBOX_AT,
           check=r_mailboxes.check_change,
           conflicts=f"the mailbox or its domain is deleted: {reason(errors.MailboxDeleted)}",
           example={"name": "John Doe", "quota": 2048}),
    _write("DELETE", "mailboxes/{email}", "mailbox_delete", r_mailboxes.delete_mailbox,
           "mailbox_delete", "mailboxes", "Delete a mailbox",
           "Soft: the mail stack stops seeing it at once; the address stays taken until it "
           "is purged. `?purge=true` deletes it for good, at once.", query=rs.Purge,
           lookup=MAILBOX_AT, check=deleted_once(errors.MailboxDeleted, "mailbox"),
           conflicts=ALREADY_DELETED),
    _write("POST", "mailboxes/{email}/restore", "mailbox_restore",
           r_mailboxes.restore_mailbox, "mailbox_restore", "mailboxes", "Restore a mailbox",
           "Undo a soft delete within the retention; 422 when it no longer fits the "
           "domain's limits.", body=rs.Empty, empty_body=True, lookup=MAILBOX_AT,
           check=r_mailboxes.check_restore,
           conflicts=f"{NOT_DELETED}; or its domain is deleted"),

    _read("aliases", "aliases", lister("page_aliases", shapes.alias), rs.AliasesQuery, "aliases",
          "List aliases", "Sort: `address`, `created_at`; filters: `filter[domain]`, "
          "`filter[search]`, `filter[active]`, `filter[deleted]`.", rr.AliasPage),
    _write("POST", "aliases", "alias_create", r_aliases.create_alias, "alias", "aliases",
           "Create an alias", "`address` on one of the account's domains (`@example.com`: "
           "its catch-all), `goto` 1 to 50 addresses here or elsewhere. It counts against "
           "the domain's `aliases`. The answer names its `id`.",
           body=rs.NewAlias, lookup=NEW_ALIAS, check=r_aliases.check_create,
           accepted=rr.AliasAccepted,
           conflicts=f"{reason(errors.AliasExists)}, {reason(errors.AliasShadowsMailbox)}, "
                     "or the domain is deleted",
           example={"address": "sales@example.com", "goto": ["john@example.com"]}),
    _write("POST", "aliases/bulk", "alias_bulk_action", r_aliases.bulk, "alias_bulk_action",
           "aliases", "Act on many aliases",
           "`activate`, `deactivate`, `delete`, `restore` or `forget` up to 25 ids "
           "(addy.io's limit): one task, a result per id.", body=rs.AliasBulk,
           example={"action": "deactivate", "ids": [1]}),
    _read(r"aliases/{id:\d{1,18}}", "alias", reader(shapes.alias), rs.NoQuery, "aliases",
          "Read an alias", "Deleted ones too, until they are purged.", rr.Alias, ALIAS_AT),
    _write("PUT", r"aliases/{id:\d{1,18}}", "alias_update", r_aliases.update_alias,
           "alias_update", "aliases", "Change an alias", "`goto`, `active`.",
           body=rs.AliasChange, lookup=ALIAS_AT, check=r_aliases.check_change,
           conflicts=f"the alias is deleted: {reason(errors.AliasDeleted)}",
           example={"goto": ["john@example.com", "jane@example.org"]}),
    _write("DELETE", r"aliases/{id:\d{1,18}}", "alias_delete", r_aliases.delete_alias,
           "alias_delete", "aliases", "Delete an alias",
           "Soft; `restore` undoes it. `?purge=true` deletes it for good, at once.",
           query=rs.Purge, lookup=ALIAS_AT, check=deleted_once(errors.AliasDeleted, "alias"),
           conflicts=ALREADY_DELETED),
    _write("POST", r"aliases/{id:\d{1,18}}/restore", "alias_restore",
           r_aliases.restore_alias, "alias_restore", "aliases", "Restore an alias",
           "Undo a soft delete within the retention; 422 when the domain's `aliases` are "
           "all in use.", body=rs.Empty, empty_body=True, lookup=ALIAS_AT,
           check=r_aliases.check_restore, conflicts=f"{NOT_DELETED}; or its domain is deleted"),
    _write("DELETE", r"aliases/{id:\d{1,18}}/forget", "alias_forget", r_aliases.forget_alias,
           "alias_forget", "aliases", "Forget an alias",
           "Delete it for good, at once, deleted or not.", query=rs.NoQuery, lookup=ALIAS_AT),

    _read("alias-domains", "alias_domains", lister("page_alias_domains", shapes.alias_domain),
          rs.AliasDomainsQuery, "alias domains", "List alias domains",
          "Sort: `alias_domain`, `created_at`; filters: `filter[domain]` (the target), "
          "`filter[search]`, `filter[active]`.", rr.AliasDomainPage),
    _write("POST", "alias-domains", "alias_domain_create",
           r_alias_domains.create_alias_domain, "alias_domain", "alias domains",
           "Create an alias domain", "Mail to x@`alias_domain` goes to x@`target_domain`, "
           "one of the account's domains.", body=rs.NewAliasDomain, lookup=NEW_ALIAS_DOMAIN,
           check=r_alias_domains.check_create,
           conflicts=f"the name is hosted already: {reason(errors.AliasDomainExists)}; or "
                     "the target is deleted",
           example={"alias_domain": "example.net", "target_domain": "example.com"}),
    _read("alias-domains/{alias_domain}", "alias_domain", reader(shapes.alias_domain),
          rs.NoQuery, "alias domains", "Read an alias domain", "One alias domain.",
          rr.AliasDomain, ALIAS_DOMAIN_AT),
    _write("PUT", "alias-domains/{alias_domain}", "alias_domain_update",
           r_alias_domains.update_alias_domain, "alias_domain_update", "alias domains",
           "Change an alias domain", "`active`.", body=rs.AliasDomainChange,
           lookup=ALIAS_DOMAIN_AT,
           example={"active": False}),
    _write("DELETE", "alias-domains/{alias_domain}", "alias_domain_delete",
           r_alias_domains.delete_alias_domain, "alias_domain_delete", "alias domains",
           "Delete an alias domain", "For good, at once.", query=rs.NoQuery,
           lookup=ALIAS_DOMAIN_AT),

    Route("POST", f"{API}/webhooks", "webhook_create", r_webhooks.create_webhook,
          Policy(RESOURCES, body=rs.NewWebhook, rate="write", bearer=True),
          Doc("webhooks", "Register a webhook",
              "Every task the account finishes (completed or failed) is POSTed to `url` as "
              "GET /tasks/{{task_id}} shows it (generated passwords as null), signed: "
              "`Mailprov-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of \"<t>.<body>\" "
              "under the secret>`; `Mailprov-Delivery` names the delivery (a retry repeats "
              "it). A non-2xx answer or a timeout (10 s) is retried, 1, 2, 4, ... seconds "
              "apart, for 24 h. The `secret` is shown in this answer only. A URL whose host "
              "is or resolves to a private, loopback or link-local address is refused.",
              rr.RegisteredWebhook, "Created: the endpoint, with its secret.", ok_status="201",
              example={"url": "https://hooks.example.com/mailprov"})),
    Route("GET", f"{API}/webhooks", "webhooks", r_webhooks.list_webhooks,
          Policy(RESOURCES, query=rs.NoQuery, rate="get", bearer=True),
          Doc("webhooks", "List webhooks", "The account's endpoints (never their secrets).",
              rr.WebhookList, "The endpoints.")),
    Route("DELETE", rf"{API}/webhooks/{{id:\d{{1,18}}}}", "webhook_delete",
          r_webhooks.delete_webhook,
          Policy(RESOURCES, query=rs.NoQuery, rate="write", bearer=True),
          Doc("webhooks", "Remove a webhook",
              "At once: its pending deliveries are dropped with it.", rr.WebhookRemoved,
              "Removed.", NO_WEBHOOK)),
    Route("GET", rf"{API}/webhooks/{{id:\d{{1,18}}}}/deliveries", "webhook_deliveries",
          r_webhooks.webhook_deliveries,
          Policy(RESOURCES, query=rs.NoQuery, rate="get", bearer=True),
          Doc("webhooks", "A webhook's deliveries",
              "The latest 100, newest first, each with its attempts.", rr.DeliveryList,
              "The deliveries.", NO_WEBHOOK)),
]


def _poll(name: str, path: str, handler: Any, summary: str, description: str,
          ok: list[Any], failed: Any) -> Route:
    return Route("GET", f"{API}/{path}", name, handler,
                 Policy(MAILAPI, query=s.TaskQuery, rate="get", lookup=TASK),
                 Doc("tasks", summary, description, {"oneOf": ok},
                     "The task: `completed`, or `queued`/`processing` with `progress`.",
                     {"422": response(
                         "`task_id` is not a positive integer (with `errors`); the task is of "
                         f"another type ({reason(errors.TaskTypeMismatch)}); or the task "
                         "failed: the error contract plus `Task_id`, `task_id`, `domain` and "
                         "`results`.", {"oneOf": [responses.ValidationFailed, failed]})}))


ROUTES: list[Route] = [
    Route("GET", f"{API}/list/domain", "list_domain", domains.list_domains,
          Policy(MAILAPI, query=s.CallerQuery, rate="get", caller=True),
          Doc("domains", "List the account's domains",
              "All domains and sub-domains of the key's account; `caller_id` must be its id.",
              responses.DomainList, "The domains.")),
    Route("POST", f"{API}/create/domain", "create_domain", domains.create_domain,
          Policy(MAILAPI, body=s.CreateDomain, rate="create_domain", idempotent=True,
                 task="domain"),
          Doc("domains", "Create a domain",
              "Accepted at once; the domain is listed as `pending` until the worker has "
              "provisioned it. A domain can be hosted once per installation.",
              responses.DomainAccepted, "Accepted.", example={
                  "Domain": "example.com", "Params": {"quota_mb": 10240, "max_mailboxes": 100}},
              errors={"409": apidoc.optional_retry_after(response(
                  f"Some account holds the domain already: {reason(errors.DomainExists)}; or "
                  "a request with this Idempotency-Key is still being handled (with "
                  "`Retry-After`).", responses.Error))})),
    # its limit is one successful request per parent and window, so the handler takes the
    # slot once the parent is known, and gives it back if the task is not recorded
    Route("POST", f"{API}/create/sub-domain", "create_sub_domain", domains.create_sub_domains,
          Policy(MAILAPI, body=s.CreateSubDomain, idempotent=True, lookup=PARENT,
                 task="sub_domain"),
          Doc("domains", "Create sub-domains of a domain",
              "1 to {sub_domains_max} labels; each becomes a domain of the account "
              "inheriting the parent's defaults. At most one successful request per account "
              "and parent domain in any rolling hour.",
              responses.DomainAccepted, "Accepted.", example={
                  "Domain": "example.com", "Params": {"sub_domains": ["team", "support"]}},
              errors={"429": response(f"{reason(errors.SubDomainRateLimited)}; or "
                               f"{apidoc.THROTTLED}.", responses.Error, retry_after=True)})),
    Route("POST", f"{API}/create/mailbox/single", "create_mailbox_single",
          mailboxes.create_single,
          Policy(MAILAPI, body=s.CreateMailboxSingle, rate="create_mailbox_single",
                 idempotent=True, lookup=DOMAIN, check=mailboxes.check_single,
                 task="mailbox_single"),
          Doc("mailboxes", "Create one mailbox",
              "`Email_fullname` is a local part or an address in `Domain`; `single_bulk` must "
              "be `single`; `Params` is required (`{{}}` is fine). Without `password` or "
              "`password_hash` a strong password is generated and shown by "
              "get/mailbox/single.",
              responses.MailboxAccepted, "Accepted.", example={
                  "Email_fullname": "john", "single_bulk": "single", "Domain": "example.com",
                  "Params": {"display_name": "John Doe", "quota_mb": 1024}})),
    Route("POST", f"{API}/create/mailbox/bulk", "create_mailbox_bulk", mailboxes.create_bulk,
          Policy(MAILAPI, body=s.CreateMailboxBulk, rate="create_mailbox_bulk",
                 idempotent=True, lookup=DOMAIN, check=mailboxes.check_bulk,
                 task="mailbox_bulk"),
          Doc("mailboxes", "Create many mailboxes",
              "Either `Params.count` (1 to {bulk_max}) mailboxes named `Email_fullname` plus "
              "a number counting from `Params.start`, or `Params.mailboxes`, a list of 1 to "
              "{bulk_max} mailboxes. `single_bulk` must be `bulk`.",
              responses.MailboxAccepted, "Accepted.", example={
                  "Email_fullname": "team", "single_bulk": "bulk", "Domain": "example.com",
                  "Params": {"count": 25, "quota_mb": 512}})),
    Route("GET", f"{API}/list/mailbox", "list_mailbox", mailboxes.list_mailboxes,
          Policy(MAILAPI, query=s.ListMailboxQuery, rate="get", caller=True,
                 lookup=LISTED_DOMAIN),
          Doc("mailboxes", "List a domain's mailboxes",
              "The mailboxes of one of the account's domains; `caller_id` must be its id.",
              responses.MailboxList, "The mailboxes.")),
    _poll("get_mailbox_single", "get/mailbox/single", tasks.get_mailbox_single,
          "Poll a single-mailbox task",
          "A task of create/mailbox/single. A generated password shows in its item as "
          "`password` for a while after completion (a setting, default one hour), then as "
          "`null`.", [responses.TaskInProgress, responses.TaskCompleted],
          responses.FailedTask),
    _poll("get_mailbox_bulk", "get/mailbox/bulk", tasks.get_mailbox_bulk,
          "Poll a bulk-mailbox task",
          "A task of create/mailbox/bulk. Generated passwords show as for single tasks.",
          [responses.TaskInProgress, responses.TaskCompleted], responses.FailedTask),
    _poll("get_task", "get/task", tasks.get_task, "Poll any task",
          "Any task type, in the shape of get/mailbox/*, plus `type`. Every poll takes "
          "`wait=N` (seconds, at most 60): the answer is held until the task finishes or its "
          "`progress.done` moves, or N seconds pass.",
          [responses.TypedTaskInProgress, responses.TypedTaskCompleted],
          responses.TypedFailedTask),

    *RESOURCE_ROUTES,

    # the live reference: no key, no rate limit
    Route("GET", f"{API}/openapi.json", "openapi", apidoc.openapi,
          doc=Doc("docs", "This document", "The OpenAPI document of this API.",
                  {"description": "The document.",
                   "content": {"application/json": {"schema": {"type": "object"}}}})),
    Route("GET", f"{API}/docs", "docs", apidoc.docs,
          doc=Doc("docs", "The documentation page", "This document, rendered by Swagger UI.",
                  {"description": "An HTML page.",
                   "content": {"text/html": {"schema": {"type": "string"}}}})),
    # a file server, not an API operation: left out of the document
    Route("GET", f"{API}/docs/assets/{{name}}", apidoc.ASSET_ROUTE, apidoc.docs_asset),

    # operators: outside /api/v1 and without an API key
    Route("GET", "/healthz", "healthz", probes.healthz),
    Route("GET", "/readyz", "readyz", probes.readyz),
    Route("GET", "/metrics", "metrics", metrics.metrics_handler),
    Route("GET", "/ops", "ops", page.queue_page),
    Route("GET", r"/ops/tasks/{task_id:\d{1,18}}", "ops_task", page.task_page),
    Route("POST", r"/ops/tasks/{task_id:\d{1,18}}/retry", "ops_retry", page.retry),
]
