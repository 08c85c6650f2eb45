-- The SQL API for people and pg_cron: register shops, queue backfills, retry, cancel, and the periodic tick.

-- The public SQL API: register shops, queue backfills, retry, cancel, the periodic tick and the views.

-- Raises BS006 unless the values make a valid shop (max_concurrent_ops within what its API version allows).
create or replace function bulk_sync.check_shop(
    p_code text, p_domain text, p_api_version text, p_max_concurrent_ops integer, p_timezone text
) returns void
language plpgsql stable as $$
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
    if p_max_concurrent_ops is null or p_max_concurrent_ops not between 1 and bulk_sync.max_ops(p_api_version) then
        raise exception 'max_concurrent_ops % is out of range: API % allows 1 to % bulk queries at a time',
            coalesce(p_max_concurrent_ops::text, 'NULL'), p_api_version, bulk_sync.max_ops(p_api_version)
            using errcode = 'BS006';
    end if;
end;
$$;

-- How many bulk queries a shop may run at a time on an API version (1, or 5 from 2026-01).
create or replace function bulk_sync.max_ops(p_api_version text) returns integer
language sql immutable as $$
    select case when p_api_version >= '2026-01' then 5 else 1 end;
$$;

-- Raises BS012 when another shop has p_domain: a domain is one shop.
create or replace function bulk_sync.require_own_domain(p_code text, p_domain text) returns void
language plpgsql stable as $$
declare
    v_other text := (select code from bulk_sync.shops where domain = p_domain and code <> p_code);
begin
    if v_other is not null then
        raise exception 'domain % is shop %''s: a domain is one shop', p_domain, v_other using errcode = 'BS012';
    end if;
end;
$$;

-- Registers a shop; api_version defaults to 2026-10, max_concurrent_ops to what it allows, the time zone to UTC.
-- Called again for a registered code it changes nothing: it returns the code when every value given equals the
-- stored one, else raises BS012 naming the differences (bulk_sync.update_shop changes a shop).
create or replace function bulk_sync.add_shop(
    p_code text, p_domain text, p_api_version text default null,
    p_max_concurrent_ops integer default null, p_timezone text default null
) returns text
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_shop bulk_sync.shops;
    v_version text := coalesce(p_api_version, '2026-10');
    v_differs text;
begin
    select * into v_shop from bulk_sync.shops where code = p_code for update;
    if found then
        select string_agg(format('%s %s (given %s)', d.name, d.stored, d.given), ', ') into v_differs
        from (values
            ('domain', v_shop.domain, p_domain),
            ('api_version', v_shop.api_version, p_api_version),
            ('max_concurrent_ops', v_shop.max_concurrent_ops::text, p_max_concurrent_ops::text),
            ('time zone', v_shop.timezone, p_timezone)
        ) as d (name, stored, given)
        where d.given is not null and d.given is distinct from d.stored;
        if v_differs is not null or p_domain is null then
            raise exception 'shop % exists with %: add_shop changes nothing; bulk_sync.update_shop(''%'', ...) does',
                p_code, coalesce(v_differs, 'domain ' || v_shop.domain || ' (given NULL)'), p_code
                using errcode = 'BS012';
        end if;
        return p_code;
    end if;
    perform bulk_sync.check_shop(p_code, p_domain, v_version,
                                 coalesce(p_max_concurrent_ops, bulk_sync.max_ops(v_version)),
                                 coalesce(p_timezone, 'UTC'));
    perform bulk_sync.require_own_domain(p_code, p_domain);
    insert into bulk_sync.shops (code, domain, api_version, max_concurrent_ops, timezone)
    values (p_code, p_domain, v_version, coalesce(p_max_concurrent_ops, bulk_sync.max_ops(v_version)),
            coalesce(p_timezone, 'UTC'));
    return p_code;
end;
$$;

-- Locks and returns a registered shop that is not being removed; raises BS002 (unknown) or BS012 (being removed).
create or replace function bulk_sync.shop_for_change(p_code text) returns bulk_sync.shops
language plpgsql as $$
declare
    v_shop bulk_sync.shops;
begin
    select * into v_shop from bulk_sync.shops where code = p_code for update;
    if not found then
        raise exception 'unknown shop: %', coalesce(p_code, 'NULL') using errcode = 'BS002',
            hint = 'register it with bulk_sync.add_shop()';
    end if;
    if v_shop.removal is not null then
        raise exception 'shop % is being removed', p_code using errcode = 'BS012';
    end if;
    return v_shop;
end;
$$;

-- True when the shop has anything of Shopify's: a job, or a row in one of the mirror's tables.
create or replace function bulk_sync.shop_has_data(p_code text) returns boolean
language plpgsql stable as $$
declare
    v_table regclass;
    v_found boolean;
begin
    if exists (select from bulk_sync.jobs where shop = p_code) then
        return true;
    end if;
    foreach v_table in array bulk_sync.mirror_tables() loop
        execute format('select exists (select from %s where shop = $1)', v_table) into v_found using p_code;
        if v_found then
            return true;
        end if;
    end loop;
    return false;
end;
$$;

-- The mirror's tables: bulk-sync's tables in schema shopify, each with a shop column.
create or replace function bulk_sync.mirror_tables() returns regclass[]
language sql stable as $$
    select array(
        select c.oid::regclass from pg_class as c
        where c.relnamespace = 'shopify'::regnamespace and c.relkind in ('r', 'p')
          and exists (select from pg_attribute where attrelid = c.oid and attname = 'shop' and not attisdropped)
        order by c.oid
    );
$$;

-- Changes only the values given of a registered shop; returns what changed, in words. A new domain is refused
-- (BS012) while the shop has data unless p_force: a shop's myshopify domain does not change, a new one is almost
-- always another shop. A new API version that allows fewer operations lowers max_concurrent_ops to fit.
create or replace function bulk_sync.update_shop(
    p_code text, p_domain text default null, p_api_version text default null,
    p_max_concurrent_ops integer default null, p_timezone text default null, p_force boolean default false
) returns text
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_old bulk_sync.shops := bulk_sync.shop_for_change(p_code);
    v_new bulk_sync.shops := v_old;
    v_changes text;
begin
    v_new.domain := coalesce(p_domain, v_old.domain);
    v_new.api_version := coalesce(p_api_version, v_old.api_version);
    v_new.timezone := coalesce(p_timezone, v_old.timezone);
    v_new.max_concurrent_ops := coalesce(p_max_concurrent_ops,
                                         least(v_old.max_concurrent_ops, bulk_sync.max_ops(v_new.api_version)));
    perform bulk_sync.check_shop(p_code, v_new.domain, v_new.api_version, v_new.max_concurrent_ops, v_new.timezone);
    perform bulk_sync.require_own_domain(p_code, v_new.domain);
    if v_new.domain <> v_old.domain and not coalesce(p_force, false) and bulk_sync.shop_has_data(p_code) then
        raise exception 'shop % has data from %: a new domain is almost always another shop; register % under a '
            'code of its own, or pass p_force => true if % really moved', p_code, v_old.domain, v_new.domain,
            v_old.domain using errcode = 'BS012';
    end if;
    select string_agg(format('%s %s -> %s', d.name, d.old, d.new), ', ') into v_changes
    from (values
        ('domain', v_old.domain, v_new.domain),
        ('api_version', v_old.api_version, v_new.api_version),
        ('max_concurrent_ops', v_old.max_concurrent_ops::text, v_new.max_concurrent_ops::text),
        ('time zone', v_old.timezone, v_new.timezone)
    ) as d (name, old, new)
    where d.old <> d.new;
    if v_changes is null then
        return format('shop %s unchanged', p_code);
    end if;
    update bulk_sync.shops
       set domain = v_new.domain, api_version = v_new.api_version, timezone = v_new.timezone,
           max_concurrent_ops = v_new.max_concurrent_ops, updated_at = now()
     where code = p_code;
    perform bulk_sync.dispatch();
    return format('shop %s: %s', p_code, v_changes);
end;
$$;

-- Pauses (p_active false) or resumes a shop: a paused shop starts no export (a start already handed out is put
-- back), while what Shopify already runs for it goes on; returns what it did, in words.
create or replace function bulk_sync.set_shop_active(p_code text, p_active boolean) returns text
language plpgsql as $$
declare
    v_shop bulk_sync.shops := bulk_sync.shop_for_change(p_code);
    v_live integer := (
        select count(*) from bulk_sync.jobs where shop = p_code and not status = any(bulk_sync.states('terminal'))
    );
begin
    update bulk_sync.shops set active = p_active, updated_at = now() where code = p_code;
    perform bulk_sync.dispatch();
    return format('shop %s %s%s', p_code,
                  case when v_shop.active = p_active then 'was already ' else '' end,
                  case when p_active then 'active'
                       else format('paused (%s live jobs: no export starts until resume_shop)', v_live) end);
end;
$$;

-- Pauses a shop (bulk_sync.set_shop_active).
create or replace function bulk_sync.pause_shop(p_code text) returns text
language sql
security definer set search_path = pg_catalog, pg_temp as $$
    select bulk_sync.set_shop_active(p_code, false);
$$;

-- Resumes a paused shop (bulk_sync.set_shop_active).
create or replace function bulk_sync.resume_shop(p_code text) returns text
language sql
security definer set search_path = pg_catalog, pg_temp as $$
    select bulk_sync.set_shop_active(p_code, true);
$$;

-- Removes a shop: pauses it, cancels its live jobs (a running Shopify operation gets a cancel task), and deletes it
-- with its jobs and history, and with p_delete_data its rows in shopify.*, as soon as no cancel of its operations
-- waits for a runner (else bulk_sync.tick finishes it); returns what it did, in words.
create or replace function bulk_sync.remove_shop(p_code text, p_delete_data boolean default false) returns text
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_canceled integer;
begin
    if p_delete_data is null then
        raise exception 'p_delete_data must be true or false' using errcode = 'BS005';
    end if;
    perform bulk_sync.shop_for_change(p_code);
    update bulk_sync.shops
       set active = false, removal = case when p_delete_data then 'delete data' else 'keep data' end,
           updated_at = now()
     where code = p_code;
    v_canceled := bulk_sync.for_jobs(p_code, bulk_sync.states('terminal', false), 'cancel');
    perform bulk_sync.finish_removals();
    if not exists (select from bulk_sync.shops where code = p_code) then
        return format('shop %s removed (%s jobs canceled, its data %s)', p_code, v_canceled,
                      case when p_delete_data then 'deleted' else 'kept in shopify.*' end);
    end if;
    return format('shop %s is being removed: %s jobs canceled; removed once a runner has asked Shopify to cancel '
                  'its running operations (bulk_sync.tick checks every minute)', p_code, v_canceled);
end;
$$;

-- Deletes the shops being removed that no cancel task waits for any more: their jobs, history, watermarks,
-- webhooks and messages, and their data when asked; returns how many.
create or replace function bulk_sync.finish_removals() returns integer
language plpgsql as $$
declare
    v_shop bulk_sync.shops;
    v_table regclass;
    v_count integer := 0;
begin
    for v_shop in
        select s.* from bulk_sync.shops as s
        where s.removal is not null
          and not exists (
              select from pgmq.q_bulk_sync as q
              inner join bulk_sync.jobs as j on j.id = bulk_sync.json_bigint(q.message -> 'job_id')
              where j.shop = s.code and q.message ->> 'task' = 'cancel'
          )
        for update skip locked
    loop
        perform pgmq.delete('bulk_sync', array(
            select q.msg_id from pgmq.q_bulk_sync as q
            inner join bulk_sync.jobs as j on j.id = bulk_sync.json_bigint(q.message -> 'job_id')
            where j.shop = v_shop.code
        ));
        delete from bulk_sync.jobs where shop = v_shop.code;
        delete from bulk_sync.watermarks where shop = v_shop.code;
        delete from bulk_sync.webhooks where shop = v_shop.code;
        if v_shop.removal = 'delete data' then
            foreach v_table in array bulk_sync.mirror_tables() loop
                execute format('delete from %s where shop = $1', v_table) using v_shop.code;
            end loop;
        end if;
        delete from bulk_sync.shops where code = v_shop.code;
        v_count := v_count + 1;
    end loop;
    return v_count;
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
-- plus one skus snapshot per shop; returns how many jobs it created (0 when everything is covered) and dispatches
-- what is due. Covered: by a job that answers for its window (completed, failed and live ones), or with p_resync
-- only by a live one, so that days already synced are exported again. Part of a day covered (a time-zone change, a
-- split) gets a job for the rest. Raises BS011 for days that start after tomorrow (no day of Shopify's yet).
create or replace function bulk_sync.enqueue_backfill(
    p_from date, p_to date,
    p_entities text[] default '{orders,refunds,skus}', p_shops text[] default null, p_resync boolean default false
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
    perform bulk_sync.check_entities(p_entities, '{orders,refunds,skus}');
    v_shops := bulk_sync.resolve_shops(p_shops);

    with days as (
        select s.code as shop, s.timezone, e.entity, e.filter_field, d::date as day,
               tstzrange(d::timestamp at time zone s.timezone,
                         (d + interval '1 day')::timestamp at time zone s.timezone) as whole
        from bulk_sync.shops as s
        cross join (values ('orders', 'created_at'), ('refunds', 'updated_at')) as e (entity, filter_field)
        cross join generate_series(p_from::timestamp, p_to::timestamp, interval '1 day') as d
        where s.code = any(v_shops) and e.entity = any(p_entities)
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
        select s.code, 'skus', null, null, null, null
        from bulk_sync.shops as s
        where s.code = any(v_shops) and 'skus' = any(p_entities)
          and not exists (
              select from bulk_sync.jobs as o
              where o.shop = s.code and o.entity = 'skus' and o.window_start is null
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

-- Cancels the live jobs among p_ids (oldest first) and dispatches into the slots that freed; returns how many.
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
    perform bulk_sync.dispatch();
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
        perform bulk_sync.check_entities(p_entities, '{orders,refunds,skus,order_ids}');
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
-- took (within tick_import_seconds), prune staging and the audit trail, finish removing shops.
create or replace function bulk_sync.tick() returns jsonb
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_recovered integer := bulk_sync.recover();
    v_dispatched integer := bulk_sync.dispatch();
    v_imported integer := bulk_sync.tick_import(make_interval(secs => (bulk_sync.get_settings()).tick_import_seconds));
    v_staging bigint := bulk_sync.prune_staging();
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
        'staging_lines_pruned', v_staging, 'audit_pruned', v_pruned, 'shops_removed', v_removed
    );
end;
$$;
