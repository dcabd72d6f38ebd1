-- Every SQL statement mailprov runs, each behind one typed method of service/core/store.py.

-- name: resolve_key
-- Auth: one indexed lookup by the key's SHA-256; a live key is neither revoked nor expired.
SELECT account_id, id AS key_id, read_only, domains FROM api_keys
WHERE key_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now());

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

-- name: create_domain_task
-- The domain row and its task in one statement: the 409 and the task id are atomic.
WITH task AS (
    INSERT INTO tasks (account_id, type, domain, payload, progress_total)
    VALUES ($1, 'domain', $2, $3, 1)
    RETURNING id
)
INSERT INTO domains (account_id, name, quota_mb, max_mailboxes, default_mailbox_quota_mb,
                     description, task_id)
SELECT $1, $2, $4, $5, $6, $7, task.id FROM task
RETURNING task_id;

-- name: list_domains
-- $2: the domains the key is limited to (NULL: all of the account's).
SELECT d.name, d.status, d.quota_mb, d.created_at, p.name AS parent,
       d.mailbox_count
FROM domains d LEFT JOIN domains p ON p.id = d.parent_id
WHERE d.account_id = $1 AND ($2::text[] IS NULL OR d.name = ANY ($2::text[]))
ORDER BY d.name;

-- name: list_mailboxes
SELECT address, active, quota_mb, created_at FROM mailboxes
WHERE domain_id = $1
ORDER BY address;

-- name: resolve_key_with_task
-- Auth and a task poll in one round trip: the task's columns are NULL when the task is
-- not this key's account's (or does not exist).
SELECT k.account_id, k.id AS key_id, k.read_only, k.domains,
       t.id, t.type, t.status, t.domain, t.results, t.progress_done, t.progress_total, t.error
FROM api_keys k LEFT JOIN tasks t ON t.id = $2 AND t.account_id = k.account_id
WHERE k.key_hash = $1 AND k.revoked_at IS NULL
  AND (k.expires_at IS NULL OR k.expires_at > now());

-- name: resolve_key_with_domain
-- Auth and the domain a request names, in one round trip (NULLs: not the account's).
SELECT k.account_id, k.id AS key_id, k.read_only, k.domains,
       d.id, d.name, d.quota_mb, d.max_mailboxes, d.default_mailbox_quota_mb
FROM api_keys k LEFT JOIN domains d ON d.name = $2 AND d.account_id = k.account_id
WHERE k.key_hash = $1 AND k.revoked_at IS NULL
  AND (k.expires_at IS NULL OR k.expires_at > now());

-- name: start_task
-- A finished task returns no row, which makes a second run of its job a no-op.
UPDATE tasks
SET status = 'processing', attempts = attempts + 1,
    started_at = coalesce(started_at, now()), updated_at = now()
WHERE id = $1 AND status IN ('queued', 'processing')
RETURNING id, account_id, type, domain, payload, results, attempts;

-- name: lock_domain
-- Serialises every writer of one domain's mailboxes, so limits hold under concurrency.
-- After waiting for the lock, Postgres returns the row as the previous holder left it,
-- so the counters are current.
SELECT id, name, quota_mb, max_mailboxes, default_mailbox_quota_mb, status,
       mailbox_count, quota_used_mb
FROM domains WHERE id = $1 FOR UPDATE;

-- name: existing_addresses
-- Run after lock_domain, as its own statement: it must see what the previous lock
-- holder committed.
SELECT coalesce(array_agg(address), '{}') FROM mailboxes WHERE address = ANY($1::text[]);

-- name: insert_mailboxes
-- The rows and the domain's counters, in one statement.
WITH added AS (
    INSERT INTO mailboxes (domain_id, local_part, address, password_hash, display_name,
                           quota_mb, task_id)
    SELECT $1, local_part, address, password_hash, display_name, quota_mb, $2
    FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::int[])
         AS t (local_part, address, password_hash, display_name, quota_mb)
    ON CONFLICT (address) DO NOTHING
    RETURNING address, quota_mb
), counted AS (
    UPDATE domains
    SET mailbox_count = mailbox_count + (SELECT count(*) FROM added),
        quota_used_mb = quota_used_mb + (SELECT coalesce(sum(quota_mb), 0) FROM added)
    WHERE id = $1
)
SELECT address FROM added;

-- name: insert_sub_domains
-- Children inherit the parent's limits; a name held by anyone already is skipped.
INSERT INTO domains (account_id, name, parent_id, status, quota_mb, max_mailboxes,
                     default_mailbox_quota_mb, task_id)
SELECT p.account_id, n.name, p.id, 'active', p.quota_mb, p.max_mailboxes,
       p.default_mailbox_quota_mb, $3
FROM domains p, unnest($2::text[]) AS n (name)
WHERE p.id = $1
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
-- A completed task keeps no client secret. A failed one keeps those of the items it did
-- not write (sealed, never plain), so that `tasks retry` can still make them as asked,
-- flagged for the sweeper to erase after MAILPROV_FAILED_TASK_SECRETS_TTL_S.
UPDATE tasks
SET status = $2, error = $3, results = results || $4::jsonb,
    progress_done = CASE WHEN $2 = 'completed' THEN progress_total ELSE progress_done END,
    payload = CASE
        WHEN NOT jsonb_path_exists(payload, '$.items[*] ? (exists(@.password_sealed) || '
                                            'exists(@.password_hash))')
            THEN payload - 'secrets_kept'
        WHEN $2 = 'completed' THEN mailprov_erase_secrets(payload, NULL) - 'secrets_kept'
        ELSE payload || '{"secrets_kept": true}' END,
    finished_at = now(), updated_at = now()
WHERE id = $1 AND status IN ('queued', 'processing');

-- name: erase_item_secrets
-- In the transaction that writes these items' mailboxes (worker/jobs.py).
UPDATE tasks SET payload = mailprov_erase_secrets(payload, $2::text[]) WHERE id = $1;

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
-- The sweeper's view: queued too long (Redis lost the job), or processing with no sign
-- of life for longer than a job may run (its worker died).
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
SELECT fingerprint, status, body FROM idempotency_keys
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
