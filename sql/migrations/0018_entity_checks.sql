-- The last checks that named entities read bulk_sync.entities instead: a watermark's entity is a foreign key, and
-- whether a job has a window follows its entity (bulk_sync.jobs_window_fits, sql/70_api.sql: a check cannot read a
-- table). Which entities incremental sync keeps current is data too.
alter table bulk_sync.watermarks drop constraint watermarks_entity_check;

alter table bulk_sync.watermarks add constraint watermarks_entity_fkey
foreign key (entity) references bulk_sync.entities (entity);

-- (entity = 'skus') = (window_start is null): a snapshot has no window, every other export one
alter table bulk_sync.jobs drop constraint jobs_check3;

-- kept current by enqueue_incremental: windows of what changed (updated_at) since the shop's watermark
alter table bulk_sync.entities add column incremental boolean not null default false;

update bulk_sync.entities set incremental = true
where entity = 'orders';
