-- Schedules bulk-sync with pg_cron. Run it in the database where pg_cron is installed (cron.database_name,
-- usually postgres). In the project's database bulk_sync.tick() runs every minute, bulk_sync.enqueue_incremental() every five
-- and a SKU snapshot nightly; the project's database is
-- the current one, or the one named by the setting bulk_sync.database, e.g.
--   PGOPTIONS='-c bulk_sync.database=shop_data' psql -d postgres -f pg_cron.sql
-- Running it again updates the schedules in place.

create extension if not exists pg_cron;

select cron.schedule_in_database(
    'bulk_sync_tick',
    '* * * * *',
    'select bulk_sync.tick()',
    coalesce(nullif(current_setting('bulk_sync.database', true), ''), current_database())
);

-- Keeps every active shop's orders current: the changes since its watermark, every five minutes.
select cron.schedule_in_database(
    'bulk_sync_incremental',
    '*/5 * * * *',
    'select bulk_sync.enqueue_incremental()',
    coalesce(nullif(current_setting('bulk_sync.database', true), ''), current_database())
);

-- Keeps SKUs current: a fresh snapshot of every active shop's variants each night.
select cron.schedule_in_database(
    'bulk_sync_skus',
    '30 2 * * *',
    $$select bulk_sync.enqueue_backfill(current_date, current_date, '{skus}')$$,
    coalesce(nullif(current_setting('bulk_sync.database', true), ''), current_database())
);

-- pg_cron never cleans its run log; keep a week of it.
select cron.schedule(
    'bulk_sync_prune_cron_log',
    '17 3 * * *',
    $$delete from cron.job_run_details where end_time < now() - interval '7 days'$$
);
