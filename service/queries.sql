-- Every SQL statement mailprov runs. Loaded once by service/db.py and called by name.

-- name: resolve_key
-- Auth: one indexed lookup by the key's SHA-256.
SELECT account_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL;

-- name: create_account
INSERT INTO accounts (name) VALUES ($1) RETURNING id;

-- name: account_exists
SELECT EXISTS (SELECT 1 FROM accounts WHERE id = $1);

-- name: create_api_key
INSERT INTO api_keys (account_id, key_hash, prefix) VALUES ($1, $2, $3) RETURNING id;

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

-- name: get_owned_domain
SELECT id, name, quota_mb, max_mailboxes, default_mailbox_quota_mb
FROM domains WHERE name = $1 AND account_id = $2;

-- name: list_domains
SELECT d.name, d.status, d.quota_mb, d.created_at, p.name AS parent,
       (SELECT count(*) FROM mailboxes m WHERE m.domain_id = d.id) AS mailbox_count
FROM domains d LEFT JOIN domains p ON p.id = d.parent_id
WHERE d.account_id = $1
ORDER BY d.name;

-- name: list_mailboxes
SELECT address, active, quota_mb, created_at FROM mailboxes
WHERE domain_id = $1
ORDER BY address;

-- name: get_task
SELECT id, type, status, domain, results, progress_done, progress_total, error, payload
FROM tasks WHERE id = $1 AND account_id = $2;

-- name: start_task
-- A finished task returns no row, which makes a second run of its job a no-op.
UPDATE tasks
SET status = 'processing', attempts = attempts + 1,
    started_at = coalesce(started_at, now()), updated_at = now()
WHERE id = $1 AND status IN ('queued', 'processing')
RETURNING id, account_id, type, domain, payload, results, attempts;

-- name: lock_domain
-- Serialises every writer of one domain's mailboxes, so limits hold under concurrency.
SELECT id, name, quota_mb, max_mailboxes, default_mailbox_quota_mb, status
FROM domains WHERE id = $1 FOR UPDATE;

-- name: domain_usage
-- Run after lock_domain, as its own statement: it must see what the previous lock
-- holder committed.
SELECT (SELECT count(*) FROM mailboxes WHERE domain_id = $1) AS mailbox_count,
       (SELECT coalesce(sum(quota_mb), 0) FROM mailboxes WHERE domain_id = $1) AS quota_used_mb,
       (SELECT coalesce(array_agg(address), '{}') FROM mailboxes
        WHERE address = ANY($2::text[])) AS existing;

-- name: insert_mailboxes
INSERT INTO mailboxes (domain_id, local_part, address, password_hash, display_name,
                       quota_mb, task_id)
SELECT $1, local_part, address, password_hash, display_name, quota_mb, $2
FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::int[])
     AS t (local_part, address, password_hash, display_name, quota_mb)
ON CONFLICT (address) DO NOTHING
RETURNING address;

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
SELECT status,
       ARRAY(SELECT k FROM jsonb_object_keys(results) AS k WHERE k = ANY($2::text[])) AS done
FROM tasks WHERE id = $1 FOR UPDATE;

-- name: record_progress
UPDATE tasks SET results = results || $2::jsonb, progress_done = $3, updated_at = now()
WHERE id = $1;

-- name: finish_task
UPDATE tasks
SET status = $2, error = $3, results = results || $4::jsonb,
    progress_done = CASE WHEN $2 = 'completed' THEN progress_total ELSE progress_done END,
    finished_at = now(), updated_at = now()
WHERE id = $1 AND status IN ('queued', 'processing');

-- name: stale_tasks
-- The sweeper's view: queued too long (Redis lost the job), or processing with no sign
-- of life for longer than a job may run (its worker died).
SELECT id, type FROM tasks
WHERE (status = 'queued' AND updated_at < now() - make_interval(secs => $1))
   OR (status = 'processing' AND updated_at < now() - make_interval(secs => $2))
ORDER BY id
LIMIT $3;
