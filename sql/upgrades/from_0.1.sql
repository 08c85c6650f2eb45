-- Upgrades a database of release 0.1 (everything in public, named bulk_sync_*) to the baseline: its tables and
-- their data move into schema bulk_sync under their new names, its functions, triggers and views are dropped (the
-- definition files re-create them), and its grants on public go. Run by `bulk-sync migrate`, once, in the
-- transaction that records the baseline as applied.

drop view public.bulk_sync_stuck, public.bulk_sync_progress, public.bulk_sync_status, public.bulk_sync_freshness;

drop trigger bulk_sync_jobs_guard on public.bulk_sync_jobs;
drop trigger bulk_sync_jobs_inherit_kind on public.bulk_sync_jobs;
drop trigger bulk_sync_jobs_completed on public.bulk_sync_jobs;

drop procedure public.bulk_sync_import(bigint, bigint);

drop function
public.add_shop(text, text, text, integer, text),
public.bulk_sync_advance_watermark(text, text),
public.bulk_sync_amount(jsonb),
public.bulk_sync_audit(bigint, text, text, text, text, bigint, text, text),
public.bulk_sync_backoff(integer, double precision),
public.bulk_sync_bulk_query(public.bulk_sync_jobs),
public.bulk_sync_claim(text, integer, double precision),
public.bulk_sync_clear_staging(bigint[]),
public.bulk_sync_density(text, text),
public.bulk_sync_dispatch(),
public.bulk_sync_dispatch_exports(),
public.bulk_sync_dispatch_imports(),
public.bulk_sync_fail(public.bulk_sync_jobs, text, text, integer),
public.bulk_sync_fenced(bigint, bigint, text[], text),
public.bulk_sync_finish_import(public.bulk_sync_jobs),
public.bulk_sync_has_free_import_slot(),
public.bulk_sync_has_free_slot(text),
public.bulk_sync_heartbeat(bigint, bigint, bigint),
public.bulk_sync_idle(),
public.bulk_sync_import_batch(bigint, bigint),
public.bulk_sync_import_line_items(public.bulk_sync_jobs),
public.bulk_sync_import_orders(public.bulk_sync_jobs),
public.bulk_sync_import_skus(public.bulk_sync_jobs),
public.bulk_sync_jobs_completed(),
public.bulk_sync_jobs_guard(),
public.bulk_sync_jobs_inherit_kind(),
public.bulk_sync_json_bigint(jsonb),
public.bulk_sync_merge_following(public.bulk_sync_jobs, double precision, double precision),
public.bulk_sync_pick_exports(text, integer),
public.bulk_sync_prune_staging(),
public.bulk_sync_record_roots(public.bulk_sync_jobs),
public.bulk_sync_recover(),
public.bulk_sync_redact(text),
public.bulk_sync_refunds_ok(jsonb),
public.bulk_sync_release(bigint, bigint),
public.bulk_sync_repeat(public.bulk_sync_jobs, text, text, boolean, interval),
public.bulk_sync_replace_refunds(public.bulk_sync_jobs, boolean),
public.bulk_sync_requeue(public.bulk_sync_jobs, text, text, boolean, interval),
public.bulk_sync_require_shop(text),
public.bulk_sync_require_text(text, text),
public.bulk_sync_resolve_shops(text[]),
public.bulk_sync_retry_delay(public.bulk_sync_jobs, text, text, boolean, interval),
public.bulk_sync_search_time(timestamptz),
public.bulk_sync_send(bigint, text, bigint, interval),
public.bulk_sync_send_cancel(bigint, text),
public.bulk_sync_settings(),
public.bulk_sync_shop_endpoint(text),
public.bulk_sync_split(public.bulk_sync_jobs, text, text),
public.bulk_sync_stage_batch(public.bulk_sync_jobs, integer),
public.bulk_sync_task_for(text),
public.bulk_sync_tick(),
public.bulk_sync_tick_import(interval),
public.bulk_sync_try_jsonb(text),
public.bulk_sync_webhook_finished(text, text, text),
public.bulk_sync_work_available(),
public.cancel_jobs(text),
public.enqueue_backfill(date, date, text[], text[]),
public.enqueue_incremental(text[], timestamptz),
public.report_download_failed(bigint, bigint, text, boolean),
public.report_download_finished(bigint, bigint, bigint, bigint),
public.report_fatal_error(bigint, bigint, text),
public.report_operation_in_progress(bigint, bigint, text),
public.report_operation_started(bigint, bigint, text),
public.report_poll_result(bigint, bigint, text, text, bigint, bigint, text),
public.report_throttled(bigint, bigint, double precision),
public.report_transient_error(bigint, bigint, text),
public.retry_failed(text);

-- Each table moves with its indexes, constraints and identity sequence; all of them lose the bulk_sync_ prefix.
do $$
declare
    v_table text;
    v_object record;
begin
    foreach v_table in array array[
        'settings', 'shops', 'jobs', 'transitions', 'job_runs', 'staging', 'import_roots', 'rejects', 'watermarks',
        'webhooks'
    ] loop
        execute format('alter table public.%I set schema bulk_sync', 'bulk_sync_' || v_table);
        execute format('alter table bulk_sync.%I rename to %I', 'bulk_sync_' || v_table, v_table);
    end loop;
    for v_object in
        select format('alter table %s rename constraint %I to %I', c.conrelid::regclass, c.conname,
                      substr(c.conname, 11)) as statement
        from pg_constraint as c
        where c.connamespace = 'bulk_sync'::regnamespace and c.conname like 'bulk\_sync\_%'
    loop
        execute v_object.statement;
    end loop;
    for v_object in
        select format('alter %s bulk_sync.%I rename to %I', case c.relkind when 'S' then 'sequence' else 'index' end,
                      c.relname, substr(c.relname, 11)) as statement
        from pg_class as c
        where c.relnamespace = 'bulk_sync'::regnamespace and c.relkind in ('i', 'S') and c.relname like 'bulk\_sync\_%'
    loop
        execute v_object.statement;
    end loop;
end;
$$;

-- Release 0.1 let its roles use public; bulk-sync has nothing there any more.
revoke usage on schema public from bulk_sync_runner, bulk_sync_operator, bulk_sync_reader;

drop table public.bulk_sync_migrations;
