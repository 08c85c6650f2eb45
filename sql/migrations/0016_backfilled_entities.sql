-- What a backfill queues of each entity is data too: the field its daily windows filter on, or a snapshot (one job
-- per shop, no window, whose complete export marks deleted what it lacks). Entities with neither are queued by
-- others (order_ids: enqueue_reconcile).
alter table bulk_sync.entities add column backfill_field text check (backfill_field in ('created_at', 'updated_at'));

alter table bulk_sync.entities add column snapshot boolean not null default false;

alter table bulk_sync.entities add constraint entities_check check (not (snapshot and backfill_field is not null));

update bulk_sync.entities set backfill_field = 'created_at'
where entity = 'orders';

update bulk_sync.entities set backfill_field = 'updated_at'
where entity = 'refunds';

update bulk_sync.entities set snapshot = true
where entity = 'skus';
