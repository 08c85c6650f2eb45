-- Least privilege: three roles, and the functions that cross their lines run as their owner with a fixed
-- search_path. Grant a role to a login: `create role my_runner login password '...' in role bulk_sync_runner;`
--   bulk_sync_runner    claims tasks, reports, writes staging, runs the import; reads the shops' endpoints
--   bulk_sync_operator  registers shops, queues backfills, retries, cancels, ticks; reads jobs and their history
--   bulk_sync_reader    reads shopify.* and the progress views

do $$
declare
    v_role text;
begin
    foreach v_role in array array['bulk_sync_runner', 'bulk_sync_operator', 'bulk_sync_reader'] loop
        if not exists (select from pg_roles where rolname = v_role) then
            execute format('create role %I nologin', v_role);
        end if;
    end loop;
end;
$$;

do $$
declare
    v_schema text := current_schema();
    v_function regprocedure;
    v_role text;
    v_entry record;
begin
    -- Nothing of bulk-sync is callable by everyone.
    for v_function in
        select p.oid::regprocedure from pg_proc as p
        where p.pronamespace = v_schema::regnamespace and p.prokind = 'f'
          and (p.proname like 'bulk\_sync\_%' or p.proname like 'report\_%'
               or p.proname in ('add_shop', 'enqueue_backfill', 'retry_failed', 'cancel_jobs'))
    loop
        execute format('revoke execute on function %s from public', v_function);
    end loop;
    -- The entry points: each runs as its owner, with a search_path nobody can redirect.
    for v_entry in
        select p.oid::regprocedure as fn,
               case when p.proname in ('add_shop', 'enqueue_backfill', 'retry_failed', 'cancel_jobs', 'bulk_sync_tick')
                    then 'bulk_sync_operator' else 'bulk_sync_runner' end as grantee
        from pg_proc as p
        where p.pronamespace = v_schema::regnamespace
          and p.proname in (
              'add_shop', 'enqueue_backfill', 'retry_failed', 'cancel_jobs', 'bulk_sync_tick',
              'bulk_sync_claim', 'bulk_sync_heartbeat', 'bulk_sync_release', 'bulk_sync_idle',
              'bulk_sync_import_batch', 'report_operation_started', 'report_operation_in_progress',
              'report_throttled', 'report_poll_result', 'report_download_finished', 'report_download_failed',
              'report_transient_error', 'report_fatal_error'
          )
    loop
        execute format('alter function %s security definer set search_path = %I, pg_temp', v_entry.fn, v_schema);
        execute format('grant execute on function %s to %I', v_entry.fn, v_entry.grantee);
    end loop;
    -- The import procedure commits between batches, so it cannot run as its owner; each batch function does.
    execute format('revoke execute on procedure %I.bulk_sync_import(bigint, bigint) from public', v_schema);
    execute format('grant execute on procedure %I.bulk_sync_import(bigint, bigint) to bulk_sync_runner', v_schema);
    foreach v_role in array array['bulk_sync_runner', 'bulk_sync_operator', 'bulk_sync_reader'] loop
        execute format('grant usage on schema %I to %I', v_schema, v_role);
    end loop;
    execute format('grant select (code, domain, api_version, active) on %I.bulk_sync_shops to bulk_sync_runner',
                   v_schema);
    execute format('grant insert on %I.bulk_sync_staging to bulk_sync_runner', v_schema);
    -- Called by the bulk_sync_stuck view, as its reader.
    execute format(
        'grant execute on function %1$I.bulk_sync_has_free_slot(text), %1$I.bulk_sync_has_free_import_slot() '
        'to bulk_sync_operator', v_schema
    );
    execute format(
        'grant select on %1$I.bulk_sync_shops, %1$I.bulk_sync_jobs, %1$I.bulk_sync_job_runs, %1$I.bulk_sync_rejects, '
        '%1$I.bulk_sync_settings, %1$I.bulk_sync_stuck to bulk_sync_operator', v_schema
    );
    execute format(
        'grant select on %1$I.bulk_sync_status, %1$I.bulk_sync_progress to bulk_sync_operator, bulk_sync_reader',
        v_schema
    );
end;
$$;

grant usage on schema shopify to bulk_sync_reader;
grant select on all tables in schema shopify to bulk_sync_reader;
