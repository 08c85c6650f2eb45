-- bulk-sync schema: shops, settings, jobs, the audit trail and the work queue.
--
-- Error codes raised by the SQL API (class BS, each problem its own SQLSTATE):
--   BS001 invalid date range      BS002 unknown shop          BS003 unknown entity
--   BS004 range too large         BS005 missing argument      BS006 invalid shop definition
--   BS007 inactive shop           BS008 unknown job           BS009 invalid report argument
--   BS010 illegal transition

create extension if not exists btree_gist;

-- Settings: one typed row, read by every function that needs a number.
create table if not exists bulk_sync_settings (
    id boolean primary key default true check (id),
    lease_seconds integer not null default 120 check (lease_seconds between 5 and 86400),
    poll_interval_seconds integer not null default 10 check (poll_interval_seconds between 0 and 3600),
    poll_interval_max_seconds integer not null default 60
    check (poll_interval_max_seconds between 1 and 3600),
    backoff_base_seconds integer not null default 10 check (backoff_base_seconds between 1 and 3600),
    backoff_cap_seconds integer not null default 1800 check (backoff_cap_seconds between 1 and 86400),
    max_operation_seconds integer not null default 21600 check (max_operation_seconds >= 10),
    in_progress_retry_seconds integer not null default 30
    check (in_progress_retry_seconds between 1 and 3600),
    max_attempts integer not null default 8 check (max_attempts between 1 and 100),
    min_split_seconds integer not null default 3600 check (min_split_seconds >= 60),
    max_backfill_days integer not null default 3660 check (max_backfill_days between 1 and 36600),
    max_concurrent_imports integer not null default 2 check (max_concurrent_imports between 1 and 64),
    audit_retention_days integer not null default 90 check (audit_retention_days >= 1),
    import_batch_size integer not null default 5000 check (import_batch_size between 1 and 1000000),
    staging_retention_seconds integer not null default 0 check (staging_retention_seconds >= 0),
    tick_import_seconds integer not null default 20 check (tick_import_seconds between 0 and 50),
    check (backoff_cap_seconds >= backoff_base_seconds),
    check (poll_interval_max_seconds >= poll_interval_seconds)
);

insert into bulk_sync_settings (id) values (true) on conflict do nothing;

-- Shops: one row per Shopify shop; tokens are never stored here.
create table if not exists bulk_sync_shops (
    code text primary key check (code ~ '^[A-Z][A-Z0-9_]{0,15}$'),
    domain text not null check (
        domain ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$'
    ),
    api_version text not null check (api_version ~ '^(20[0-9]{2}-(01|04|07|10)|unstable)$'),
    max_concurrent_ops integer not null check (max_concurrent_ops between 1 and 5),
    timezone text not null default 'UTC',
    active boolean not null default true,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

-- Jobs: one Shopify bulk export of one entity, one shop and one window.
create table if not exists bulk_sync_jobs (
    id bigint generated always as identity primary key,
    shop text not null references bulk_sync_shops (code),
    entity text not null check (entity in ('orders', 'refunds', 'skus')),
    -- Days (in the shop's time zone) the window lies in; informational.
    start_date date,
    end_date date,
    -- The exported window, half-open [window_start, window_end), on filter_field.
    window_start timestamptz,
    window_end timestamptz,
    filter_field text check (filter_field in ('created_at', 'updated_at')),
    status text not null default 'queued' check (status in (
        'queued', 'starting', 'waiting', 'exporting', 'copied', 'ready_to_import',
        'importing', 'completed', 'failed', 'split', 'canceled'
    )),
    parent_id bigint references bulk_sync_jobs (id),
    -- Fencing token: bumped on every hand-off and state change; reports must present it.
    fence bigint not null default 1,
    lease_expires_at timestamptz,
    leased_by text,
    slot smallint check (slot between 1 and 5),
    import_slot smallint check (import_slot between 1 and 64),
    next_attempt_at timestamptz not null default now(),
    attempts integer not null default 0 check (attempts >= 0),
    max_attempts integer not null check (max_attempts >= 1),
    operation_id text check (operation_id ~ '^gid://shopify/BulkOperation/[0-9]+$'),
    operation_status text,
    operation_started_at timestamptz,
    object_count bigint check (object_count >= 0),
    export_url text,
    storage_path text,
    last_error text,
    bytes_total bigint check (bytes_total >= 0),
    bytes_copied bigint not null default 0 check (bytes_copied >= 0),
    lines_total bigint check (lines_total >= 0),
    lines_processed bigint not null default 0 check (lines_processed >= 0),
    lines_rejected bigint not null default 0 check (lines_rejected >= 0),
    finished_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    check ((window_start is null) = (window_end is null)),
    check ((window_start is null) = (filter_field is null)),
    check (window_start < window_end),
    check ((entity = 'skus') = (window_start is null)),
    check (start_date <= end_date),
    -- A shop slot is held exactly while Shopify works for the job.
    check ((slot is not null) = (status in ('starting', 'waiting'))),
    check ((import_slot is not null) = (status in ('ready_to_import', 'importing'))),
    check (status <> 'waiting' or operation_id is not null),
    -- No two live jobs of a shop and entity export overlapping windows.
    constraint bulk_sync_jobs_no_overlap exclude using gist (
        shop with =,
        entity with =,
        filter_field with =,
        tstzrange(window_start, window_end) with &&
    ) where (window_start is not null and status not in ('split', 'canceled'))
);

-- Per-shop concurrency, enforced by the schema: at most one job per (shop, slot).
create unique index if not exists bulk_sync_jobs_shop_slot
on bulk_sync_jobs (shop, slot) where status in ('starting', 'waiting');

-- Global import concurrency, the same way.
create unique index if not exists bulk_sync_jobs_import_slot
on bulk_sync_jobs (import_slot) where status in ('ready_to_import', 'importing');

-- One snapshot job per shop and backfill range for un-windowed entities.
create unique index if not exists bulk_sync_jobs_snapshot
on bulk_sync_jobs (shop, entity, start_date, end_date)
where window_start is null and status <> 'canceled';

-- Dispatch: due queued jobs, oldest first.
create index if not exists bulk_sync_jobs_due
on bulk_sync_jobs (shop, next_attempt_at, id) where status = 'queued';

-- Lease recovery: jobs handed to a runner.
create index if not exists bulk_sync_jobs_lease
on bulk_sync_jobs (lease_expires_at) where lease_expires_at is not null;

create index if not exists bulk_sync_jobs_copied
on bulk_sync_jobs (next_attempt_at, id) where status = 'copied';

create index if not exists bulk_sync_jobs_shop_entity_status
on bulk_sync_jobs (shop, entity, status);

create index if not exists bulk_sync_jobs_parent
on bulk_sync_jobs (parent_id) where parent_id is not null;

-- Audit trail: one row per state change, report and rejected (stale) report.
create table if not exists bulk_sync_job_runs (
    id bigint generated always as identity primary key,
    job_id bigint not null references bulk_sync_jobs (id) on delete cascade,
    phase text not null,
    status text not null,
    from_status text,
    to_status text,
    fence bigint,
    worker text,
    message text,
    created_at timestamptz not null default now()
);

create index if not exists bulk_sync_job_runs_job on bulk_sync_job_runs (job_id, id);

create index if not exists bulk_sync_job_runs_created on bulk_sync_job_runs (created_at);

-- The work queue: messages {job_id, task, fence} are wake-ups, never leases.
select pgmq.create('bulk_sync')
where not exists (
        select from pgmq.meta
        where queue_name = 'bulk_sync'
    );
