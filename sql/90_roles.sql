-- Least privilege: three roles get exactly what they need, and nobody else anything. Grant a role to a login:
-- `create role my_runner login password '...' in role bulk_sync_runner;`
--   bulk_sync_runner    claims tasks, reports, writes staging, runs the import; reads the shops' endpoints
--   bulk_sync_operator  registers shops, queues backfills, retries, cancels, ticks; reads jobs and their history
--   bulk_sync_reader    reads shopify.* but personal data (bulk_sync.mirror_columns.personal, and raw) and the progress
--                       views
--   bulk_sync_reader_pii  reads all of shopify.*, personal data included (grant it beside bulk_sync_reader)
-- Whatever default privileges the database has (Supabase grants anon and authenticated everything an owner
-- creates), every privilege on bulk-sync's schemas and objects is reset here to these grants: grant access by
-- granting one of the roles, never on the objects. The entry points run as their owner (security definer) with a
-- fixed search_path, so the roles need no privilege on the tables behind them.

do $$
declare
    v_role text;
begin
    foreach v_role in array array[
        'bulk_sync_runner', 'bulk_sync_operator', 'bulk_sync_reader', 'bulk_sync_reader_pii'
    ] loop
        if not exists (select from pg_roles where rolname = v_role) then
            execute format('create role %I nologin', v_role);
        end if;
    end loop;
end;
$$;

-- Takes every privilege on bulk-sync's queue (pgmq.q_bulk_sync, pgmq.a_bulk_sync and their sequences) from every
-- role but its owner; returns the roles it took one from. bulk-sync's roles need none (its functions run as their
-- owner). migrate runs it every time: Supabase Studio's "Expose Queues via PostgREST" grants service_role all of
-- every queue table, and its default privileges give later ones to anon and authenticated as well.
create or replace function bulk_sync.close_queue() returns text[]
language plpgsql as $$
declare
    v_grant record;
    v_roles text[] := '{}';
begin
    for v_grant in
        select distinct
            case when c.relkind = 'S' then 'sequence ' else 'table ' end || c.oid::regclass::text as target,
            case when a.grantee = 0 then 'public' else quote_ident(a.grantee::regrole::text) end as grantee
        from pg_class as c
        cross join lateral aclexplode(c.relacl) as a
        where c.relnamespace = 'pgmq'::regnamespace and a.grantee <> c.relowner
          and (c.relname in ('q_bulk_sync', 'a_bulk_sync') or c.oid in (
              select d.objid from pg_depend as d
              where d.classid = 'pg_class'::regclass and d.refclassid = 'pg_class'::regclass
                and d.refobjid in (to_regclass('pgmq.q_bulk_sync'), to_regclass('pgmq.a_bulk_sync'))
                and d.deptype in ('a', 'i')
          ))
        union
        -- column privileges go with a revoke on their table
        select distinct 'table ' || c.oid::regclass::text,
               case when a.grantee = 0 then 'public' else quote_ident(a.grantee::regrole::text) end
        from pg_class as c
        inner join pg_attribute as col on c.oid = col.attrelid
        cross join lateral aclexplode(col.attacl) as a
        where c.relnamespace = 'pgmq'::regnamespace and c.relname in ('q_bulk_sync', 'a_bulk_sync')
          and a.grantee <> c.relowner
    loop
        execute format('revoke all on %s from %s', v_grant.target, v_grant.grantee);
        v_roles := array(select distinct unnest(v_roles || v_grant.grantee) order by 1);
    end loop;
    return v_roles;
end;
$$;

-- bulk-sync's relations in schema shopify: its tables and the views of sql/80_views.sql (shopify.live_<table> of each
-- table of bulk_sync.mirror_tables, shopify.daily_sales). Anything else there is a user's, and keeps the privileges
-- its owner gave.
create or replace function bulk_sync.mirror_relations() returns regclass[]
language sql stable as $$
    select array(
        select c.oid::regclass from pg_class as c
        where c.relnamespace = 'shopify'::regnamespace and c.relkind in ('r', 'p', 'S')
        union all
        select to_regclass(format('shopify.%I', 'live_' || t.name)) from bulk_sync.mirror_tables as t
        union all
        select to_regclass('shopify.daily_sales')
    );
$$;

-- True when a column of one of bulk-sync's relations in shopify holds personal data: raw (the whole exported line), or
-- a column bulk_sync.mirror_columns marks personal, of the table or of its shopify.live_<table> view.
create or replace function bulk_sync.personal(p_relation regclass, p_column name) returns boolean
language sql stable as $$
    select p_column = 'raw' or exists (
        select from bulk_sync.mirror_columns as c
        inner join pg_class as r on r.oid = p_relation
        where c.personal and c.column_name = p_column
          and c.table_name = regexp_replace(r.relname, '^live_', '')
    );
$$;

-- Revokes every privilege on the schemas bulk_sync and shopify, on everything in bulk_sync and on bulk-sync's
-- relations in shopify from every role but the owner (PUBLIC included).
do $$
declare
    v_grant record;
begin
    for v_grant in
        select distinct format('schema %I', n.nspname) as target, a.grantee, n.nspowner as owner
        from pg_namespace as n
        cross join lateral aclexplode(n.nspacl) as a
        where n.nspname in ('bulk_sync', 'shopify')
        union
        select distinct
            case when c.relkind = 'S' then 'sequence ' else 'table ' end || c.oid::regclass::text,
            a.grantee, c.relowner
        from pg_class as c
        cross join lateral aclexplode(c.relacl) as a
        where (c.relnamespace = 'bulk_sync'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f'))
           or c.oid = any(bulk_sync.mirror_relations())
        union
        -- column privileges go with a revoke on their table
        select distinct 'table ' || c.oid::regclass::text, a.grantee, c.relowner
        from pg_class as c
        inner join pg_attribute as col on c.oid = col.attrelid
        cross join lateral aclexplode(col.attacl) as a
        where c.relnamespace = 'bulk_sync'::regnamespace or c.oid = any(bulk_sync.mirror_relations())
        union
        select distinct
            case when p.prokind = 'p' then 'procedure ' else 'function ' end || p.oid::regprocedure::text,
            a.grantee, p.proowner
        from pg_proc as p
        cross join lateral aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) as a
        where p.pronamespace = 'bulk_sync'::regnamespace
    loop
        continue when v_grant.grantee = v_grant.owner;
        execute format('revoke all on %s from %s', v_grant.target,
                       case when v_grant.grantee = 0 then 'public' else quote_ident(v_grant.grantee::regrole::text) end);
    end loop;
end;
$$;

grant usage on schema bulk_sync to bulk_sync_runner, bulk_sync_operator, bulk_sync_reader;
grant usage on schema shopify to bulk_sync_reader, bulk_sync_reader_pii;

-- The runner: the claim, the reports, the import and the webhook; the shops' endpoints; staging by COPY.
grant execute on function
bulk_sync.claim(text, integer, double precision, text[]),
bulk_sync.heartbeat(bigint, bigint, bigint),
bulk_sync.release(bigint, bigint),
bulk_sync.idle(),
bulk_sync.lease_seconds(),
bulk_sync.import_batch(bigint, bigint),
bulk_sync.import_outcome(bigint),
bulk_sync.report_operation_started(bigint, bigint, text, boolean),
bulk_sync.report_operation_in_progress(bigint, bigint, text),
bulk_sync.report_throttled(bigint, bigint, double precision),
bulk_sync.report_poll_result(bigint, bigint, text, text, bigint, bigint, text),
bulk_sync.report_download_finished(bigint, bigint, bigint, bigint),
bulk_sync.report_download_failed(bigint, bigint, text, boolean),
bulk_sync.report_fetched(bigint, bigint, text[], jsonb),
bulk_sync.report_transient_error(bigint, bigint, text),
bulk_sync.report_fatal_error(bigint, bigint, text),
bulk_sync.report_cancel_failed(bigint, text, integer, text),
bulk_sync.webhook_finished(text, text, text),
bulk_sync.webhook_deleted(text, text, text, jsonb, timestamptz)
to bulk_sync_runner;
-- The import procedure commits between batches, so it cannot run as its owner; each batch function does.
grant execute on procedure bulk_sync.import(bigint, bigint) to bulk_sync_runner;
grant select (code, domain, api_version, active) on bulk_sync.shops to bulk_sync_runner;
grant insert on bulk_sync.staging to bulk_sync_runner;

-- The operator: the API, and reading jobs, their history and the settings.
grant execute on function
bulk_sync.add_shop(text, text, text, integer, text),
bulk_sync.update_shop(text, text, text, integer, text, boolean),
bulk_sync.pause_shop(text),
bulk_sync.resume_shop(text),
bulk_sync.remove_shop(text, boolean),
bulk_sync.enqueue_backfill(date, date, text[], text[], boolean),
bulk_sync.enqueue_incremental(text[], timestamptz),
bulk_sync.enqueue_reconcile(date, date, text[]),
bulk_sync.retry_failed(text),
bulk_sync.cancel_jobs(text),
bulk_sync.cancel_jobs(bigint[]),
bulk_sync.cancel_jobs(date, date, text[], text[]),
bulk_sync.tick(),
-- called by the bulk_sync.stuck view, as its reader
bulk_sync.free_slots(text),
bulk_sync.free_import_slots(text),
bulk_sync.get_settings()
to bulk_sync_operator;
grant select on
bulk_sync.shops, bulk_sync.jobs, bulk_sync.job_runs, bulk_sync.rejects, bulk_sync.settings,
bulk_sync.import_limits, bulk_sync.watermarks, bulk_sync.webhooks, bulk_sync.runners, bulk_sync.cancels,
bulk_sync.fetches, bulk_sync.fetched, bulk_sync.stuck
to bulk_sync_operator;

-- Everyone of bulk-sync: what each job state means (the views read it as their reader, the status display too).
grant select on bulk_sync.job_states to bulk_sync_runner, bulk_sync_operator, bulk_sync_reader;
grant execute on function bulk_sync.states(text, boolean)
to bulk_sync_runner, bulk_sync_operator, bulk_sync_reader;

-- Everyone of bulk-sync: progress and freshness; the reader: the data.
grant select on bulk_sync.status, bulk_sync.progress, bulk_sync.freshness to bulk_sync_operator, bulk_sync_reader;
-- The reader: every column but personal data (by column grants, on the tables and their views alike: a view reads
-- its tables as its owner); the reader of personal data: everything.
do $$
declare
    v_relation regclass;
    v_columns text;
begin
    foreach v_relation in array bulk_sync.mirror_relations() loop
        continue when (select relkind from pg_class where oid = v_relation) = 'S';
        select string_agg(quote_ident(a.attname), ', ' order by a.attnum) into v_columns
        from pg_attribute as a
        where a.attrelid = v_relation and a.attnum > 0 and not a.attisdropped
          and not bulk_sync.personal(v_relation, a.attname);
        execute format('grant select (%s) on %s to bulk_sync_reader', v_columns, v_relation);
        execute format('grant select on %s to bulk_sync_reader_pii', v_relation);
    end loop;
end;
$$;
