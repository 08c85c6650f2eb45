-- Import slots per entity: an import of one entity never waits for another entity's slot. Each entity has
-- max_concurrent_imports slots of its own (bulk_sync.import_limits), and settings.max_concurrent_imports caps them
-- all together: its default becomes the sum of the entities' defaults, so by default no entity waits on another.
create table bulk_sync.import_limits (
    entity text primary key check (entity in ('orders', 'refunds', 'skus', 'order_ids')),
    max_concurrent_imports integer not null check (max_concurrent_imports between 1 and 64)
);

insert into bulk_sync.import_limits (entity, max_concurrent_imports) values
('orders', 2),
('refunds', 1),
('skus', 1),
('order_ids', 1);

alter table bulk_sync.settings alter column max_concurrent_imports set default 5;

-- 2 was the default and the whole import concurrency; most installs never changed it.
update bulk_sync.settings set max_concurrent_imports = 5
where max_concurrent_imports = 2;

-- A job's import slot is its entity's: at most one job per (entity, import_slot). Names the states that hold an import
-- slot (job_states.holds_import_slot), as the index it replaces did.
drop index bulk_sync.jobs_import_slot;

create unique index jobs_import_slot
on bulk_sync.jobs (entity, import_slot) where status in ('ready_to_import', 'importing');
