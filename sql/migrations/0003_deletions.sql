-- Deletions and reconciliation. What a shop deleted is marked, never silently kept: deleted_at is when bulk-sync
-- learnt of it (a webhook's arrival, or the start of the export that showed the row missing); an order's line
-- items and refunds follow their order. Ids-only exports of orders (entity order_ids) find deletions and gaps.
alter table shopify.orders add column deleted_at timestamptz;

alter table shopify.skus add column deleted_at timestamptz;

alter table bulk_sync.jobs drop constraint jobs_entity_check;

alter table bulk_sync.jobs add constraint jobs_entity_check
check (entity in ('orders', 'refunds', 'skus', 'order_ids'));

-- A start handed to a runner whose outcome never came back: the next start looks for the operation it may have
-- created (bulkOperations) before starting another.
alter table bulk_sync.jobs add column start_attempted_at timestamptz;

-- Roots of ids-only exports carry their creation time: a gap found is re-exported by its day.
alter table bulk_sync.import_roots add column created_at timestamptz;
