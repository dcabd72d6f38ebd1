-- mailprov schema. Idempotent: `mailprov migrate` applies it on every release, and it brings
-- a database made by any earlier release up to date in place (tests/integration/
-- test_schema.py upgrades one filled by the previous release). Columns added after a
-- table's first release are added with ALTER ... ADD COLUMN IF NOT EXISTS, next to it.
-- Postfix and Dovecot read the mail_* views at the end (see README, "Mail stack").

CREATE TABLE IF NOT EXISTS accounts (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS api_keys (
    id          bigserial PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES accounts (id),
    -- SHA-256 of the key, hex: keys are random and long, so a fast hash is enough and
    -- lets auth be one indexed lookup.
    key_hash    text NOT NULL CONSTRAINT api_keys_key_hash_key UNIQUE,
    -- the first characters of the key, so operators can name a key without holding it
    prefix      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_prefix_idx ON api_keys (prefix);
-- What a key may do (`mailprov key create --read-only --domains ... --expires ...`): a
-- read-only key is refused every write; a key with `domains` sees only those domains
-- (NULL: all of its account's); an expired key is no key. `last_used_at` is written at
-- most once a minute per key and web process.
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS read_only boolean NOT NULL DEFAULT false,
                     ADD COLUMN IF NOT EXISTS domains text[],
                     ADD COLUMN IF NOT EXISTS expires_at timestamptz,
                     ADD COLUMN IF NOT EXISTS last_used_at timestamptz;
-- The keys that authenticate: neither revoked nor expired. Every query that checks a key
-- reads it here, so "live" is said once (the view is inlined: still one index lookup).
CREATE OR REPLACE VIEW live_keys AS
SELECT id AS key_id, account_id, key_hash, read_only, domains FROM api_keys
WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now());

-- Filled by `mailprov migrate` from service/core/tasks.py, the one list of task types.
CREATE TABLE IF NOT EXISTS task_types (
    name  text PRIMARY KEY
);

CREATE TABLE IF NOT EXISTS tasks (
    id              bigserial PRIMARY KEY,
    account_id      bigint NOT NULL REFERENCES accounts (id),
    type            text NOT NULL CONSTRAINT tasks_type_fkey REFERENCES task_types (name),
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'processing', 'completed', 'failed')),
    domain          text NOT NULL,
    -- what the job needs. A password a client supplies waits here only sealed (AES-GCM
    -- under MAILPROV_SECRET_KEY), erased by the transaction that writes its mailbox; a
    -- completed task keeps no supplied password or hash (mailprov_erase_secrets)
    payload         jsonb NOT NULL,
    results         jsonb NOT NULL DEFAULT '{}',
    progress_done   integer NOT NULL DEFAULT 0,
    progress_total  integer NOT NULL,
    error           text,
    attempts        integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    -- bumped by every write of a running job: the sweeper's sign of life
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    -- the worker that runs (or last ran) the task: its lease lasts while that worker's
    -- heartbeat does (worker/sweeper.py)
    worker_id       text
);
CREATE INDEX IF NOT EXISTS tasks_account_idx ON tasks (account_id, id);
-- Databases made before leases existed.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS worker_id text;
-- Databases made before task_types existed: their list was a CHECK; the table replaces it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'tasks_type_fkey') THEN
        ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_type_check;
        INSERT INTO task_types (name) SELECT DISTINCT type FROM tasks ON CONFLICT DO NOTHING;
        ALTER TABLE tasks ADD CONSTRAINT tasks_type_fkey FOREIGN KEY (type)
            REFERENCES task_types (name);
    END IF;
END $$;
-- the sweeper only ever looks at unfinished tasks; keep that index tiny
CREATE INDEX IF NOT EXISTS tasks_unfinished_idx ON tasks (status, updated_at)
    WHERE status IN ('queued', 'processing');

CREATE TABLE IF NOT EXISTS domains (
    id                        bigserial PRIMARY KEY,
    account_id                bigint NOT NULL REFERENCES accounts (id),
    name                      text NOT NULL CONSTRAINT domains_name_key UNIQUE,
    parent_id                 bigint REFERENCES domains (id),
    status                    text NOT NULL DEFAULT 'pending'
                              CHECK (status IN ('pending', 'active', 'verified', 'failed')),
    quota_mb                  integer NOT NULL CHECK (quota_mb > 0),
    max_mailboxes             integer NOT NULL CHECK (max_mailboxes > 0),
    default_mailbox_quota_mb  integer NOT NULL CHECK (default_mailbox_quota_mb > 0),
    description               text,
    active                    boolean NOT NULL DEFAULT true,
    task_id                   bigint,
    created_at                timestamptz NOT NULL DEFAULT now(),
    -- kept by the same transaction that inserts a domain's mailboxes (under the domain's
    -- row lock): limits are checked in O(1) instead of counting the domain every chunk
    mailbox_count             integer NOT NULL DEFAULT 0,
    quota_used_mb             bigint NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS domains_account_idx ON domains (account_id, name);

CREATE TABLE IF NOT EXISTS mailboxes (
    id             bigserial PRIMARY KEY,
    domain_id      bigint NOT NULL REFERENCES domains (id),
    local_part     text NOT NULL,
    address        text NOT NULL CONSTRAINT mailboxes_address_key UNIQUE,
    -- Dovecot scheme prefix included: {ARGON2ID}$argon2id$v=19$...
    password_hash  text NOT NULL,
    display_name   text,
    quota_mb       integer NOT NULL CHECK (quota_mb > 0),
    -- ready for Dovecot's userdb `quota_rule` field
    quota_rule     text GENERATED ALWAYS AS ('*:storage=' || quota_mb || 'M') STORED,
    active         boolean NOT NULL DEFAULT true,
    task_id        bigint,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Databases made before the domain counters existed: add them and count once.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'domains'
                     AND column_name = 'mailbox_count') THEN
        ALTER TABLE domains ADD COLUMN mailbox_count integer NOT NULL DEFAULT 0,
                            ADD COLUMN quota_used_mb bigint NOT NULL DEFAULT 0;
        UPDATE domains d SET mailbox_count = c.n, quota_used_mb = c.q
        FROM (SELECT domain_id, count(*) AS n, sum(quota_mb) AS q
              FROM mailboxes GROUP BY domain_id) AS c
        WHERE c.domain_id = d.id;
    END IF;
END $$;
-- The queue page, `/metrics` and `mailprov tasks` read finished and failed tasks by these.
-- On a million tasks (EXPLAIN ANALYZE): finishes per minute over the last hour 149 ms
-- (parallel seq scan) -> 0.7 ms; the latest failures 74 ms -> 0.05 ms.
CREATE INDEX IF NOT EXISTS tasks_finished_idx ON tasks (finished_at);
CREATE INDEX IF NOT EXISTS tasks_failed_idx ON tasks (id) WHERE status = 'failed';

-- Idempotency-Key records (service/web/idempotency.py): the stored response of a create request,
-- per account and key, replayed for 24 h. A row is written in the same transaction as the
-- task it created, so a task and its key commit together or not at all; a request still
-- in flight holds a transaction-scoped advisory lock instead of a row.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    account_id   bigint NOT NULL REFERENCES accounts (id),
    key          text NOT NULL,
    -- HMAC-SHA256 under MAILPROV_SECRET_KEY of the method, the path and the canonical JSON
    -- body without `key` (the body may hold a password: a plain hash could be guessed at)
    fingerprint  text NOT NULL,
    status       smallint NOT NULL,
    -- the response body as it was sent, so a replay is byte for byte the same
    body         text NOT NULL,
    task_id      bigint,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, key)
);
-- the sweeper deletes expired keys oldest first
CREATE INDEX IF NOT EXISTS idempotency_keys_created_idx ON idempotency_keys (created_at);

-- The whole lifecycle: updates, soft delete, aliases and alias domains.

-- Domains: the seed 003 fields (maxquota, aliases, backupmx), the alias counter, and soft
-- delete. A soft-deleted domain keeps its row, so its name stays taken until it is purged.
ALTER TABLE domains
    ADD COLUMN IF NOT EXISTS max_aliases integer NOT NULL DEFAULT 400 CHECK (max_aliases >= 0),
    ADD COLUMN IF NOT EXISTS backupmx boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS alias_count integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS deleted_at timestamptz;
-- the largest quota of one mailbox; older domains allowed up to their whole total
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'domains'
                     AND column_name = 'max_mailbox_quota_mb') THEN
        ALTER TABLE domains ADD COLUMN max_mailbox_quota_mb integer;
        UPDATE domains SET max_mailbox_quota_mb = quota_mb;
        ALTER TABLE domains ALTER COLUMN max_mailbox_quota_mb SET NOT NULL,
            ADD CONSTRAINT domains_quotas_check
                CHECK (default_mailbox_quota_mb <= max_mailbox_quota_mb
                       AND max_mailbox_quota_mb <= quota_mb);
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS domains_account_created_idx ON domains (account_id, created_at, id);
CREATE INDEX IF NOT EXISTS domains_parent_idx ON domains (parent_id);
-- the retention purge reads only deleted rows, oldest first
CREATE INDEX IF NOT EXISTS domains_deleted_idx ON domains (deleted_at)
    WHERE deleted_at IS NOT NULL;

-- Mailboxes: seed 003's flags, soft delete, the owning account (so an account's pages are
-- one index scan, whatever its domains), and a home directory named for good when the
-- mailbox is made: a rename or a restore keeps its mail where it is, and a mailbox made
-- later at a purged address never finds the old one's mail.
ALTER TABLE mailboxes
    ADD COLUMN IF NOT EXISTS force_pw_update boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS tls_enforce_in boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS tls_enforce_out boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS deleted_at timestamptz,
    -- relative to the mail stack's root (README, "Mail stack"); a volatile default gives
    -- every existing row a home of its own
    ADD COLUMN IF NOT EXISTS home text NOT NULL DEFAULT gen_random_uuid()::text;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'mailboxes'
                     AND column_name = 'account_id') THEN
        ALTER TABLE mailboxes ADD COLUMN account_id bigint REFERENCES accounts (id);
        UPDATE mailboxes m SET account_id = d.account_id FROM domains d WHERE d.id = m.domain_id;
        ALTER TABLE mailboxes ALTER COLUMN account_id SET NOT NULL;
    END IF;
END $$;
-- Pages (service/core/sql/paging.sql) are keyset scans of these: each sort key ends with
-- the id, and deleted_at is included, so counting or skipping the live rows is an
-- index-only scan. (Nothing wider: every mailbox insert writes each of these, and a bulk
-- of 10,000 pays for every byte; filters on other columns read the heap of the rows they
-- scan.) Deleted rows stay in them (filter[deleted] lists them); retention bounds them.
CREATE INDEX IF NOT EXISTS mailboxes_account_address_idx
    ON mailboxes (account_id, address, id) INCLUDE (deleted_at);
CREATE INDEX IF NOT EXISTS mailboxes_account_created_idx
    ON mailboxes (account_id, created_at, id) INCLUDE (deleted_at);
CREATE INDEX IF NOT EXISTS mailboxes_domain_address_idx
    ON mailboxes (domain_id, address, id) INCLUDE (deleted_at);
CREATE INDEX IF NOT EXISTS mailboxes_domain_created_idx
    ON mailboxes (domain_id, created_at, id) INCLUDE (deleted_at);
CREATE INDEX IF NOT EXISTS mailboxes_deleted_idx ON mailboxes (deleted_at)
    WHERE deleted_at IS NOT NULL;
-- (domain_id, address, id) serves what this one did
DROP INDEX IF EXISTS mailboxes_domain_idx;

-- Aliases: `sales@example.com`, or `@example.com` for the domain's catch-all, to 1-50
-- destinations. An address is a mailbox or an alias, never both: every writer of either
-- holds its domain's row lock (lock_domain) and looks in both tables.
CREATE TABLE IF NOT EXISTS aliases (
    id          bigserial PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES accounts (id),
    domain_id   bigint NOT NULL REFERENCES domains (id),
    address     text NOT NULL CONSTRAINT aliases_address_key UNIQUE,
    goto        text[] NOT NULL CHECK (cardinality(goto) BETWEEN 1 AND 50),
    active      boolean NOT NULL DEFAULT true,
    task_id     bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE INDEX IF NOT EXISTS aliases_account_address_idx
    ON aliases (account_id, address, id) INCLUDE (deleted_at);
CREATE INDEX IF NOT EXISTS aliases_account_created_idx
    ON aliases (account_id, created_at, id) INCLUDE (deleted_at);
CREATE INDEX IF NOT EXISTS aliases_domain_address_idx
    ON aliases (domain_id, address, id) INCLUDE (deleted_at);
CREATE INDEX IF NOT EXISTS aliases_domain_created_idx
    ON aliases (domain_id, created_at, id) INCLUDE (deleted_at);
CREATE INDEX IF NOT EXISTS aliases_deleted_idx ON aliases (deleted_at)
    WHERE deleted_at IS NOT NULL;

-- Alias domains: mail to x@name goes to x@target. Deleted for good at once (no soft delete).
CREATE TABLE IF NOT EXISTS alias_domains (
    id          bigserial PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES accounts (id),
    name        text NOT NULL CONSTRAINT alias_domains_name_key UNIQUE,
    target_id   bigint NOT NULL REFERENCES domains (id),
    active      boolean NOT NULL DEFAULT true,
    task_id     bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS alias_domains_account_name_idx
    ON alias_domains (account_id, name, id) INCLUDE (active);
CREATE INDEX IF NOT EXISTS alias_domains_account_created_idx
    ON alias_domains (account_id, created_at, id) INCLUDE (name, active);
CREATE INDEX IF NOT EXISTS alias_domains_target_idx ON alias_domains (target_id);

-- A name is hosted once per installation, as a domain or as an alias domain. Each table's
-- unique constraint covers itself; across the two, every insert takes a lock on the name
-- first, so the look into the other table (a new snapshot, after the lock) sees what a
-- concurrent insert of the same name committed. The error names the inserting table's
-- constraint, which the store turns into its 409.
CREATE OR REPLACE FUNCTION mailprov_hosted_once() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('hosted:' || NEW.name, 0));
    IF TG_TABLE_NAME = 'domains' THEN
        IF EXISTS (SELECT 1 FROM alias_domains WHERE name = NEW.name) THEN
            RAISE EXCEPTION 'an alias domain is named %', NEW.name
                USING ERRCODE = 'unique_violation', CONSTRAINT = 'domains_name_key';
        END IF;
    ELSIF EXISTS (SELECT 1 FROM domains WHERE name = NEW.name) THEN
        RAISE EXCEPTION 'a domain is named %', NEW.name
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'alias_domains_name_key';
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER domains_hosted_once BEFORE INSERT ON domains
    FOR EACH ROW EXECUTE FUNCTION mailprov_hosted_once();
CREATE OR REPLACE TRIGGER alias_domains_hosted_once BEFORE INSERT ON alias_domains
    FOR EACH ROW EXECUTE FUNCTION mailprov_hosted_once();

CREATE INDEX IF NOT EXISTS tasks_account_created_idx
    ON tasks (account_id, created_at, id) INCLUDE (status, type);

-- What the mail stack reads (README, "Mail stack"): only active, not deleted rows of
-- active, provisioned, not deleted domains, so a soft delete or a switch-off takes effect
-- at the commit that makes it.
CREATE OR REPLACE VIEW mail_domains AS
SELECT d.id, d.name, d.backupmx FROM domains d
WHERE d.active AND d.deleted_at IS NULL AND d.status IN ('active', 'verified');

CREATE OR REPLACE VIEW mail_mailboxes AS
SELECT m.address, m.password_hash, m.quota_rule, m.home, m.force_pw_update,
       m.tls_enforce_in, m.tls_enforce_out, d.name AS domain
FROM mailboxes m JOIN mail_domains d ON d.id = m.domain_id
WHERE m.active AND m.deleted_at IS NULL;

-- `goto` as Postfix wants it: comma-separated
CREATE OR REPLACE VIEW mail_aliases AS
SELECT a.address, array_to_string(a.goto, ',') AS goto, d.name AS domain
FROM aliases a JOIN mail_domains d ON d.id = a.domain_id
WHERE a.active AND a.deleted_at IS NULL;

CREATE OR REPLACE VIEW mail_alias_domains AS
SELECT ad.name AS alias_domain, d.name AS target_domain
FROM alias_domains ad JOIN mail_domains d ON d.id = ad.target_id
WHERE ad.active;

-- Postfix's virtual_alias_maps: the aliases, and every mailbox to itself, so that a
-- domain's catch-all (`@example.com`, looked up last) never takes a mailbox's mail.
CREATE OR REPLACE VIEW mail_virtual_aliases AS
SELECT address, goto FROM mail_aliases
UNION ALL
SELECT address, address FROM mail_mailboxes;
-- Fingerprints made before they were keyed were a plain SHA-256 of a body that may hold a
-- password. Each is replaced by a marker that matches any request: for the rest of its
-- 24 h the key still replays its response (no duplicate task), it just no longer tells a
-- different body apart.
UPDATE idempotency_keys SET fingerprint = 'legacy' WHERE fingerprint ~ '^[0-9a-f]{64}$';

-- failed tasks that still keep a client's secret for a retry (the sweeper erases them)
CREATE INDEX IF NOT EXISTS tasks_secrets_kept_idx ON tasks (finished_at)
    WHERE status = 'failed' AND payload ? 'secrets_kept';

-- A mailbox task's items, and a mailbox change's `changes`, keep a client's secret
-- (`password_sealed`, `password_hash`) only until their mailbox is written. This strips it
-- from the items named in `local_parts` (NULL: every item; a change has no items) and marks
-- each item it stripped with `secret_erased`, so that a retry can tell the items it could
-- no longer create as they were asked for. A payload with no secret comes back as it was.
CREATE OR REPLACE FUNCTION mailprov_erase_secrets(payload jsonb, local_parts text[])
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
    WHEN jsonb_typeof(payload -> 'items') = 'array' THEN jsonb_set(payload, '{items}', (
        SELECT coalesce(jsonb_agg(
                   CASE WHEN (item ? 'password_sealed' OR item ? 'password_hash')
                             AND (local_parts IS NULL OR item ->> 'local_part' = ANY (local_parts))
                        THEN item - '{password_sealed,password_hash}'::text[]
                             || '{"secret_erased": true}'
                        ELSE item END ORDER BY n), '[]')
        FROM jsonb_array_elements(payload -> 'items') WITH ORDINALITY AS i (item, n)))
    WHEN jsonb_typeof(payload -> 'changes') = 'object'
         AND (payload -> 'changes' ? 'password_sealed' OR payload -> 'changes' ? 'password_hash')
        THEN jsonb_set(payload, '{changes}', (payload -> 'changes')
                       - '{password_sealed,password_hash}'::text[] || '{"secret_erased": true}')
    ELSE payload END
$$;

-- Where postmaster@ and abuse@ of a domain go (RFC 5321 4.5.1, RFC 2142): an address its
-- owner sets through the API; NULL: the domain's first live mailbox (mail_roles).
ALTER TABLE domains ADD COLUMN IF NOT EXISTS postmaster text;

-- postmaster@ and abuse@ of every live domain, for Postfix's virtual_alias_maps (after the
-- aliases, so an alias or a mailbox of that name takes them). A domain with no postmaster
-- set and no mailbox has no row: its catch-all, if any, takes them.
CREATE OR REPLACE VIEW mail_roles AS
SELECT name AS domain, goto FROM (
    SELECT md.name, coalesce(d.postmaster, (
        SELECT m.address FROM mailboxes m
        WHERE m.domain_id = d.id AND m.active AND m.deleted_at IS NULL
        ORDER BY m.created_at, m.id LIMIT 1)) AS goto
    FROM mail_domains md JOIN domains d ON d.id = md.id
) AS roles
WHERE goto IS NOT NULL;

-- Dovecot sessions to end (worker/kicks.py): a mailbox switched off, deleted, renamed or
-- given a new password, or every mailbox of a domain switched off or deleted (`*@name`).
-- The triggers write them in the transaction that makes the change, so no path that
-- changes a mailbox can forget its kick, and a worker that dies after the commit leaves
-- them here for the sweeper. Rows are deleted once doveadm has taken them.
CREATE TABLE IF NOT EXISTS doveadm_kicks (
    id          bigserial PRIMARY KEY,
    mask        text NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    due_at      timestamptz NOT NULL DEFAULT now(),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS doveadm_kicks_due_idx ON doveadm_kicks (due_at);

CREATE OR REPLACE FUNCTION mailprov_kick() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- two statements: each is planned for the table it reads
    IF TG_TABLE_NAME = 'domains' THEN
        INSERT INTO doveadm_kicks (mask) VALUES ('*@' || OLD.name);
    ELSE
        INSERT INTO doveadm_kicks (mask) VALUES (OLD.address);
    END IF;
    RETURN NULL;
END $$;
-- row triggers with WHEN: an update that changes none of these (the counters, a quota)
-- costs no function call
CREATE OR REPLACE TRIGGER mailboxes_kick_update AFTER UPDATE ON mailboxes FOR EACH ROW
    WHEN (OLD.active AND OLD.deleted_at IS NULL
          AND (NOT NEW.active OR NEW.deleted_at IS NOT NULL
               OR NEW.password_hash <> OLD.password_hash OR NEW.address <> OLD.address))
    EXECUTE FUNCTION mailprov_kick();
CREATE OR REPLACE TRIGGER mailboxes_kick_delete AFTER DELETE ON mailboxes FOR EACH ROW
    WHEN (OLD.active AND OLD.deleted_at IS NULL)
    EXECUTE FUNCTION mailprov_kick();
CREATE OR REPLACE TRIGGER domains_kick_update AFTER UPDATE ON domains FOR EACH ROW
    WHEN (OLD.active AND OLD.deleted_at IS NULL
          AND (NOT NEW.active OR NEW.deleted_at IS NOT NULL))
    EXECUTE FUNCTION mailprov_kick();
CREATE OR REPLACE TRIGGER domains_kick_delete AFTER DELETE ON domains FOR EACH ROW
    WHEN (OLD.active AND OLD.deleted_at IS NULL)
    EXECUTE FUNCTION mailprov_kick();
-- DKIM: a domain's signing keys, one per selector. The newest key without `retire_at`
-- signs; a key a rotation replaced stays published until its `retire_at` (the grace
-- period), then the worker's DNS job deletes it. The private key is sealed under
-- MAILPROV_SECRET_KEY (service/core/dkim.py): only the worker and `mailprov mailstack dkim`
-- ever unseal it.
CREATE TABLE IF NOT EXISTS dkim_keys (
    id                  bigserial PRIMARY KEY,
    domain_id           bigint NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    selector            text NOT NULL,
    algorithm           text NOT NULL CHECK (algorithm IN ('rsa', 'ed25519')),
    -- the record's `p=`: base64 of the DER public key (RSA) or of its 32 bytes (Ed25519)
    public_key          text NOT NULL,
    private_key_sealed  text NOT NULL,
    task_id             bigint,
    created_at          timestamptz NOT NULL DEFAULT now(),
    retire_at           timestamptz,
    CONSTRAINT dkim_keys_selector_key UNIQUE (domain_id, selector)
);
CREATE INDEX IF NOT EXISTS dkim_keys_retire_idx ON dkim_keys (retire_at)
    WHERE retire_at IS NOT NULL;

-- What the last DNS check of a domain found, per record (service/core/dnscheck.py), and
-- when a verified domain's records were found gone (the status went back to `active`).
ALTER TABLE domains
    ADD COLUMN IF NOT EXISTS dns_checked_at timestamptz,
    ADD COLUMN IF NOT EXISTS dns_results jsonb,
    ADD COLUMN IF NOT EXISTS dns_lost_at timestamptz;
-- the recheck reads verified domains, least recently checked first
CREATE INDEX IF NOT EXISTS domains_verified_checked_idx ON domains (dns_checked_at)
    WHERE status = 'verified' AND deleted_at IS NULL;

-- A task ends (service/core/store.py: finish_task, and a mailbox chunk's statement below).
-- A completed task keeps no client secret. A failed one keeps those of the items it did
-- not write (sealed, never plain), so that `tasks retry` can still make them as asked,
-- flagged for the sweeper to erase after MAILPROV_FAILED_TASK_SECRETS_TTL_S.
CREATE OR REPLACE FUNCTION mailprov_finish_task(p_task bigint, p_status text, p_error text,
                                                p_results jsonb)
RETURNS void LANGUAGE sql AS $$
UPDATE tasks
SET status = p_status, error = p_error, results = results || p_results,
    progress_done = CASE WHEN p_status = 'completed' THEN progress_total ELSE progress_done END,
    payload = CASE
        WHEN mailprov_erase_secrets(payload, NULL) = payload THEN payload - 'secrets_kept'
        WHEN p_status = 'completed' THEN mailprov_erase_secrets(payload, NULL) - 'secrets_kept'
        ELSE payload || '{"secrets_kept": true}' END,
    finished_at = now(), updated_at = now()
WHERE id = p_task AND status IN ('queued', 'processing');
$$;

-- New mailboxes of one domain, within its limits, and the task's record of them, in one
-- statement (worker/jobs.py): the domain's row lock, which serialises every writer of its
-- mailboxes and counters, is taken here, after the task's own work, and the transaction
-- commits right after. Each later statement here reads a fresh snapshot, so it sees
-- what the lock's previous holder committed. Per item, in order: `exists` (a mailbox or
-- alias has the address), `limit`, `quota`, `max_quota`, or `created`; one row `gone`
-- (and nothing written) when the domain is missing or deleted. The sealed passwords of
-- the items written ($12, local parts) leave the task's payload with them. The task's
-- results get each item's status as $13 names it (`generated` for the created among
-- $14); then its progress ($15) is recorded, or, when $16, the task finishes: failed
-- with the reason $17 gives an item's status when $17 is set (a single mailbox's task)
-- and its one item was not created, else completed.
CREATE OR REPLACE FUNCTION mailprov_add_mailboxes(
    p_domain bigint, p_task bigint, p_local text[], p_address text[], p_hash text[],
    p_display text[], p_quota integer[], p_active boolean[], p_force boolean[],
    p_tls_in boolean[], p_tls_out boolean[], p_sealed text[], p_statuses jsonb,
    p_generated text[], p_done integer, p_finish boolean, p_failures jsonb)
RETURNS TABLE (item text, verdict text) LANGUAGE plpgsql AS $$
DECLARE
    d record;
    taken text[];
    counted integer;
    used bigint;
    verdicts text[] := '{}';
    accepted integer[] := '{}';
    inserted text[];
    written_sealed text[];
    recorded jsonb;
    failure text;
BEGIN
    SELECT id, account_id, max_mailboxes, quota_mb, max_mailbox_quota_mb, mailbox_count,
           quota_used_mb, deleted_at
    INTO d FROM domains WHERE id = p_domain FOR UPDATE;
    IF NOT FOUND OR d.deleted_at IS NOT NULL THEN
        RETURN QUERY SELECT NULL::text, 'gone'::text;
        RETURN;
    END IF;
    SELECT coalesce(array_agg(t.a), '{}') INTO taken FROM (
        SELECT m.address AS a FROM mailboxes m WHERE m.address = ANY (p_address)
        UNION ALL
        SELECT al.address FROM aliases al WHERE al.address = ANY (p_address)) AS t;
    counted := d.mailbox_count;
    used := d.quota_used_mb;
    FOR i IN 1 .. coalesce(array_length(p_address, 1), 0) LOOP
        IF p_address[i] = ANY (taken) THEN
            verdicts := verdicts || 'exists'::text;
        ELSIF counted >= d.max_mailboxes THEN
            verdicts := verdicts || 'limit'::text;
        ELSIF used + p_quota[i] > d.quota_mb THEN
            verdicts := verdicts || 'quota'::text;
        ELSIF p_quota[i] > d.max_mailbox_quota_mb THEN
            verdicts := verdicts || 'max_quota'::text;
        ELSE
            verdicts := verdicts || 'created'::text;
            accepted := accepted || i;
            counted := counted + 1;
            used := used + p_quota[i];
        END IF;
    END LOOP;
    WITH added AS (
        INSERT INTO mailboxes (domain_id, account_id, local_part, address, password_hash,
                               display_name, quota_mb, active, force_pw_update,
                               tls_enforce_in, tls_enforce_out, task_id)
        SELECT p_domain, d.account_id, p_local[i], p_address[i], p_hash[i], p_display[i],
               p_quota[i], p_active[i], p_force[i], p_tls_in[i], p_tls_out[i], p_task
        FROM unnest(accepted) AS i
        ON CONFLICT (address) DO NOTHING
        RETURNING mailboxes.address, mailboxes.quota_mb
    ), summed AS (
        SELECT coalesce(array_agg(added.address), '{}') AS addresses, count(*) AS n,
               coalesce(sum(added.quota_mb), 0) AS q
        FROM added
    ), counters AS (
        UPDATE domains SET mailbox_count = mailbox_count + summed.n,
                           quota_used_mb = quota_used_mb + summed.q
        FROM summed WHERE domains.id = p_domain AND summed.n > 0
    )
    SELECT summed.addresses INTO inserted FROM summed;
    -- an accepted item whose address was taken meanwhile (outside this domain's lock)
    FOR i IN 1 .. coalesce(array_length(p_address, 1), 0) LOOP
        IF verdicts[i] = 'created' AND NOT p_address[i] = ANY (inserted) THEN
            verdicts[i] := 'exists';
        END IF;
    END LOOP;
    written_sealed := ARRAY(SELECT p_local[i] FROM unnest(accepted) AS i
                            WHERE verdicts[i] = 'created' AND p_local[i] = ANY (p_sealed));
    IF cardinality(written_sealed) > 0 THEN
        UPDATE tasks SET payload = mailprov_erase_secrets(payload, written_sealed)
        WHERE id = p_task;
    END IF;
    SELECT coalesce(jsonb_object_agg(p_address[i], jsonb_build_object(
               'status', p_statuses ->> verdicts[i])
               || CASE WHEN verdicts[i] = 'created' AND p_address[i] = ANY (p_generated)
                       THEN '{"generated": true}'::jsonb ELSE '{}'::jsonb END), '{}')
    INTO recorded FROM generate_subscripts(p_address, 1) AS i;
    IF NOT p_finish THEN
        UPDATE tasks SET results = results || recorded, progress_done = p_done,
                         updated_at = now()
        WHERE id = p_task;
    ELSE
        IF p_failures IS NOT NULL AND cardinality(verdicts) > 0 THEN
            failure := p_failures ->> (p_statuses ->> verdicts[1]);
        END IF;
        PERFORM mailprov_finish_task(p_task, CASE WHEN failure IS NULL THEN 'completed'
                                                  ELSE 'failed' END, failure, recorded);
    END IF;
    RETURN QUERY SELECT p_address[i], verdicts[i] FROM generate_subscripts(p_address, 1) AS i;
END $$;
-- Long polling (service/core/waiters.py): every change of a task's status or progress is
-- announced on the channel `mailprov_tasks` as `<id>:<status>:<progress_done>`. NOTIFY is
-- transactional: it is sent when the worker's transaction commits, so a poll it wakes
-- reads what it announced, and it is never sent for a rolled-back chunk. A trigger, not
-- a call in each job: every path that moves a task (chunks, finish, retry, the sweeper)
-- announces it.
CREATE OR REPLACE FUNCTION mailprov_task_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mailprov_tasks', NEW.id || ':' || NEW.status || ':' || NEW.progress_done);
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER tasks_notify AFTER UPDATE ON tasks FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status
          OR NEW.progress_done IS DISTINCT FROM OLD.progress_done)
    EXECUTE FUNCTION mailprov_task_notify();

-- Webhooks (worker/webhooks.py): an account's endpoints, each told of every task it
-- finishes. The secret signs the deliveries (HMAC-SHA256), so it is kept sealed under
-- MAILPROV_SECRET_KEY, never hashed; it is shown once, at registration.
CREATE TABLE IF NOT EXISTS webhooks (
    id             bigserial PRIMARY KEY,
    account_id     bigint NOT NULL REFERENCES accounts (id),
    url            text NOT NULL,
    secret_sealed  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS webhooks_account_idx ON webhooks (account_id);
-- One row per endpoint and finished task, written by the trigger below in the transaction
-- that finishes the task: a delivery exists exactly when the finish committed. `attempts`
-- lists each try ({"at", "status", "error"}); `state` ends `delivered`, or `failed` once
-- retries have gone on for 24 h.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id               bigserial PRIMARY KEY,
    webhook_id       bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    task_id          bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         jsonb NOT NULL DEFAULT '[]',
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, id);
CREATE INDEX IF NOT EXISTS webhook_deliveries_task_idx ON webhook_deliveries (task_id);

-- `2026-04-14T09:30:00Z`, as the API shows times
CREATE OR REPLACE FUNCTION mailprov_iso(moment timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(moment AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$$;
CREATE OR REPLACE FUNCTION mailprov_webhook_deliveries() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (webhook_id, task_id)
    SELECT id, NEW.id FROM webhooks WHERE account_id = NEW.account_id;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER tasks_webhook_deliveries AFTER UPDATE ON tasks FOR EACH ROW
    WHEN (OLD.status IN ('queued', 'processing') AND NEW.status IN ('completed', 'failed'))
    EXECUTE FUNCTION mailprov_webhook_deliveries();
