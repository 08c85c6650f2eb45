-- Shops: register, change, pause, resume and remove them. A shop is one myshopify domain; no token is kept here.

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
              select from bulk_sync.cancels as c
              inner join bulk_sync.jobs as j on c.job_id = j.id
              where j.shop = s.code
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
        delete from bulk_sync.fetched where shop = v_shop.code;
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
