-- Schedules bulk-sync with pg_cron. Run it in the database where pg_cron is installed (cron.database_name,
-- usually postgres, and on Supabase the project's database): in the project's database bulk_sync.tick() runs every
-- minute, bulk_sync.enqueue_incremental() every five, a SKU snapshot nightly and a reconciliation of the last 90
-- days weekly. The project's database is the current one, or the one named by the setting bulk_sync.database, set
-- in the same transaction (works through any pooler):
--   psql -d postgres -1 -c "set local bulk_sync.database = 'shop_data'" -f pg_cron.sql
-- or for the session on a direct connection:
--   PGOPTIONS='-c bulk_sync.database=shop_data' psql -d postgres -f pg_cron.sql
-- Running it again updates the schedules in place. Each statement stands alone (no temporary function, no session
-- setting carried from one to the next), so it also runs through a transaction pooler, where consecutive
-- statements may land on different server connections.

create extension if not exists pg_cron;

-- Schedules (or updates) each job in the project's database: with cron.schedule when that is this database (any
-- role that may use pg_cron may, e.g. postgres on Supabase), else with cron.schedule_in_database (by default only
-- a superuser may).
do $schedule$
declare
    v_database text := coalesce(nullif(current_setting('bulk_sync.database', true), ''), current_database());
    v_job record;
begin
    for v_job in
        select * from (values
            ('bulk_sync_tick', '* * * * *', 'select bulk_sync.tick()'),
            -- Keeps every active shop's orders current: the changes since its watermark, every five minutes.
            ('bulk_sync_incremental', '*/5 * * * *', 'select bulk_sync.enqueue_incremental()'),
            -- Keeps SKUs and products current: fresh snapshots of every active shop's variants and products each
            -- night.
            ('bulk_sync_skus', '30 2 * * *', $$select bulk_sync.enqueue_backfill(current_date, current_date, '{skus,products}')$$),
            -- Finds what the shops deleted (and any gap): the orders of the last 90 days and all customers checked
            -- against ids-only exports, every Sunday night.
            ('bulk_sync_reconcile', '45 3 * * 0', 'select bulk_sync.enqueue_reconcile(current_date - 90, current_date)')
        ) as j (name, schedule, command)
    loop
        if v_database = current_database() then
            perform cron.schedule(v_job.name, v_job.schedule, v_job.command);
        else
            perform cron.schedule_in_database(v_job.name, v_job.schedule, v_job.command, v_database);
        end if;
    end loop;
    -- pg_cron never cleans its run log; keep a week of it (in pg_cron's own database, this one).
    perform cron.schedule(
        'bulk_sync_prune_cron_log', '17 3 * * *',
        $$delete from cron.job_run_details where end_time < now() - interval '7 days'$$
    );
end;
$schedule$;
