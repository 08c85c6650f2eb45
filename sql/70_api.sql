-- The SQL API for people and pg_cron: queue backfills, retry, cancel, and the periodic tick (shops: 68_shops.sql).

-- Resolves and checks a list of shop codes (null: every active shop); raises BS002/BS007 on a bad one.
create or replace function bulk_sync.resolve_shops(p_shops text[]) returns text[]
language plpgsql stable as $$
declare
    v_bad text;
begin
    if p_shops is null then
        if not exists (select from bulk_sync.shops where active) then
            raise exception 'no active shop: register one with bulk_sync.add_shop()' using errcode = 'BS002';
        end if;
        return array(select code from bulk_sync.shops where active order by code);
    end if;
    if cardinality(p_shops) = 0 or array_position(p_shops, null) is not null then
        raise exception 'p_shops must be null (all active shops) or a list of shop codes without NULLs'
            using errcode = 'BS005';
    end if;
    select string_agg(case when c = '' then ''''' (empty)' else c end, ', ') into v_bad
    from unnest(p_shops) as c where not exists (select from bulk_sync.shops where code = c);
    if v_bad is not null then
        raise exception 'unknown shop: %', v_bad using errcode = 'BS002',
            hint = 'register it with bulk_sync.add_shop()';
    end if;
    select string_agg(code, ', ') into v_bad
    from bulk_sync.shops where code = any(p_shops) and not active;
    if v_bad is not null then
        raise exception 'inactive shop: %', v_bad using errcode = 'BS007';
    end if;
    return array(select distinct c from unnest(p_shops) as c order by c);
end;
$$;

-- Raises BS002 when p_shop is given but not registered.
create or replace function bulk_sync.require_shop(p_shop text) returns void
language plpgsql stable as $$
begin
    if p_shop is not null and not exists (select from bulk_sync.shops where code = p_shop) then
        raise exception 'unknown shop: %', case when p_shop = '' then ''''' (empty)' else p_shop end
            using errcode = 'BS002';
    end if;
end;
$$;

-- Raises BS005, BS001 or BS004 unless [p_from, p_to] is a range of at most max_backfill_days days.
create or replace function bulk_sync.require_days(p_from date, p_to date) returns void
language plpgsql stable as $$
declare
    v_max integer := (bulk_sync.get_settings()).max_backfill_days;
begin
    if p_from is null or p_to is null then
        raise exception 'p_from and p_to are required dates' using errcode = 'BS005';
    end if;
    if p_from > p_to then
        raise exception 'invalid date range: from % is after to %', p_from, p_to using errcode = 'BS001';
    end if;
    if p_to - p_from + 1 > v_max then
        raise exception 'date range of % days is too large (at most % days)', p_to - p_from + 1, v_max
            using errcode = 'BS004';
    end if;
end;
$$;

-- Raises BS005 or BS003 unless p_entities lists entities of p_known without NULLs.
create or replace function bulk_sync.check_entities(p_entities text[], p_known text[]) returns void
language plpgsql immutable as $$
declare
    v_bad text;
begin
    if p_entities is null or cardinality(p_entities) = 0 or array_position(p_entities, null) is not null then
        raise exception 'p_entities must list entities (%) without NULLs', array_to_string(p_known, ', ')
            using errcode = 'BS005';
    end if;
    select string_agg(e, ', ') into v_bad from unnest(p_entities) as e where not e = any(p_known);
    if v_bad is not null then
        raise exception 'unknown entity: % (known: %)', v_bad, array_to_string(p_known, ', ') using errcode = 'BS003';
    end if;
end;
$$;

-- Queues jobs so that every instant of every day of [p_from, p_to] (whole days in each shop's time zone) is covered,
-- for each entity with a backfill field (bulk_sync.entities: orders by creation, refunds by update), plus one job per
-- shop of each snapshot entity (skus, products); returns how many jobs it created (0 when everything is covered); what is due
-- is dispatched at commit. Covered: by a job that answers for its window (completed, failed and live ones), or with p_resync
-- only by a live one, so that days already synced are exported again. Part of a day covered (a time-zone change, a
-- split) gets a job for the rest. Raises BS011 for days that start after tomorrow (no day of Shopify's yet).
create or replace function bulk_sync.enqueue_backfill(
    p_from date, p_to date,
    p_entities text[] default '{orders,refunds,skus,customers,products}', p_shops text[] default null,
    p_resync boolean default false
) returns integer
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_s bulk_sync.settings := bulk_sync.get_settings();
    v_shops text[];
    v_covering text[] := case when p_resync then bulk_sync.states('terminal', false)
                              else bulk_sync.states('covers_window') end;
    v_count integer;
begin
    perform bulk_sync.require_days(p_from, p_to);
    if p_from > (now() at time zone 'UTC')::date + 1 then
        raise exception 'backfill from % starts after tomorrow: those days have no orders yet (mistyped year?)',
            p_from using errcode = 'BS011';
    end if;
    if p_resync is null then
        raise exception 'p_resync must be true or false' using errcode = 'BS005';
    end if;
    perform bulk_sync.check_entities(p_entities, array(
        select e.entity from bulk_sync.entities as e
        where (e.backfill_field is not null or e.snapshot)
          and exists (select from bulk_sync.entity_tables as t where t.entity = e.entity)  -- not ids-only
        order by e.position));
    v_shops := bulk_sync.resolve_shops(p_shops);

    with days as (
        select s.code as shop, s.timezone, e.entity, e.backfill_field as filter_field, d::date as day,
               tstzrange(d::timestamp at time zone s.timezone,
                         (d + interval '1 day')::timestamp at time zone s.timezone) as whole
        from bulk_sync.shops as s
        cross join bulk_sync.entities as e
        cross join generate_series(p_from::timestamp, p_to::timestamp, interval '1 day') as d
        where s.code = any(v_shops) and e.entity = any(p_entities) and e.backfill_field is not null
    ),
    wanted as (
        -- each day less what jobs already cover of it: nothing, the whole day, or the parts in between
        select w.shop, w.entity, w.filter_field, w.day, lower(u.part) as window_start, upper(u.part) as window_end
        from days as w
        cross join lateral unnest(
            tstzmultirange(w.whole) - coalesce((
                select range_agg(tstzrange(o.window_start, o.window_end))
                from bulk_sync.jobs as o
                where o.shop = w.shop and o.entity = w.entity and o.filter_field = w.filter_field
                  and o.status = any(v_covering)
                  and tstzrange(o.window_start, o.window_end) && w.whole
            ), '{}')
        ) as u (part)
        union all
        select s.code, e.entity, null, null, null, null
        from bulk_sync.shops as s
        cross join bulk_sync.entities as e
        where s.code = any(v_shops) and e.entity = any(p_entities) and e.snapshot
          and not exists (
              select from bulk_sync.jobs as o
              where o.shop = s.code and o.entity = e.entity and o.window_start is null
                and o.start_date = p_from and o.end_date = p_to and o.status = any(v_covering)
          )
    ),
    created as (
        insert into bulk_sync.jobs as j (
            shop, entity, filter_field, window_start, window_end, start_date, end_date,
            max_attempts, next_attempt_at
        )
        select w.shop, w.entity, w.filter_field, w.window_start, w.window_end,
               coalesce(w.day, p_from), coalesce(w.day, p_to),
               v_s.max_attempts, greatest(now(), w.window_end)
        from wanted as w
        order by w.shop, w.entity, w.window_start
        on conflict do nothing
        returning j.id, j.fence
    ),
    audited as (
        select bulk_sync.audit(c.id, 'enqueue', 'queued', null, 'queued', c.fence,
                               case when p_resync then 'backfill job created (re-sync)' else 'backfill job created' end)
        from created as c
    )
    select count(*) into v_count from audited;
    return v_count;
end;
$$;

-- Gives one failed job a fresh set of attempts: what an earlier attempt staged or quarantined goes, it exports afresh.
create or replace function bulk_sync.revive(p_job bulk_sync.jobs) returns bulk_sync.jobs
language plpgsql as $$
begin
    perform bulk_sync.clear_staging(array[p_job.id]);
    delete from bulk_sync.rejects where job_id = p_job.id;
    p_job := bulk_sync.without_export(p_job);
    p_job.attempts := 0;
    p_job.next_attempt_at := now();
    return bulk_sync.transition(p_job, 'queued', 'retry', 'queued', 'retried by bulk_sync.retry_failed()');
end;
$$;

-- Cancels one live job; an operation running on Shopify for it gets a cancel task.
create or replace function bulk_sync.cancel(p_job bulk_sync.jobs) returns bulk_sync.jobs
language plpgsql as $$
begin
    if p_job.status = 'waiting' then
        perform bulk_sync.send_cancel(p_job.id, p_job.operation_id);
    end if;
    return bulk_sync.transition(p_job, 'canceled', 'cancel', 'canceled', 'canceled by bulk_sync.cancel_jobs()');
end;
$$;

-- Applies p_action (revive or cancel) to every job of one shop (or all) in the states p_states, oldest first;
-- returns how many jobs it changed.
create or replace function bulk_sync.for_jobs(p_shop text, p_states text[], p_action text) returns integer
language plpgsql as $$
declare
    v_count integer;
begin
    perform bulk_sync.require_shop(p_shop);
    select count(case p_action when 'revive' then bulk_sync.revive(f.job) when 'cancel' then bulk_sync.cancel(f.job) end)
      into v_count
    from (
        select j as job from bulk_sync.jobs as j
        where j.status = any(p_states) and (p_shop is null or j.shop = p_shop)
        order by j.id
        for update
    ) as f;
    return v_count;
end;
$$;

-- Gives failed jobs (of one shop, or all) a fresh set of attempts; returns how many were re-queued.
create or replace function bulk_sync.retry_failed(p_shop text default null) returns integer
language sql
security definer set search_path = pg_catalog, pg_temp as $$
    select bulk_sync.for_jobs(p_shop, '{failed}', 'revive');
$$;

-- Cancels every live job (of one shop, or all); returns how many.
create or replace function bulk_sync.cancel_jobs(p_shop text default null) returns integer
language sql
security definer set search_path = pg_catalog, pg_temp as $$
    select bulk_sync.for_jobs(p_shop, bulk_sync.states('terminal', false), 'cancel');
$$;

-- Cancels the live jobs among p_ids (oldest first); returns how many.
create or replace function bulk_sync.cancel_ids(p_ids bigint[]) returns integer
language plpgsql as $$
declare
    v_count integer;
begin
    select count(bulk_sync.cancel(f.job)) into v_count
    from (
        select j as job from bulk_sync.jobs as j
        where j.id = any(p_ids) and not j.status = any(bulk_sync.states('terminal'))
        order by j.id
        for update
    ) as f;
    return v_count;
end;
$$;

-- Cancels the live jobs among the given ids; raises BS008 naming ids that are no job. Returns how many.
create or replace function bulk_sync.cancel_jobs(p_job_ids bigint[]) returns integer
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_unknown text;
begin
    if p_job_ids is null or cardinality(p_job_ids) = 0 or array_position(p_job_ids, null) is not null then
        raise exception 'p_job_ids must list job ids without NULLs' using errcode = 'BS005';
    end if;
    select string_agg(i::text, ', ' order by i) into v_unknown
    from unnest(p_job_ids) as i where not exists (select from bulk_sync.jobs where id = i);
    if v_unknown is not null then
        raise exception 'unknown job: %', v_unknown using errcode = 'BS008';
    end if;
    return bulk_sync.cancel_ids(p_job_ids);
end;
$$;

-- Cancels the live jobs of days [p_from, p_to] (in each shop's time zone; a snapshot by its backfill's days), of
-- the entities p_entities and the shops p_shops (null: all). Returns how many.
create or replace function bulk_sync.cancel_jobs(
    p_from date, p_to date, p_entities text[] default null, p_shops text[] default null
) returns integer
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_shop text;
begin
    perform bulk_sync.require_days(p_from, p_to);
    if p_entities is not null then
        perform bulk_sync.check_entities(p_entities, array(select entity from bulk_sync.entities order by position));
    end if;
    if array_position(p_shops, null) is not null or cardinality(p_shops) = 0 then
        raise exception 'p_shops must be null (all shops) or a list of shop codes without NULLs'
            using errcode = 'BS005';
    end if;
    foreach v_shop in array coalesce(p_shops, '{}') loop
        perform bulk_sync.require_shop(v_shop);
    end loop;
    return bulk_sync.cancel_ids(array(
        select j.id from bulk_sync.jobs as j
        inner join bulk_sync.shops as s on j.shop = s.code
        where not j.status = any(bulk_sync.states('terminal'))
          and (p_entities is null or j.entity = any(p_entities))
          and (p_shops is null or j.shop = any(p_shops))
          and case when j.window_start is null
                   then daterange(j.start_date, j.end_date, '[]') && daterange(p_from, p_to, '[]')
                   else tstzrange(j.window_start, j.window_end)
                        && tstzrange(p_from::timestamp at time zone s.timezone,
                                     (p_to + 1)::timestamp at time zone s.timezone)
              end
    ));
end;
$$;

-- The periodic safety net (pg_cron, every minute): recover expired leases, dispatch due jobs, import what no runner
-- took (within tick_import_seconds), prune staging and the audit trail, finish removing shops, restore lost
-- wake-ups.
create or replace function bulk_sync.tick() returns jsonb
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_recovered integer := bulk_sync.recover();
    v_dispatched integer := bulk_sync.dispatch();
    v_imported integer := bulk_sync.tick_import(make_interval(secs => (bulk_sync.get_settings()).tick_import_seconds));
    v_staging bigint := bulk_sync.prune_staging();
    v_restored integer := bulk_sync.restore_wake_ups();
    v_removed integer := bulk_sync.finish_removals();
    v_pruned integer;
begin
    delete from bulk_sync.job_runs as r
    using bulk_sync.jobs as j
    where r.job_id = j.id
      and j.status = any(bulk_sync.states('final'))
      and r.created_at < now() - make_interval(days => (bulk_sync.get_settings()).audit_retention_days);
    get diagnostics v_pruned = row_count;
    delete from bulk_sync.runners where seen_at < now() - interval '1 day';
    return jsonb_build_object(
        'recovered', v_recovered, 'dispatched', v_dispatched, 'import_batches', v_imported,
        'staging_lines_pruned', v_staging, 'audit_pruned', v_pruned, 'shops_removed', v_removed,
        'wake_ups_restored', v_restored
    );
end;
$$;
