-- The SQL API for people and pg_cron: register shops, queue backfills, retry, cancel, and the periodic tick.

-- The public SQL API: register shops, queue backfills, retry, cancel, the periodic tick and the views.

-- Registers or updates a shop; max_concurrent_ops defaults to what its API version allows (1, or 5 from 2026-01).
create or replace function bulk_sync.add_shop(
    p_code text, p_domain text, p_api_version text default '2026-10',
    p_max_concurrent_ops integer default null, p_timezone text default 'UTC'
) returns text
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_limit integer;
begin
    if p_code is null or p_code !~ '^[A-Z][A-Z0-9_]{0,15}$' then
        raise exception 'invalid shop code %: use a short upper-case word such as DE',
            coalesce(quote_literal(p_code), 'NULL') using errcode = 'BS006';
    end if;
    if p_domain is null
       or p_domain !~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$' then
        raise exception 'invalid shop domain %: use the host name, e.g. my-shop.myshopify.com',
            coalesce(quote_literal(p_domain), 'NULL') using errcode = 'BS006';
    end if;
    if p_api_version is null or p_api_version !~ '^(20[0-9]{2}-(01|04|07|10)|unstable)$' then
        raise exception 'invalid API version %: use a release such as 2026-10',
            coalesce(quote_literal(p_api_version), 'NULL') using errcode = 'BS006';
    end if;
    if p_timezone is null or not exists (select from pg_timezone_names where name = p_timezone) then
        raise exception 'unknown time zone %', coalesce(quote_literal(p_timezone), 'NULL')
            using errcode = 'BS006';
    end if;
    v_limit := case when p_api_version >= '2026-01' then 5 else 1 end;
    if p_max_concurrent_ops not between 1 and v_limit then
        raise exception 'max_concurrent_ops % is out of range: API % allows 1 to % bulk queries at a time',
            p_max_concurrent_ops, p_api_version, v_limit using errcode = 'BS006';
    end if;
    insert into bulk_sync.shops as s (code, domain, api_version, max_concurrent_ops, timezone, active)
    values (p_code, p_domain, p_api_version, coalesce(p_max_concurrent_ops, v_limit), p_timezone, true)
    on conflict (code) do update
       set domain = excluded.domain, api_version = excluded.api_version,
           max_concurrent_ops = excluded.max_concurrent_ops, timezone = excluded.timezone,
           active = true, updated_at = now();
    return p_code;
end;
$$;

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
    select string_agg(c, ', ') into v_bad
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
        raise exception 'unknown shop: %', p_shop using errcode = 'BS002';
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

-- Queues the jobs covering every day of [p_from, p_to] (whole days in each shop's time zone) plus one skus snapshot
-- per shop; returns how many jobs it created (0 when everything is already covered) and dispatches what is due.
create or replace function bulk_sync.enqueue_backfill(
    p_from date, p_to date,
    p_entities text[] default '{orders,refunds,skus}', p_shops text[] default null
) returns integer
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_s bulk_sync.settings := bulk_sync.get_settings();
    v_shops text[];
    v_bad text;
    v_count integer;
begin
    perform bulk_sync.require_days(p_from, p_to);
    if p_entities is null or cardinality(p_entities) = 0 or array_position(p_entities, null) is not null then
        raise exception 'p_entities must list entities (orders, refunds, skus) without NULLs'
            using errcode = 'BS005';
    end if;
    select string_agg(e, ', ') into v_bad
    from unnest(p_entities) as e where e not in ('orders', 'refunds', 'skus');
    if v_bad is not null then
        raise exception 'unknown entity: % (known: orders, refunds, skus)', v_bad using errcode = 'BS003';
    end if;
    v_shops := bulk_sync.resolve_shops(p_shops);

    with wanted as (
        select s.code as shop, e.entity, e.filter_field, d::date as day,
               d::timestamp at time zone s.timezone as window_start,
               (d + interval '1 day')::timestamp at time zone s.timezone as window_end
        from bulk_sync.shops as s
        cross join (values ('orders', 'created_at'), ('refunds', 'updated_at')) as e (entity, filter_field)
        cross join generate_series(p_from::timestamp, p_to::timestamp, interval '1 day') as d
        where s.code = any(v_shops) and e.entity = any(p_entities)
        union all
        select s.code, 'skus', null, null, null, null
        from bulk_sync.shops as s
        where s.code = any(v_shops) and 'skus' = any(p_entities)
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
        where not exists (
            select from bulk_sync.jobs as o
            where o.shop = w.shop and o.entity = w.entity
              and not o.status = any(bulk_sync.states('covers_window', false))
              and (
                  (w.window_start is null and o.window_start is null and o.start_date = p_from and o.end_date = p_to)
                  or (o.filter_field = w.filter_field
                      and tstzrange(o.window_start, o.window_end) && tstzrange(w.window_start, w.window_end))
              )
        )
        order by w.shop, w.entity, w.window_start
        on conflict do nothing
        returning j.id, j.fence
    ),
    audited as (
        select bulk_sync.audit(c.id, 'enqueue', 'queued', null, 'queued', c.fence, 'backfill job created')
        from created as c
    )
    select count(*) into v_count from audited;

    perform bulk_sync.dispatch();
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

-- Applies p_action (revive or cancel) to every job of one shop (or all) in the states p_states, oldest first, then
-- dispatches into the slots that freed; returns how many jobs it changed.
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
    perform bulk_sync.dispatch();
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

-- The periodic safety net (pg_cron, every minute): recover expired leases, dispatch due jobs, import what no runner
-- took (within tick_import_seconds), prune staging and the audit trail.
create or replace function bulk_sync.tick() returns jsonb
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_recovered integer := bulk_sync.recover();
    v_dispatched integer := bulk_sync.dispatch();
    v_imported integer := bulk_sync.tick_import(make_interval(secs => (bulk_sync.get_settings()).tick_import_seconds));
    v_staging bigint := bulk_sync.prune_staging();
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
        'staging_lines_pruned', v_staging, 'audit_pruned', v_pruned
    );
end;
$$;
