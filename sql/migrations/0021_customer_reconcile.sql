-- Reconciliation of customers: an ids-only export of all of a shop's customers (entity customer_ids, a whole-shop
-- export: a customer is deleted whatever its age) marks those it lacks deleted and queues a normal export of the
-- days where customers were changed that the mirror lacks or holds older. The ids recorded keep when each root was
-- last updated beside when it was created: the day a gap is exported again is the day of its entity's backfill
-- field (orders: created_at, customers: updated_at).
alter table bulk_sync.import_roots add column updated_at timestamptz;

insert into bulk_sync.entities (
    entity, position, root, root_type, selection, backfill_field, snapshot, incremental
) values ('customer_ids', 7, 'customers', 'Customer', 'createdAt updatedAt', null, true, false);

-- an import slot of its own, and the overall cap the sum of the entities' as before (no entity waits on another)
insert into bulk_sync.import_limits (entity, max_concurrent_imports) values ('customer_ids', 1);

alter table bulk_sync.settings alter column max_concurrent_imports set default 8;

update bulk_sync.settings set max_concurrent_imports = 8
where max_concurrent_imports = 7;
