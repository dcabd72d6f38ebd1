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
from service.web.ops import metrics, page, probes
from service.web.route import MAILAPI, Doc, Lookup, Policy, Route

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
DOMAIN = Lookup("Domain", names.domain, _key_with_domain, errors.DomainNotFound, domain="name")
PARENT = Lookup("Domain", names.domain, _key_with_domain, errors.ParentDomainNotFound,
                domain="name")
LISTED_DOMAIN = Lookup("domain", names.domain, _key_with_domain, errors.DomainNotFound,
                       domain="name")


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
          "Any task type, in the shape of get/mailbox/*, plus `type`.",
          [responses.TypedTaskInProgress, responses.TypedTaskCompleted],
          responses.TypedFailedTask),

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
