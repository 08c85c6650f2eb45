-- Schedules bulk-sync with pg_cron. Run it in the database where pg_cron is installed (cron.database_name,
-- usually postgres). bulk_sync_tick() runs every minute and enqueue_incremental() every five in the project's database:
-- the current one, or the one named by the setting bulk_sync.database, e.g.
--   PGOPTIONS='-c bulk_sync.database=shop_data' psql -d postgres -f pg_cron.sql
-- Running it again updates the schedules in place.

create extension if not exists pg_cron;

select cron.schedule_in_database(
    'bulk_sync_tick',
    '* * * * *',
    'select bulk_sync_tick()',
    coalesce(nullif(current_setting('bulk_sync.database', true), ''), current_database())
);

-- Keeps every active shop's orders current: the changes since its watermark, every five minutes.
select cron.schedule_in_database(
    'bulk_sync_incremental',
    '*/5 * * * *',
    'select enqueue_incremental()',
    coalesce(nullif(current_setting('bulk_sync.database', true), ''), current_database())
);

-- pg_cron never cleans its run log; keep a week of it.
select cron.schedule(
    'bulk_sync_prune_cron_log',
    '17 3 * * *',
    $$delete from cron.job_run_details where end_time < now() - interval '7 days'$$
);
