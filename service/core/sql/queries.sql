-- Every SQL statement mailprov runs, each behind one typed method of service/core/store.py.

-- name: resolve_key
-- Auth: one indexed lookup by the key's SHA-256 (live_keys: neither revoked nor expired).
SELECT account_id, key_id, read_only, domains FROM live_keys WHERE key_hash = $1;

-- name: touch_key
-- "Last used": at most once a minute per key, whatever the number of web processes.
UPDATE api_keys SET last_used_at = now()
WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute');

-- name: list_keys
SELECT id, prefix, read_only, domains, created_at, expires_at, last_used_at, revoked_at
FROM api_keys WHERE account_id = $1 ORDER BY id;

-- name: create_account
INSERT INTO accounts (name) VALUES ($1) RETURNING id;

-- name: account_exists
SELECT EXISTS (SELECT 1 FROM accounts WHERE id = $1);

-- name: create_api_key
INSERT INTO api_keys (account_id, key_hash, prefix, read_only, domains, expires_at)
VALUES ($1, $2, $3, $4, $5, $6) RETURNING id;

-- name: revoke_keys
-- $1 is a whole key's hash or a prefix; the CLI refuses a prefix matching several keys.
UPDATE api_keys SET revoked_at = now()
WHERE (key_hash = $1 OR prefix = $2) AND revoked_at IS NULL
RETURNING id, account_id, prefix;

-- name: find_keys
SELECT id, account_id, prefix, revoked_at FROM api_keys WHERE key_hash = $1 OR prefix = $2;

-- name: create_task
INSERT INTO tasks (account_id, type, domain, payload, progress_total)
VALUES ($1, $2, $3, $4, $5)
RETURNING id;

-- name: create_tasks_as_read
-- The tasks of requests built from the domain as resolve_key_with_domain read it for an
-- earlier request of the same key (the web process keeps that read for a minute), one
-- per array element: those arriving together are recorded in one round trip
-- (service/web/accepts.py). A task is inserted only if its key is still live and its
-- domain still reads the same ($6...: the values the request was built and checked
-- with). Returns the position (from 1) and id of each task recorded; a request missing
-- from the answer had a stale read, and is made again the long way.
WITH wanted AS MATERIALIZED (
    SELECT r.pos, nextval(pg_get_serial_sequence('tasks', 'id')) AS id, k.account_id,
           r.type, d.name, r.payload, r.total
    FROM unnest($1::text[], $2::bigint[], $3::text[], $4::jsonb[], $5::int[], $6::text[],
                $7::int[], $8::int[], $9::int[], $10::int[])
         WITH ORDINALITY AS r(key_hash, domain_id, type, payload, total, name, quota_mb,
                              max_mailboxes, default_quota_mb, max_quota_mb, pos)
    JOIN live_keys k ON k.key_hash = r.key_hash
    JOIN domains d ON d.id = r.domain_id AND d.account_id = k.account_id
                  AND d.deleted_at IS NULL
    WHERE (d.name, d.quota_mb, d.max_mailboxes, d.default_mailbox_quota_mb,
           d.max_mailbox_quota_mb)
          = (r.name, r.quota_mb, r.max_mailboxes, r.default_quota_mb, r.max_quota_mb)
), made AS (
    INSERT INTO tasks (id, account_id, type, domain, payload, progress_total)
    SELECT id, account_id, type, name, payload, total FROM wanted
)
SELECT pos, id FROM wanted;

-- name: forget_unheard_tasks
-- Tasks whose requests were refused after they were recorded (their rate limit, or Redis
-- away when their jobs were to be queued): nobody heard of them and nothing queued them.
DELETE FROM tasks WHERE id = ANY($1::bigint[]) AND status = 'queued';

-- name: lock_sub_domain_window
-- Requests for sub-domains of one parent take turns until their transaction ends, so
-- create_sub_domain_task, run next, sees every task an earlier one recorded.
SELECT pg_advisory_xact_lock(hashtextextended('sub_domain:' || $1::bigint::text, 0));

-- name: create_sub_domain_task
-- The task, unless one for the parent ($5) was recorded within the window ($6 s): the
-- limit holds even when Redis lost its slot (a failover, a flush). Returns the new task's
-- id, or NULL and when the window ends; both times in ms since the epoch, as Postgres
-- tells them.
WITH earlier AS (
    SELECT max(created_at) AS at FROM tasks
    WHERE account_id = $1 AND type = 'sub_domain' AND (payload->>'parent_id')::bigint = $5
      AND created_at > now() - make_interval(secs => $6)
), made AS (
    INSERT INTO tasks (account_id, type, domain, payload, progress_total)
    SELECT $1, 'sub_domain', $2, $3, $4 FROM earlier WHERE earlier.at IS NULL
    RETURNING id
)
SELECT (SELECT id FROM made) AS id,
       (extract(epoch FROM at + make_interval(secs => $6)) * 1000)::bigint AS reset_ms,
       (extract(epoch FROM now()) * 1000)::bigint AS now_ms
FROM earlier;

-- name: create_domain_task
-- The domain row and its task in one statement: the 409 and the task id are atomic.
WITH task AS (
    INSERT INTO tasks (account_id, type, domain, payload, progress_total)
    VALUES ($1, 'domain', $2, $3, 1)
    RETURNING id
)
INSERT INTO domains (account_id, name, quota_mb, max_mailboxes, default_mailbox_quota_mb,
                     description, max_mailbox_quota_mb, max_aliases, backupmx, active, task_id,
                     postmaster)
SELECT $1, $2, $4, $5, $6, $7, $8, $9, $10, $11, task.id, $12 FROM task
RETURNING task_id;

-- name: list_domains
-- $2: the domains the key is limited to (NULL: all of the account's).
SELECT d.name, d.status, d.quota_mb, d.created_at, p.name AS parent,
       d.mailbox_count
FROM domains d LEFT JOIN domains p ON p.id = d.parent_id
WHERE d.account_id = $1 AND d.deleted_at IS NULL
  AND ($2::text[] IS NULL OR d.name = ANY ($2::text[]))
ORDER BY d.name;

-- name: list_mailboxes
SELECT address, active, quota_mb, created_at FROM mailboxes
WHERE domain_id = $1 AND deleted_at IS NULL
ORDER BY address;

-- name: resolve_key_with_task
-- Auth and a task poll in one round trip: the task's columns are NULL when the task is
-- not this key's account's (or does not exist).
SELECT k.account_id, k.key_id, k.read_only, k.domains,
       t.id, t.type, t.status, t.domain, t.results, t.progress_done, t.progress_total, t.error,
       t.created_at, t.started_at, t.finished_at
FROM live_keys k LEFT JOIN tasks t ON t.id = $2 AND t.account_id = k.account_id
WHERE k.key_hash = $1;

-- name: resolve_key_with_domain
-- Auth and the domain a MailAPI request names, in one round trip (NULLs: not the
-- account's, or deleted: the MailAPI no longer sees a deleted domain).
SELECT k.account_id, k.key_id, k.read_only, k.domains,
       d.id, d.name, d.quota_mb, d.max_mailboxes, d.default_mailbox_quota_mb,
       d.max_mailbox_quota_mb
FROM live_keys k
LEFT JOIN domains d ON d.name = $2 AND d.account_id = k.account_id AND d.deleted_at IS NULL
WHERE k.key_hash = $1;

-- name: start_task
-- A finished task returns no row, which makes a second run of its job a no-op. $2, the
-- worker's id, is the task's lease: it holds while that worker's heartbeat does.
UPDATE tasks
SET status = 'processing', attempts = attempts + 1, worker_id = $2,
    started_at = coalesce(started_at, now()), updated_at = now()
WHERE id = $1 AND status IN ('queued', 'processing')
RETURNING id, account_id, type, domain, payload, results, attempts;

-- name: lock_domain
-- Serialises every writer of one domain's mailboxes, so limits hold under concurrency.
-- After waiting for the lock, Postgres returns the row as the previous holder left it,
-- so the counters are current.
SELECT id, name, quota_mb, max_mailboxes, default_mailbox_quota_mb, status,
       mailbox_count, quota_used_mb, max_mailbox_quota_mb, max_aliases, alias_count, deleted_at
FROM domains WHERE id = $1 FOR UPDATE;

-- name: add_mailboxes
-- The rows, the domain's counters and its limits, and the task's record of them, in one
-- statement that takes the domain's lock (schema.sql says how); an outcome per address.
SELECT item, verdict FROM mailprov_add_mailboxes(
    $1, $2, $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::boolean[],
    $9::boolean[], $10::boolean[], $11::boolean[], $12::text[], $13::jsonb, $14::text[],
    $15, $16, $17::jsonb);

-- name: insert_sub_domains
-- Children inherit the parent's limits; a name held by anyone already, as a domain or an
-- alias domain, is skipped.
INSERT INTO domains (account_id, name, parent_id, status, quota_mb, max_mailboxes,
                     default_mailbox_quota_mb, max_mailbox_quota_mb, max_aliases, backupmx,
                     task_id)
SELECT p.account_id, n.name, p.id, 'active', p.quota_mb, p.max_mailboxes,
       p.default_mailbox_quota_mb, p.max_mailbox_quota_mb, p.max_aliases, p.backupmx, $3
FROM domains p, unnest($2::text[]) AS n (name)
WHERE p.id = $1 AND NOT EXISTS (SELECT 1 FROM alias_domains a WHERE a.name = n.name)
ON CONFLICT (name) DO NOTHING
RETURNING name;

-- name: activate_domain
UPDATE domains SET status = 'active' WHERE task_id = $1 RETURNING name;

-- name: lock_task
-- First statement of every job transaction: runs of one task take turns, and each sees
-- which of its items ($2) an earlier run already recorded.
-- (`results ? k` is a lookup per item, not a scan of everything recorded so far.)
SELECT status, ARRAY(SELECT k FROM unnest($2::text[]) AS k WHERE results ? k) AS done
FROM tasks WHERE id = $1 FOR UPDATE;

-- name: record_progress
UPDATE tasks SET results = results || $2::jsonb, progress_done = $3, updated_at = now()
WHERE id = $1;

-- name: finish_task
-- (schema.sql: mailprov_finish_task, which a mailbox chunk's statement calls too)
SELECT mailprov_finish_task($1, $2, $3, $4::jsonb);

-- name: leaseholders
-- The workers that hold a processing task (tasks_unfinished_idx finds the tasks).
SELECT DISTINCT worker_id FROM tasks
WHERE status = 'processing' AND worker_id IS NOT NULL;

-- name: free_tasks
-- The processing tasks of workers whose heartbeat is gone, back to queued in one
-- statement; a task a live worker has started meanwhile holds its new lease, and stays.
UPDATE tasks SET status = 'queued', updated_at = now()
WHERE status = 'processing' AND worker_id = ANY($1::text[])
RETURNING id, type;

-- name: erase_kept_secrets
-- The sweeper: failed tasks stop keeping their items' secrets after a while (a retry of
-- them is then refused). From the partial index tasks_secrets_kept_idx.
UPDATE tasks SET payload = mailprov_erase_secrets(payload, NULL) - 'secrets_kept'
WHERE id IN (SELECT id FROM tasks
             WHERE status = 'failed' AND payload ? 'secrets_kept'
               AND finished_at < now() - make_interval(secs => $1)
             ORDER BY finished_at
             LIMIT $2);

-- name: stale_tasks
-- The sweeper's view: queued too long (Redis lost the job), or processing with no write
-- for longer than a job may run (a run arq dropped: a timeout, its tries used up).
SELECT id, type FROM tasks
WHERE (status = 'queued' AND updated_at < now() - make_interval(secs => $1))
   OR (status = 'processing' AND updated_at < now() - make_interval(secs => $2))
ORDER BY id
LIMIT $3;

-- Operations: health, metrics, the queue page and `mailprov queue` / `mailprov tasks`.
-- Each reads an index (schema.sql: tasks_unfinished_idx, tasks_finished_idx, tasks_failed_idx).

-- name: schema_missing
-- Which of these tables and indexes (named in schema.sql) the database lacks.
SELECT name FROM unnest($1::text[]) AS name WHERE to_regclass(name) IS NULL;

-- name: queue_counts
-- From the partial indexes only: completed tasks, the bulk of the table, are not counted.
-- The oldest queued task is the one waiting longest since it was (re)queued.
SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
       count(*) FILTER (WHERE status = 'processing') AS processing,
       extract(epoch FROM now() - min(updated_at) FILTER (WHERE status = 'queued'))
           AS oldest_queued_s,
       (SELECT count(*) FROM tasks WHERE status = 'failed') AS failed
FROM tasks WHERE status IN ('queued', 'processing');

-- name: finished_per_minute
-- The last 60 minutes, the current one included, each listed even when nothing finished.
WITH finished AS (
    SELECT date_trunc('minute', finished_at) AS minute, status FROM tasks
    WHERE finished_at >= date_trunc('minute', now()) - interval '59 minutes'
)
SELECT m.minute,
       count(f.status) FILTER (WHERE f.status = 'completed')::int AS completed,
       count(f.status) FILTER (WHERE f.status = 'failed')::int AS failed
FROM generate_series(date_trunc('minute', now()) - interval '59 minutes',
                     date_trunc('minute', now()), interval '1 minute') AS m (minute)
LEFT JOIN finished f USING (minute)
GROUP BY m.minute
ORDER BY m.minute;

-- name: recent_failures
SELECT id, account_id, type, domain, error, attempts, created_at, finished_at
FROM tasks WHERE status = 'failed'
ORDER BY id DESC
LIMIT $1;

-- name: ops_list_tasks
-- $1 status, $2 changed within that many seconds, $3 account; each NULL for "any".
SELECT id, account_id, type, status, domain, error, attempts, progress_done, progress_total,
       created_at, started_at, finished_at, updated_at
FROM tasks
WHERE ($1::text IS NULL OR status = $1)
  AND ($2::float8 IS NULL OR updated_at >= now() - make_interval(secs => $2))
  AND ($3::bigint IS NULL OR account_id = $3)
ORDER BY id DESC
LIMIT $4;

-- name: ops_get_task
-- Any account's task: for operators only, never behind the API.
SELECT id, account_id, type, status, domain, payload, results, progress_done,
       progress_total, error, attempts, created_at, started_at, updated_at, finished_at
FROM tasks WHERE id = $1;

-- name: task_status
SELECT status FROM tasks WHERE id = $1;

-- name: retry_task
-- Back to queued, in one statement, only from failed. Results other than $2 (created) are
-- dropped so their items are tried again; created ones stay. The attempts start again
-- from 0: the job gives up on a task that has used them all.
UPDATE tasks
SET status = 'queued', error = NULL, finished_at = NULL, updated_at = now(), attempts = 0,
    results = coalesce((SELECT jsonb_object_agg(k, v) FROM jsonb_each(results) AS r (k, v)
                        WHERE v ->> 'status' = $2), '{}'),
    progress_done = (SELECT count(*) FROM jsonb_each(results) AS r (k, v)
                     WHERE v ->> 'status' = $2)
WHERE id = $1 AND status = 'failed'
  -- an item to run again whose supplied password was erased cannot be made as asked
  AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(payload -> 'items') AS i (item)
                  WHERE item ? 'secret_erased'
                    AND results -> ((item ->> 'local_part') || '@' || domain) ->> 'status'
                        IS DISTINCT FROM $2)
RETURNING id, type;

-- Idempotency keys (service/web/idempotency.py); a key lives 24 h, given in seconds.

-- name: idempotency_lock
-- "This key is in flight": held until the request's transaction ends, however it ends
-- (a web process killed mid-request included), so it can never be left behind.
SELECT pg_try_advisory_xact_lock(hashtextextended($1::bigint::text || ':' || $2::text, 0));

-- name: get_idempotency_key
SELECT fingerprint, status, body, task_id FROM idempotency_keys
WHERE account_id = $1 AND key = $2 AND created_at > now() - make_interval(secs => $3);

-- name: save_idempotency_key
-- Under the key's lock, after get_idempotency_key found no live row: a row still there has
-- expired, and is replaced.
INSERT INTO idempotency_keys (account_id, key, fingerprint, status, body, task_id)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (account_id, key) DO UPDATE
SET fingerprint = EXCLUDED.fingerprint, status = EXCLUDED.status, body = EXCLUDED.body,
    task_id = EXCLUDED.task_id, created_at = now();

-- name: delete_expired_idempotency_keys
DELETE FROM idempotency_keys
WHERE (account_id, key) IN (
    SELECT account_id, key FROM idempotency_keys
    WHERE created_at <= now() - make_interval(secs => $1)
    ORDER BY created_at
    LIMIT $2
);

-- name: add_task_types
-- `mailprov migrate`, after schema.sql: the task types of this release (service/core/tasks.py).
INSERT INTO task_types (name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING;

-- The resource API (docs: api-resources.md). What a request names is read with its key in
-- one round trip, as the MailAPI's lookups are; NULLs: not the account's.

-- name: resolve_key_with_domain_entry
-- One of the account's domains, deleted or not. With $3, also the largest quota of its
-- mailboxes, which only a change of its limits needs.
SELECT k.account_id, k.key_id, k.read_only, k.domains,
       d.id, d.name, d.status, d.active, d.max_aliases, d.max_mailboxes,
       d.default_mailbox_quota_mb, d.max_mailbox_quota_mb, d.quota_mb, d.backupmx,
       d.description, d.postmaster, d.mailbox_count, d.alias_count, d.quota_used_mb, d.created_at,
       d.updated_at, d.deleted_at, p.name AS parent, p.deleted_at AS parent_deleted_at,
       CASE WHEN $3 THEN (SELECT max(m.quota_mb) FROM mailboxes m
                          WHERE m.domain_id = d.id AND m.deleted_at IS NULL)
       END AS largest_quota_mb
FROM live_keys k
LEFT JOIN domains d ON d.name = $2 AND d.account_id = k.account_id
LEFT JOIN domains p ON p.id = d.parent_id
WHERE k.key_hash = $1;

-- name: resolve_key_with_mailbox
-- One of the account's mailboxes, deleted or not, with what its changes are checked
-- against: its domain's state, limits and counters.
SELECT k.account_id, k.key_id, k.read_only, k.domains,
       m.id, m.address, m.local_part, d.name AS domain, m.display_name,
       m.quota_mb, m.active, m.force_pw_update, m.tls_enforce_in, m.tls_enforce_out,
       m.created_at, m.updated_at, m.deleted_at, m.domain_id,
       d.deleted_at AS domain_deleted_at, d.quota_mb AS domain_quota_mb,
       d.max_mailbox_quota_mb, d.max_mailboxes, d.mailbox_count, d.quota_used_mb
FROM live_keys k
LEFT JOIN mailboxes m ON m.address = $2 AND m.account_id = k.account_id
LEFT JOIN domains d ON d.id = m.domain_id
WHERE k.key_hash = $1;

-- name: resolve_key_with_alias
SELECT k.account_id, k.key_id, k.read_only, k.domains,
       a.id, a.address, a.goto, a.active, d.name AS domain, a.created_at,
       a.updated_at, a.deleted_at, a.domain_id, d.deleted_at AS domain_deleted_at,
       d.max_aliases, d.alias_count
FROM live_keys k
LEFT JOIN aliases a ON a.id = $2 AND a.account_id = k.account_id
LEFT JOIN domains d ON d.id = a.domain_id
WHERE k.key_hash = $1;

-- name: resolve_key_with_address
-- A new mailbox's or alias's domain $2 (the account's), its limits and counters, and what
-- holds the address $3 already: 'mailbox' (deleted ones too, until purged), 'alias', or NULL.
SELECT k.account_id, k.key_id, k.read_only, k.domains,
       d.id, d.name, d.deleted_at, d.max_mailboxes, d.mailbox_count,
       d.quota_mb, d.quota_used_mb, d.max_mailbox_quota_mb, d.default_mailbox_quota_mb,
       d.max_aliases, d.alias_count,
       CASE WHEN d.id IS NULL THEN NULL
            WHEN EXISTS (SELECT 1 FROM mailboxes WHERE address = $3) THEN 'mailbox'
            WHEN EXISTS (SELECT 1 FROM aliases WHERE address = $3) THEN 'alias' END AS taken
FROM live_keys k
LEFT JOIN domains d ON d.name = $2 AND d.account_id = k.account_id
WHERE k.key_hash = $1;

-- name: resolve_key_with_alias_domain
SELECT k.account_id, k.key_id, k.read_only, k.domains,
       a.id, a.name, a.active, t.name AS target, a.created_at, a.updated_at
FROM live_keys k
LEFT JOIN alias_domains a ON a.name = $2 AND a.account_id = k.account_id
LEFT JOIN domains t ON t.id = a.target_id
WHERE k.key_hash = $1;

-- name: resolve_key_with_alias_target
-- A new alias domain $2's target $3 (the account's), and whether $2 is hosted already, as
-- a domain or an alias domain of anyone (a name is hosted once per installation).
SELECT k.account_id, k.key_id, k.read_only, k.domains,
       d.id, d.name, d.deleted_at,
       CASE WHEN d.id IS NOT NULL
            THEN EXISTS (SELECT 1 FROM domains WHERE name = $2)
                 OR EXISTS (SELECT 1 FROM alias_domains WHERE name = $2) END AS hosted
FROM live_keys k
LEFT JOIN domains d ON d.name = $3 AND d.account_id = k.account_id
WHERE k.key_hash = $1;

-- name: create_alias_task
-- The alias's id is drawn with its task, so the client hears both at once.
WITH alias AS (SELECT nextval('aliases_id_seq') AS id)
INSERT INTO tasks (account_id, type, domain, payload, progress_total)
SELECT $1, 'alias', $2, $3::jsonb || jsonb_build_object('alias_id', alias.id), 1 FROM alias
RETURNING id, (payload ->> 'alias_id')::bigint AS alias_id;

-- Listings, each paged by service/core/sql/paging.sql: `t` is the listed table, and
-- {where} its account (or domain) and the request's filters (store.py, LISTINGS).

-- name: page_domains
SELECT t.id, t.name, t.status, t.active, t.max_aliases, t.max_mailboxes,
       t.default_mailbox_quota_mb, t.max_mailbox_quota_mb, t.quota_mb, t.backupmx,
       t.description, t.postmaster, t.mailbox_count, t.alias_count, t.quota_used_mb, t.created_at,
       t.updated_at, t.deleted_at, p.name AS parent
FROM domains t LEFT JOIN domains p ON p.id = t.parent_id
WHERE {where}

-- name: page_mailboxes
SELECT t.id, t.address, t.local_part, d.name AS domain, t.display_name, t.quota_mb, t.active,
       t.force_pw_update, t.tls_enforce_in, t.tls_enforce_out, t.created_at, t.updated_at,
       t.deleted_at
FROM mailboxes t LEFT JOIN domains d ON d.id = t.domain_id
WHERE {where}

-- name: page_aliases
SELECT t.id, t.address, t.goto, t.active, d.name AS domain, t.created_at, t.updated_at,
       t.deleted_at
FROM aliases t LEFT JOIN domains d ON d.id = t.domain_id
WHERE {where}

-- name: page_alias_domains
SELECT t.id, t.name, t.active, d.name AS target, t.created_at, t.updated_at
FROM alias_domains t LEFT JOIN domains d ON d.id = t.target_id
WHERE {where}

-- name: page_tasks
SELECT t.id, t.type, t.status, t.domain, t.results, t.progress_done, t.progress_total,
       t.error, t.created_at, t.started_at, t.finished_at
FROM tasks t
WHERE {where}

-- Jobs of the lifecycle. Every writer of a domain's mailboxes and aliases holds the
-- domain's row lock (lock_domain, lock_domains) and changes its counters in the same
-- statement as the rows, so counters and limits hold under any concurrency.

-- name: lock_domains
-- Several domains, always in id order: jobs that lock more than one never wait on each
-- other in a circle.
SELECT id, name, quota_mb, max_mailboxes, default_mailbox_quota_mb, status,
       mailbox_count, quota_used_mb, max_mailbox_quota_mb, max_aliases, alias_count,
       deleted_at, parent_id
FROM domains WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE;

-- name: domain_subtree
-- A domain and its sub-domains at any depth: what a domain's delete or restore covers.
WITH RECURSIVE tree AS (
    SELECT id FROM domains WHERE id = $1
    UNION ALL
    SELECT d.id FROM domains d JOIN tree ON d.parent_id = tree.id
)
SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM tree;

-- name: domains_by_name
SELECT id, name, parent_id FROM domains WHERE account_id = $1 AND name = ANY($2::text[]);

-- name: largest_mailbox_quota
SELECT coalesce(max(quota_mb), 0) FROM mailboxes WHERE domain_id = $1 AND deleted_at IS NULL;

-- name: update_domain
-- $2..$8 NULL for "unchanged"; $9 says whether the description is set (to $10, maybe NULL),
-- $11 whether the postmaster is (to $12, maybe NULL).
UPDATE domains
SET active = coalesce($2, active), max_aliases = coalesce($3, max_aliases),
    max_mailboxes = coalesce($4, max_mailboxes),
    default_mailbox_quota_mb = coalesce($5, default_mailbox_quota_mb),
    max_mailbox_quota_mb = coalesce($6, max_mailbox_quota_mb),
    quota_mb = coalesce($7, quota_mb), backupmx = coalesce($8, backupmx),
    description = CASE WHEN $9 THEN $10 ELSE description END,
    postmaster = CASE WHEN $11 THEN $12 ELSE postmaster END, updated_at = now()
WHERE id = $1 AND deleted_at IS NULL
RETURNING name;

-- name: soft_delete_domains
-- Domains with their mailboxes and aliases, all stamped with one time (the transaction's):
-- a restore brings back what was deleted with them, and only that. Counts are of rows
-- not deleted, so the counters go to 0.
WITH boxes AS (
    UPDATE mailboxes SET deleted_at = now(), updated_at = now()
    WHERE domain_id = ANY($1::bigint[]) AND deleted_at IS NULL
), aliased AS (
    UPDATE aliases SET deleted_at = now(), updated_at = now()
    WHERE domain_id = ANY($1::bigint[]) AND deleted_at IS NULL
)
UPDATE domains
SET deleted_at = now(), updated_at = now(), mailbox_count = 0, alias_count = 0,
    quota_used_mb = 0
WHERE id = ANY($1::bigint[]) AND deleted_at IS NULL
RETURNING name;

-- name: restore_domains
-- What soft_delete_domains stamped with $2, back, and the counters counted again.
WITH boxes AS (
    UPDATE mailboxes SET deleted_at = NULL, updated_at = now()
    WHERE domain_id = ANY($1::bigint[]) AND deleted_at = $2
    RETURNING domain_id, quota_mb
), aliased AS (
    UPDATE aliases SET deleted_at = NULL, updated_at = now()
    WHERE domain_id = ANY($1::bigint[]) AND deleted_at = $2
    RETURNING domain_id
)
UPDATE domains d
SET deleted_at = NULL, updated_at = now(),
    mailbox_count = d.mailbox_count + (SELECT count(*) FROM boxes b WHERE b.domain_id = d.id),
    quota_used_mb = d.quota_used_mb
        + (SELECT coalesce(sum(b.quota_mb), 0) FROM boxes b WHERE b.domain_id = d.id),
    alias_count = d.alias_count + (SELECT count(*) FROM aliased a WHERE a.domain_id = d.id)
WHERE d.id = ANY($1::bigint[]) AND d.deleted_at = $2
RETURNING d.name;

-- name: purge_domains
-- Domains for good, with everything under them and the alias domains pointing at them,
-- in one statement (foreign keys are checked at its end).
WITH boxes AS (
    DELETE FROM mailboxes WHERE domain_id = ANY($1::bigint[])
), aliased AS (
    DELETE FROM aliases WHERE domain_id = ANY($1::bigint[])
), pointing AS (
    DELETE FROM alias_domains WHERE target_id = ANY($1::bigint[])
)
DELETE FROM domains WHERE id = ANY($1::bigint[])
RETURNING name;

-- name: mailbox_domain_ids
-- The domains of the account's mailboxes among $2: what a bulk action locks (lock_domains)
-- before it reads and changes the mailboxes.
SELECT coalesce(array_agg(DISTINCT domain_id), '{}') FROM mailboxes
WHERE account_id = $1 AND address = ANY($2::text[]);

-- name: mailboxes_for_action
-- Run after lock_domains, as its own statement: it sees what earlier lock holders
-- committed. $3 are the domains locked: a mailbox made meanwhile elsewhere is not there.
SELECT m.id, m.address AS item, m.domain_id, m.quota_mb, m.deleted_at,
       d.deleted_at AS domain_deleted_at
FROM mailboxes m JOIN domains d ON d.id = m.domain_id
WHERE m.account_id = $1 AND m.address = ANY($2::text[]) AND m.domain_id = ANY($3::bigint[]);

-- name: get_mailbox
SELECT id, address, domain_id, quota_mb, deleted_at FROM mailboxes WHERE id = $1;

-- name: update_mailbox
-- $2 says whether display_name is set (to $3, maybe NULL); $4..$9 NULL for "unchanged".
-- The domain's quota_used follows the quota in the same statement.
WITH old AS (
    SELECT quota_mb FROM mailboxes WHERE id = $1
), changed AS (
    UPDATE mailboxes
    SET display_name = CASE WHEN $2 THEN $3 ELSE display_name END,
        quota_mb = coalesce($4, quota_mb), active = coalesce($5, active),
        force_pw_update = coalesce($6, force_pw_update),
        tls_enforce_in = coalesce($7, tls_enforce_in),
        tls_enforce_out = coalesce($8, tls_enforce_out),
        password_hash = coalesce($9, password_hash), updated_at = now()
    WHERE id = $1 AND deleted_at IS NULL
    RETURNING domain_id, quota_mb, address
), counted AS (
    UPDATE domains d SET quota_used_mb = d.quota_used_mb + c.quota_mb - (SELECT quota_mb FROM old)
    FROM changed c WHERE d.id = c.domain_id
)
SELECT address FROM changed;

-- name: delete_mailboxes
WITH gone AS (
    UPDATE mailboxes SET deleted_at = now(), updated_at = now()
    WHERE id = ANY($1::bigint[]) AND deleted_at IS NULL
    RETURNING domain_id, quota_mb, address
), counted AS (
    UPDATE domains d
    SET mailbox_count = d.mailbox_count - g.n, quota_used_mb = d.quota_used_mb - g.q
    FROM (SELECT domain_id, count(*) AS n, sum(quota_mb) AS q FROM gone GROUP BY domain_id) g
    WHERE d.id = g.domain_id
)
SELECT address FROM gone;

-- name: restore_mailboxes
WITH back AS (
    UPDATE mailboxes SET deleted_at = NULL, updated_at = now()
    WHERE id = ANY($1::bigint[]) AND deleted_at IS NOT NULL
    RETURNING domain_id, quota_mb, address
), counted AS (
    UPDATE domains d
    SET mailbox_count = d.mailbox_count + b.n, quota_used_mb = d.quota_used_mb + b.q
    FROM (SELECT domain_id, count(*) AS n, sum(quota_mb) AS q FROM back GROUP BY domain_id) b
    WHERE d.id = b.domain_id
)
SELECT address FROM back;

-- name: set_mailboxes_active
UPDATE mailboxes SET active = $2, updated_at = now()
WHERE id = ANY($1::bigint[]) AND deleted_at IS NULL
RETURNING address;

-- name: purge_mailboxes
-- For good; a mailbox that was not deleted leaves its domain's counters too.
WITH gone AS (
    DELETE FROM mailboxes WHERE id = ANY($1::bigint[])
    RETURNING domain_id, quota_mb, address, deleted_at
), counted AS (
    UPDATE domains d
    SET mailbox_count = d.mailbox_count - g.n, quota_used_mb = d.quota_used_mb - g.q
    FROM (SELECT domain_id, count(*) AS n, sum(quota_mb) AS q FROM gone
          WHERE deleted_at IS NULL GROUP BY domain_id) g
    WHERE d.id = g.domain_id
)
SELECT address FROM gone;

-- name: alias_domain_ids
-- The domains of the account's aliases among $2, as mailbox_domain_ids.
SELECT coalesce(array_agg(DISTINCT domain_id), '{}') FROM aliases
WHERE account_id = $1 AND id = ANY($2::bigint[]);

-- name: address_holder
-- What holds an address: 'mailbox' (deleted ones too, until purged), 'alias', or NULL.
-- Run under its domain's lock, in its own statement (it sees what the lock's previous
-- holder committed).
SELECT CASE WHEN EXISTS (SELECT 1 FROM mailboxes WHERE address = $1) THEN 'mailbox'
            WHEN EXISTS (SELECT 1 FROM aliases WHERE address = $1) THEN 'alias' END;

-- name: aliases_for_action
SELECT a.id, a.id::text AS item, a.domain_id, a.deleted_at, d.deleted_at AS domain_deleted_at
FROM aliases a JOIN domains d ON d.id = a.domain_id
WHERE a.account_id = $1 AND a.id = ANY($2::bigint[]) AND a.domain_id = ANY($3::bigint[]);

-- name: insert_alias
-- The alias (its id drawn when its task was recorded) and its domain's counter.
WITH added AS (
    INSERT INTO aliases (id, account_id, domain_id, address, goto, active, task_id)
    SELECT $1, d.account_id, d.id, $3, $4, $5, $6 FROM domains d WHERE d.id = $2
    ON CONFLICT DO NOTHING
    RETURNING domain_id
), counted AS (
    UPDATE domains SET alias_count = alias_count + (SELECT count(*) FROM added) WHERE id = $2
)
SELECT count(*) FROM added;

-- name: update_alias
-- $2, $3: NULL for "unchanged".
UPDATE aliases SET goto = coalesce($2, goto), active = coalesce($3, active), updated_at = now()
WHERE id = $1 AND deleted_at IS NULL
RETURNING address;

-- name: delete_aliases
WITH gone AS (
    UPDATE aliases SET deleted_at = now(), updated_at = now()
    WHERE id = ANY($1::bigint[]) AND deleted_at IS NULL
    RETURNING domain_id, id
), counted AS (
    UPDATE domains d SET alias_count = d.alias_count - g.n
    FROM (SELECT domain_id, count(*) AS n FROM gone GROUP BY domain_id) g
    WHERE d.id = g.domain_id
)
SELECT id::text AS item FROM gone;

-- name: restore_aliases
WITH back AS (
    UPDATE aliases SET deleted_at = NULL, updated_at = now()
    WHERE id = ANY($1::bigint[]) AND deleted_at IS NOT NULL
    RETURNING domain_id, id
), counted AS (
    UPDATE domains d SET alias_count = d.alias_count + b.n
    FROM (SELECT domain_id, count(*) AS n FROM back GROUP BY domain_id) b
    WHERE d.id = b.domain_id
)
SELECT id::text AS item FROM back;

-- name: set_aliases_active
UPDATE aliases SET active = $2, updated_at = now()
WHERE id = ANY($1::bigint[]) AND deleted_at IS NULL
RETURNING id::text AS item;

-- name: purge_aliases
WITH gone AS (
    DELETE FROM aliases WHERE id = ANY($1::bigint[]) RETURNING domain_id, id, deleted_at
), counted AS (
    UPDATE domains d SET alias_count = d.alias_count - g.n
    FROM (SELECT domain_id, count(*) AS n FROM gone WHERE deleted_at IS NULL
          GROUP BY domain_id) g
    WHERE d.id = g.domain_id
)
SELECT id::text AS item FROM gone;

-- name: insert_alias_domain
-- Nothing when the name is an alias domain already; an error (alias_domains_name_key)
-- when it is a domain (schema.sql, mailprov_hosted_once).
INSERT INTO alias_domains (account_id, name, target_id, active, task_id)
SELECT account_id, $1, id, $3, $4 FROM domains WHERE id = $2
ON CONFLICT (name) DO NOTHING
RETURNING id;

-- name: update_alias_domain
UPDATE alias_domains SET active = $2, updated_at = now() WHERE id = $1 RETURNING name;

-- name: delete_alias_domain
DELETE FROM alias_domains WHERE id = $1 RETURNING name;

-- Retention (worker/retention.py): soft-deleted rows older than $1 days, for good, at most
-- $2 at a time, oldest first. SKIP LOCKED: several workers share the work, and a row a
-- job is restoring right now is left for the next round.

-- name: purge_expired_mailboxes
WITH gone AS (
    DELETE FROM mailboxes WHERE id IN (
        SELECT id FROM mailboxes WHERE deleted_at < now() - make_interval(days => $1)
        ORDER BY deleted_at LIMIT $2 FOR UPDATE SKIP LOCKED)
    RETURNING 1
)
SELECT count(*) FROM gone;

-- name: purge_expired_aliases
WITH gone AS (
    DELETE FROM aliases WHERE id IN (
        SELECT id FROM aliases WHERE deleted_at < now() - make_interval(days => $1)
        ORDER BY deleted_at LIMIT $2 FOR UPDATE SKIP LOCKED)
    RETURNING 1
)
SELECT count(*) FROM gone;

-- name: purge_expired_domains
-- Only domains left empty: their mailboxes, aliases and sub-domains (deleted with them,
-- so as old) go first, in the rounds before.
WITH doomed AS (
    SELECT d.id FROM domains d
    WHERE d.deleted_at < now() - make_interval(days => $1)
      AND NOT EXISTS (SELECT 1 FROM mailboxes m WHERE m.domain_id = d.id)
      AND NOT EXISTS (SELECT 1 FROM aliases a WHERE a.domain_id = d.id)
      AND NOT EXISTS (SELECT 1 FROM domains c WHERE c.parent_id = d.id)
    ORDER BY d.deleted_at LIMIT $2 FOR UPDATE SKIP LOCKED
), pointing AS (
    DELETE FROM alias_domains WHERE target_id IN (SELECT id FROM doomed)
), gone AS (
    DELETE FROM domains WHERE id IN (SELECT id FROM doomed) RETURNING 1
)
SELECT count(*) FROM gone;

-- The mail stack's kicks (schema.sql, doveadm_kicks; worker/kicks.py).

-- name: claim_kicks
-- Kicks that are due, taken by one caller: each is set due again after a backoff (2^tries
-- s, at most $2) before it is tried, so a caller that dies or fails leaves it for a later
-- try, and two callers never send one kick at once.
UPDATE doveadm_kicks
SET attempts = attempts + 1,
    due_at = now() + make_interval(secs => least(power(2, attempts + 1), $2))
WHERE id IN (SELECT id FROM doveadm_kicks WHERE due_at <= now()
             ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING id, mask, attempts;

-- name: delete_kicks
DELETE FROM doveadm_kicks WHERE id = ANY($1::bigint[]);

-- name: drop_old_kicks
-- Kicks older than $1 s are given up on (their sessions have long ended by themselves, or
-- no doveadm is configured to take them); how many.
WITH dropped AS (
    DELETE FROM doveadm_kicks WHERE id IN (
        SELECT id FROM doveadm_kicks WHERE created_at < now() - make_interval(secs => $1)
        LIMIT $2)
    RETURNING 1
)
SELECT count(*) FROM dropped;
-- DKIM keys and DNS checks (service/core/dkim.py, service/core/dnscheck.py)

-- name: insert_dkim_key
-- A key for the domain named $1. With $7 (a new domain's first key) only while the domain
-- has none, so a job run twice keeps the key its first run stored. The selector, or NULL.
INSERT INTO dkim_keys (domain_id, selector, algorithm, public_key, private_key_sealed, task_id)
SELECT d.id, $2, $3, $4, $5, $6 FROM domains d
WHERE d.name = $1
  AND NOT ($7 AND EXISTS (SELECT 1 FROM dkim_keys k WHERE k.domain_id = d.id))
ON CONFLICT ON CONSTRAINT dkim_keys_selector_key DO NOTHING
RETURNING selector;

-- name: retire_dkim_keys
-- A rotation: the keys that signed until now stay published for the grace period.
UPDATE dkim_keys SET retire_at = now() + make_interval(secs => $2)
WHERE domain_id = $1 AND retire_at IS NULL
RETURNING selector;

-- name: domain_dkim_keys
-- A domain's published keys, the signing one (no retire_at) first. Never the private key.
SELECT selector, algorithm, public_key, created_at, retire_at FROM dkim_keys
WHERE domain_id = $1
ORDER BY retire_at IS NOT NULL, created_at DESC, id DESC;

-- name: delete_retired_dkim_keys
DELETE FROM dkim_keys WHERE id IN (
    SELECT id FROM dkim_keys WHERE retire_at <= now() ORDER BY retire_at LIMIT $1)
RETURNING selector;

-- name: signing_keys
-- What the signer needs (`mailprov mailstack dkim`): the signing key of each domain the
-- mail stack serves, sealed. Only that command reads this column.
SELECT DISTINCT ON (d.name) d.name AS domain, k.selector, k.algorithm, k.private_key_sealed
FROM dkim_keys k JOIN mail_domains d ON d.id = k.domain_id
WHERE k.retire_at IS NULL
ORDER BY d.name, k.created_at DESC, k.id DESC;

-- name: domain_dns
-- The last check of a domain's records.
SELECT dns_checked_at, dns_results, dns_lost_at FROM domains WHERE id = $1;

-- name: record_dns_check
-- A check's findings. $3: true (every required record holds: an active domain becomes
-- verified), false (one is missing or wrong: a verified domain goes back to active and
-- is flagged with dns_lost_at), NULL (DNS could not say: the status stays). The status
-- before, and after.
WITH before AS (SELECT status FROM domains WHERE id = $1)
UPDATE domains d
SET dns_checked_at = now(), dns_results = $2,
    status = CASE WHEN $3 AND d.status IN ('active', 'verified') THEN 'verified'
                  WHEN NOT $3 AND d.status = 'verified' THEN 'active'
                  ELSE d.status END,
    dns_lost_at = CASE WHEN $3 THEN NULL
                       WHEN NOT $3 AND d.status = 'verified' THEN now()
                       ELSE d.dns_lost_at END
FROM before
WHERE d.id = $1
RETURNING before.status AS was, d.status;

-- name: domains_to_recheck
-- Verified domains whose last check is older than $1 seconds, least recently checked first.
SELECT id, name FROM domains
WHERE status = 'verified' AND deleted_at IS NULL
  AND (dns_checked_at IS NULL OR dns_checked_at < now() - make_interval(secs => $1))
ORDER BY dns_checked_at NULLS FIRST
LIMIT $2;

-- Webhooks (worker/webhooks.py, service/web/resources/webhooks.py).

-- name: create_webhook
INSERT INTO webhooks (account_id, url, secret_sealed) VALUES ($1, $2, $3)
RETURNING id, url, created_at;

-- name: list_webhooks
SELECT id, url, created_at FROM webhooks WHERE account_id = $1 ORDER BY id;

-- name: delete_webhook
DELETE FROM webhooks WHERE id = $2 AND account_id = $1 RETURNING id;

-- name: webhook_deliveries
-- NULL when the endpoint is not the account's; else its deliveries, newest first.
SELECT w.id AS webhook_id,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                    'id', d.id, 'task_id', d.task_id, 'state', d.state,
                    'attempts', d.attempts, 'created_at', mailprov_iso(d.created_at),
                    'delivered_at', mailprov_iso(d.delivered_at), 'next_attempt_at',
                    CASE WHEN d.state = 'pending' THEN mailprov_iso(d.next_attempt_at) END)
                    ORDER BY d.id DESC)
                 FROM (SELECT * FROM webhook_deliveries WHERE webhook_id = w.id
                       ORDER BY id DESC LIMIT $3) AS d), '[]') AS deliveries
FROM webhooks w WHERE w.id = $2 AND w.account_id = $1;

-- name: task_deliveries
-- The ops page: a task's deliveries, with their endpoints.
SELECT d.id, w.url, d.state, d.attempts, d.created_at, d.delivered_at, d.next_attempt_at
FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
WHERE d.task_id = $1 ORDER BY d.id;

-- name: claim_delivery
-- One due delivery, locked for as long as its sender's transaction lasts (SKIP LOCKED:
-- senders never take the same one). A sender that dies mid-send (kill -9) loses its
-- connection, so Postgres drops the lock at once and another sender takes it over.
SELECT d.id, d.task_id, d.created_at, jsonb_array_length(d.attempts) AS tries,
       w.url, w.secret_sealed,
       t.id AS t_id, t.type, t.status, t.domain, t.results, t.progress_done,
       t.progress_total, t.error, t.created_at AS t_created_at, t.started_at, t.finished_at
FROM webhook_deliveries d
JOIN webhooks w ON w.id = d.webhook_id
JOIN tasks t ON t.id = d.task_id
WHERE d.state = 'pending' AND d.next_attempt_at <= now()
ORDER BY d.next_attempt_at
LIMIT 1
FOR UPDATE OF d SKIP LOCKED;

-- name: record_attempt
-- $2: the attempt ({"at", "status", "error"}); $3: 'delivered', 'failed' or 'pending';
-- $4: seconds until the next attempt, when pending.
UPDATE webhook_deliveries
SET attempts = attempts || jsonb_build_array($2::jsonb), state = $3,
    delivered_at = CASE WHEN $3 = 'delivered' THEN now() END,
    next_attempt_at = now() + make_interval(secs => $4)
WHERE id = $1;
