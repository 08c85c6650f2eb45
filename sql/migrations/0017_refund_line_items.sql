-- Refund line items: what was returned, per refund and line item. Refund.refundLineItems is a connection inside the
-- list Order.refunds, which a bulk query may not hold, so its rows are fetched after the import with regular queries
-- (nodes(ids:) of the refunds the import wrote, paged): a table of the mirror "via fetched", a job state in which a
-- runner makes those calls (fetching, between importing and completed), and the refunds still to fetch per job.
alter table bulk_sync.mirror_tables drop constraint mirror_tables_via_check;

-- fetched: a connection of the parent's objects, read by regular queries of the parents' ids after the import
alter table bulk_sync.mirror_tables add constraint mirror_tables_via_check
check (via in ('root', 'connection', 'list', 'object', 'fetched'));

-- A refund's own version: its lines are fetched again only when it changed.
alter table shopify.refunds add column updated_at timestamptz;

create table shopify.refund_line_items (
    refund_id text not null,  -- no foreign key: an order's import replaces its refunds' rows, not their lines
    position integer not null,
    id text,
    shop text not null,
    line_item_id text,
    quantity integer,
    restock_type text,
    subtotal numeric,
    subtotal_presentment numeric,
    total_tax numeric,
    total_tax_presentment numeric,
    currency text,
    raw jsonb not null,
    import_job bigint not null,
    imported_at timestamptz not null default now(),
    primary key (refund_id, position)
);

create index refund_line_items_line_item on shopify.refund_line_items (line_item_id);

insert into bulk_sync.mirror_tables (
    name, position, graphql_type, via, parent, field, parent_column, version_column, keyed_by
) values
('refund_line_items', 10, 'RefundLineItem', 'fetched', 'refunds', 'refundLineItems', 'refund_id', null, 'position');

insert into bulk_sync.entity_tables (entity, table_name) values
('orders', 'refund_line_items'),
('refunds', 'refund_line_items');

insert into bulk_sync.mirror_columns (table_name, column_name, position, paths, type) values
('refunds', 'updated_at', 6, '{updatedAt}', 'timestamptz'),
('refund_line_items', 'id', 1, '{id}', 'text'),
('refund_line_items', 'line_item_id', 2, '{lineItem.id}', 'text'),
('refund_line_items', 'quantity', 3, '{quantity}', 'integer'),
('refund_line_items', 'restock_type', 4, '{restockType}', 'text'),
('refund_line_items', 'subtotal', 5, '{subtotalSet.shopMoney.amount}', 'numeric'),
('refund_line_items', 'subtotal_presentment', 6, '{subtotalSet.presentmentMoney.amount}', 'numeric'),
('refund_line_items', 'total_tax', 7, '{totalTaxSet.shopMoney.amount}', 'numeric'),
('refund_line_items', 'total_tax_presentment', 8, '{totalTaxSet.presentmentMoney.amount}', 'numeric'),
('refund_line_items', 'currency', 9, '{subtotalSet.shopMoney.currencyCode}', 'text');

-- The parents whose fetched rows a job still has to fetch: the next page starts after cursor (null: the first page)
-- at position fetched + 1. A row goes when its parent's last page is written.
create table bulk_sync.fetches (
    job_id bigint not null references bulk_sync.jobs (id) on delete cascade,
    table_name text not null references bulk_sync.mirror_tables (name),
    parent_id text not null,
    version timestamptz,  -- the parent's updated_at when the import wrote it
    cursor text,
    fetched integer not null default 0,
    primary key (job_id, table_name, parent_id)
);

-- a parent another job fetches already is not queued twice
create index fetches_parent on bulk_sync.fetches (table_name, parent_id);

-- The version of each parent whose rows were fetched last: an import that writes the parent unchanged fetches none.
create table bulk_sync.fetched (
    table_name text not null references bulk_sync.mirror_tables (name),
    parent_id text not null,
    shop text not null,
    version timestamptz,
    fetched_at timestamptz not null default now(),
    primary key (table_name, parent_id)
);

-- The state in which a runner fetches: leased like a poll, holding no slot (regular queries do not count against
-- the shop's bulk operations, and the import slot is free for the next import).
alter table bulk_sync.job_states drop constraint job_states_task_check;

alter table bulk_sync.job_states add constraint job_states_task_check
check (task in ('start', 'poll', 'download', 'import', 'fetch'));

-- positions are unique: move the later states out of the way, then one up
update bulk_sync.job_states set position = -position - 1
where position >= 8;

update bulk_sync.job_states set position = -position
where position < 0;

insert into bulk_sync.job_states (
    state, position, task, leased, terminal, final, covers_window, holds_shop_slot, holds_import_slot
) values
('fetching', 8, 'fetch', true, false, false, true, false, false);

insert into bulk_sync.transitions (from_status, to_status) values
('importing', 'fetching'),
('fetching', 'completed'),
('fetching', 'failed'),
('fetching', 'canceled');

-- What a fetch report does: a page written with more to fetch, the last written, and what any Shopify call meets.
insert into bulk_sync.outcomes (state, outcome, next_state, spends_attempt, new_export, delay) values
('fetching', 'fetched', 'fetching', false, false, 'none'),
('fetching', 'fetched_all', 'completed', false, false, 'none'),
('fetching', 'throttled', 'fetching', false, false, 'retry_after'),
('fetching', 'transient', 'fetching', true, false, 'backoff'),
('fetching', 'fatal', 'failed', false, false, 'none'),
('fetching', 'released', 'fetching', false, false, 'none'),
('fetching', 'lease_expired', 'fetching', true, false, 'none');
