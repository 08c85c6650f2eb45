-- The baseline of bulk-sync's tables (release 0.2): everything bulk-sync owns lives in schema bulk_sync, the data
-- it mirrors in schema shopify, nothing in public. Functions, views and grants are not here: they live in the
-- definition files beside this folder (sql/NN_<area>.sql), re-applied whenever one of them changes.
--
-- Error codes raised by the SQL API (class BS, each problem its own SQLSTATE):
--   BS001 invalid date range      BS002 unknown shop          BS003 unknown entity
--   BS004 range too large         BS005 missing argument      BS006 invalid shop definition
--   BS007 inactive shop           BS008 unknown job           BS009 invalid report argument
--   BS010 illegal transition

create schema if not exists bulk_sync;
create schema if not exists shopify;

-- Settings: one typed row, read by every function that needs a number.
create table bulk_sync.settings (
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
    -- Jobs idle longer than this show in bulk_sync.stuck.
    stuck_after_seconds integer not null default 900 check (stuck_after_seconds >= 10),
    -- Right-sized operations (bulk_sync.pick_exports): merge queued days up to this many objects per operation.
    window_sizing boolean not null default true,
    min_operation_objects bigint not null default 40000 check (min_operation_objects >= 0),
    max_operation_objects bigint not null default 250000 check (max_operation_objects >= 1),
    split_operation_objects bigint not null default 5000000 check (split_operation_objects >= 1000),
    -- Incremental sync: windows overlap the previous one by this much, and are at least this long.
    incremental_overlap_seconds integer not null default 300
    check (incremental_overlap_seconds between 0 and 86400),
    incremental_min_seconds integer not null default 60 check (incremental_min_seconds between 0 and 86400),
    check (backoff_cap_seconds >= backoff_base_seconds),
    check (poll_interval_max_seconds >= poll_interval_seconds),
    constraint settings_operation_objects check (min_operation_objects <= max_operation_objects)
);

insert into bulk_sync.settings (id) values (true);

-- Shops: one row per Shopify shop; tokens are never stored here.
create table bulk_sync.shops (
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

-- Jobs: one Shopify bulk export of one entity, one shop and one window. The states and their transitions are
-- drawn in sql/10_state_machine.sql.
create table bulk_sync.jobs (
    id bigint generated always as identity primary key,
    shop text not null references bulk_sync.shops (code),
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
    parent_id bigint references bulk_sync.jobs (id),
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
    -- The signed download URL: kept here only, never in logs, last_error or the audit trail.
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
    kind text not null default 'backfill' check (kind in ('backfill', 'incremental')),
    check ((window_start is null) = (window_end is null)),
    check ((window_start is null) = (filter_field is null)),
    check (window_start < window_end),
    check ((entity = 'skus') = (window_start is null)),
    check (start_date <= end_date),
    -- A shop slot is held exactly while Shopify works for the job.
    check ((slot is not null) = (status in ('starting', 'waiting'))),
    check ((import_slot is not null) = (status in ('ready_to_import', 'importing'))),
    check (status <> 'waiting' or operation_id is not null),
    -- No two working jobs of a shop and entity export overlapping windows (an incremental window deliberately
    -- overlaps the completed one before it; enqueue_backfill skips days covered by finished jobs itself).
    constraint jobs_no_overlap exclude using gist (
        shop with =,
        entity with =,
        filter_field with =,
        tstzrange(window_start, window_end) with &&
    ) where (window_start is not null and status not in ('split', 'canceled', 'completed', 'failed'))
);

-- Per-shop concurrency, enforced by the schema: at most one job per (shop, slot).
create unique index jobs_shop_slot
on bulk_sync.jobs (shop, slot) where status in ('starting', 'waiting');

-- Global import concurrency, the same way.
create unique index jobs_import_slot
on bulk_sync.jobs (import_slot) where status in ('ready_to_import', 'importing');

-- One snapshot job per shop and backfill range for un-windowed entities.
create unique index jobs_snapshot
on bulk_sync.jobs (shop, entity, start_date, end_date)
where window_start is null and status <> 'canceled';

-- Dispatch: due queued jobs, oldest first.
create index jobs_due
on bulk_sync.jobs (shop, next_attempt_at, id) where status = 'queued';

-- Lease recovery: jobs handed to a runner.
create index jobs_lease
on bulk_sync.jobs (lease_expires_at) where lease_expires_at is not null;

create index jobs_copied
on bulk_sync.jobs (next_attempt_at, id) where status = 'copied';

create index jobs_shop_entity_status
on bulk_sync.jobs (shop, entity, status);

create index jobs_parent
on bulk_sync.jobs (parent_id) where parent_id is not null;

-- Merging: the queued job whose window starts where another one's ends.
create index jobs_next_window
on bulk_sync.jobs (shop, entity, window_start) where status = 'queued';

-- bulk_sync.density's recent backfill operations, among however many incremental jobs a shop has run.
create index jobs_density
on bulk_sync.jobs (shop, entity, updated_at desc)
where operation_status = 'COMPLETED' and kind = 'backfill' and window_start is not null;

-- The legal status changes, read by the trigger bulk_sync.jobs_guard (see sql/10_state_machine.sql).
create table bulk_sync.transitions (
    from_status text not null,
    to_status text not null,
    primary key (from_status, to_status)
);

insert into bulk_sync.transitions (from_status, to_status) values
('queued', 'starting'),
('queued', 'failed'),
('queued', 'canceled'),
('starting', 'waiting'),
('starting', 'queued'),
('starting', 'failed'),
('starting', 'canceled'),
('waiting', 'exporting'),
('waiting', 'completed'),
('waiting', 'queued'),
('waiting', 'split'),
('waiting', 'failed'),
('waiting', 'canceled'),
('exporting', 'copied'),
('exporting', 'queued'),
('exporting', 'failed'),
('exporting', 'canceled'),
('copied', 'ready_to_import'),
('copied', 'failed'),
('copied', 'canceled'),
('ready_to_import', 'importing'),
('ready_to_import', 'failed'),
('ready_to_import', 'canceled'),
('importing', 'completed'),
('importing', 'copied'),
('importing', 'failed'),
('importing', 'canceled'),
('failed', 'queued');

-- Audit trail: one row per state change, report and rejected (stale) report.
create table bulk_sync.job_runs (
    id bigint generated always as identity primary key,
    job_id bigint not null references bulk_sync.jobs (id) on delete cascade,
    phase text not null,
    status text not null,
    from_status text,
    to_status text,
    fence bigint,
    worker text,
    message text,
    created_at timestamptz not null default now()
);

create index job_runs_job on bulk_sync.job_runs (job_id, id);

create index job_runs_created on bulk_sync.job_runs (created_at);

-- Exported lines as the runner copied them: text, so a malformed line never stops the COPY. A runner streams an
-- export here with COPY and reports bulk_sync.report_download_finished() in the same transaction, so staged lines
-- become visible only with a download the job accepted. Lines are numbered 1..n in file order.
create table bulk_sync.staging (
    job_id bigint not null references bulk_sync.jobs (id) on delete cascade,
    line_no bigint not null check (line_no >= 1),
    line text not null,
    primary key (job_id, line_no)
);

-- Roots (parents) already imported by a job, and whether they won: children of later batches join on these.
create table bulk_sync.import_roots (
    job_id bigint not null references bulk_sync.jobs (id) on delete cascade,
    gid text not null,
    accepted boolean not null,
    primary key (job_id, gid)
);

-- Quarantined lines, with why.
create table bulk_sync.rejects (
    job_id bigint not null references bulk_sync.jobs (id) on delete cascade,
    line_no bigint not null,
    reason text not null,
    line text not null,
    created_at timestamptz not null default now(),
    primary key (job_id, line_no)
);

-- Incremental sync: per shop, every change to its orders before watermark is imported.
create table bulk_sync.watermarks (
    shop text not null references bulk_sync.shops (code),
    entity text not null check (entity = 'orders'),
    watermark timestamptz not null,
    updated_at timestamptz not null default now(),
    primary key (shop, entity)
);

-- Notifications already handled, by X-Shopify-Webhook-Id (Shopify retries a delivery for up to 48 hours).
create table bulk_sync.webhooks (
    webhook_id text primary key,
    shop text,
    operation_id text,
    outcome text not null,
    received_at timestamptz not null default now()
);

create index webhooks_received on bulk_sync.webhooks (received_at);

-- The mirrored data. Each row: the Shopify GID, the shop, typed columns, the line as exported (raw) and the job
-- that imported it.
create table shopify.orders (
    id text primary key check (id like 'gid://shopify/Order/%'),
    shop text not null,
    name text,
    created_at timestamptz,
    updated_at timestamptz,
    processed_at timestamptz,
    cancelled_at timestamptz,
    cancel_reason text,
    currency text,
    subtotal_price numeric,
    current_subtotal_price numeric,
    total_price numeric,
    current_total_price numeric,
    total_tax numeric,
    total_refunded numeric,
    financial_status text,
    fulfillment_status text,
    customer_id text,
    email text,
    note text,
    raw jsonb not null,
    import_job bigint not null,
    imported_at timestamptz not null default now()
);

create index orders_shop_created on shopify.orders (shop, created_at);
create index orders_shop_updated on shopify.orders (shop, updated_at);
create index orders_customer on shopify.orders (customer_id) where customer_id is not null;

create table shopify.order_line_items (
    id text primary key check (id like 'gid://shopify/LineItem/%'),
    shop text not null,
    order_id text not null references shopify.orders (id) on delete cascade,
    sku text,
    title text,
    name text,
    quantity integer,
    current_quantity integer,
    variant_id text,
    product_id text,
    unit_price numeric,
    total_price numeric,
    currency text,
    raw jsonb not null,
    import_job bigint not null,
    imported_at timestamptz not null default now()
);

create index order_line_items_order on shopify.order_line_items (order_id);
create index order_line_items_shop_sku on shopify.order_line_items (shop, sku);
create index order_line_items_sku on shopify.order_line_items (sku);

-- Refunds come from each order's inline refunds list; order_updated_at is the version of the order they came with.
create table shopify.refunds (
    id text primary key check (id like 'gid://shopify/Refund/%'),
    shop text not null,
    order_id text not null,
    created_at timestamptz,
    note text,
    total_refunded numeric,
    currency text,
    order_updated_at timestamptz,
    raw jsonb not null,
    import_job bigint not null,
    imported_at timestamptz not null default now()
);

create index refunds_order on shopify.refunds (order_id);
create index refunds_shop_created on shopify.refunds (shop, created_at);

create table shopify.skus (
    id text primary key check (id like 'gid://shopify/ProductVariant/%'),
    shop text not null,
    sku text,
    title text,
    product_id text,
    product_title text,
    price numeric,
    inventory_quantity integer,
    updated_at timestamptz,
    raw jsonb not null,
    import_job bigint not null,
    imported_at timestamptz not null default now()
);

create index skus_shop_sku on shopify.skus (shop, sku);
create index skus_sku on shopify.skus (sku);

-- The work queue: messages {job_id, task, fence} are wake-ups, never leases.
select pgmq.create('bulk_sync')
where not exists (
        select from pgmq.meta
        where queue_name = 'bulk_sync'
    );
