-- Schedules bulk-sync with pg_cron. Run it in the database where pg_cron is installed (cron.database_name,
-- usually postgres, and on Supabase the project's database). In the project's database bulk_sync.tick() runs every
-- minute, bulk_sync.enqueue_incremental() every five, a SKU snapshot nightly and a reconciliation of the last 90
-- days weekly; the project's database is the
-- current one, or the one named by the setting bulk_sync.database, e.g.
--   PGOPTIONS='-c bulk_sync.database=shop_data' psql -d postgres -f pg_cron.sql
-- Running it again updates the schedules in place.

create extension if not exists pg_cron;

-- Schedules (or updates) job p_name in the project's database: with cron.schedule when that is this database (any
-- role that may use pg_cron may, e.g. postgres on Supabase), else with cron.schedule_in_database (by default only
-- a superuser may). A function of this session only: nothing stays behind.
create or replace function pg_temp.bulk_sync_schedule(p_name text, p_schedule text, p_command text) returns bigint
language plpgsql as $$
declare
    v_database text := coalesce(nullif(current_setting('bulk_sync.database', true), ''), current_database());
begin
    if v_database = current_database() then
        return cron.schedule(p_name, p_schedule, p_command);
    end if;
    return cron.schedule_in_database(p_name, p_schedule, p_command, v_database);
end;
$$;

select pg_temp.bulk_sync_schedule('bulk_sync_tick', '* * * * *', 'select bulk_sync.tick()');

-- Keeps every active shop's orders current: the changes since its watermark, every five minutes.
select pg_temp.bulk_sync_schedule('bulk_sync_incremental', '*/5 * * * *', 'select bulk_sync.enqueue_incremental()');

-- Keeps SKUs current: a fresh snapshot of every active shop's variants each night.
select pg_temp.bulk_sync_schedule(
    'bulk_sync_skus', '30 2 * * *', $$select bulk_sync.enqueue_backfill(current_date, current_date, '{skus}')$$
);

-- Finds what the shops deleted (and any gap): the orders of the last 90 days checked against ids-only exports,
-- every Sunday night.
select pg_temp.bulk_sync_schedule(
    'bulk_sync_reconcile', '45 3 * * 0', 'select bulk_sync.enqueue_reconcile(current_date - 90, current_date)'
);

-- pg_cron never cleans its run log; keep a week of it.
select cron.schedule(
    'bulk_sync_prune_cron_log',
    '17 3 * * *',
    $$delete from cron.job_run_details where end_time < now() - interval '7 days'$$
);
