-- Deletions: the mirror holds exactly what the shops hold. A complete snapshot (SKUs, products) marks the rows it
-- lacks; an ids-only export (an entity without tables, queued by enqueue_reconcile: order_ids by day of creation,
-- customer_ids of the whole shop) marks the rows of its window it lacks and queues a normal export of the days where
-- it found rows missing or older; deletion webhooks mark at once.
-- A deletion found by an export applies only to rows last imported from an export that started before it; deleted_at
-- is the start of that export (or a webhook's arrival). shopify.live_* (sql/80_views.sql) is what the shops hold now.

-- Runs what a completed export settles beyond its rows: deletions and gaps, by what its entity is
-- (bulk_sync.entities): an export of nothing but ids (reconciliation), or a snapshot.
create or replace function bulk_sync.export_complete(p_job bulk_sync.jobs) returns void
language plpgsql as $$
begin
    if not exists (select from bulk_sync.written_tables(p_job.entity)) then
        perform bulk_sync.complete_reconcile(p_job);
    elsif (select snapshot from bulk_sync.entities where entity = p_job.entity) then
        perform bulk_sync.complete_snapshot(p_job);
    end if;
end;
$$;

-- Marks deleted the rows of the shop's shopify.<root table of the job's entity>, within the job's window when it
-- has one, that its completed export did not hold (unless a newer export imported them); returns how many.
create or replace function bulk_sync.mark_missing(p_job bulk_sync.jobs) returns integer
language plpgsql as $$
declare
    v_count integer;
begin
    execute format(
        'update shopify.%I as s
            set deleted_at = $1.operation_started_at
          where s.shop = $1.shop and s.deleted_at is null %s
            and s.import_job <> $1.id  -- written by this export: in it
            and not exists (select from bulk_sync.import_roots as r where r.job_id = $1.id and r.gid = s.id)
            and not exists (
                select from bulk_sync.jobs as i
                where i.id = s.import_job and i.operation_started_at > $1.operation_started_at
            )',
        bulk_sync.root_table(p_job.entity),
        case when p_job.window_start is not null
             then format('and s.%1$I >= $1.window_start and s.%1$I < $1.window_end', p_job.filter_field) end)
    using p_job;
    get diagnostics v_count = row_count;
    return v_count;
end;
$$;

-- Marks deleted the rows of the snapshot's root table (skus, products) of the shop that a completed snapshot did not
-- hold, and says so.
create or replace function bulk_sync.complete_snapshot(p_job bulk_sync.jobs) returns void
language plpgsql as $$
declare
    v_count integer := bulk_sync.mark_missing(p_job);
begin
    if v_count > 0 then
        perform bulk_sync.audit(p_job.id, 'deletions', 'ok', 'completed', 'completed', p_job.fence,
            format('%s rows of shopify.%s not in the snapshot marked deleted', v_count,
                   bulk_sync.root_table(p_job.entity)));
    end if;
end;
$$;

-- Settles a completed ids-only export: the rows of its window (a whole shop's: none) it lacks are marked deleted, and
-- each day with a root the mirror lacks, holds older or holds as deleted gets a normal export of the entity that
-- writes those rows, a window of its backfill field (orders by creation, customers by update): a gap found is a gap
-- filled.
create or replace function bulk_sync.complete_reconcile(p_job bulk_sync.jobs) returns void
language plpgsql as $$
declare
    v_table text := bulk_sync.root_table(p_job.entity);
    v_deleted integer := bulk_sync.mark_missing(p_job);
    v_tz text := (select timezone from bulk_sync.shops where code = p_job.shop);
    v_data bulk_sync.entities;
    v_gap record;
    v_days integer := 0;
begin
    select e.* into strict v_data
    from bulk_sync.entities as e
    inner join bulk_sync.entity_tables as t on e.entity = t.entity
    where t.table_name = v_table and e.backfill_field is not null;
    for v_gap in execute format(
        'insert into bulk_sync.jobs as j (
             shop, entity, filter_field, window_start, window_end, start_date, end_date, max_attempts
         )
         select $1.shop, $2.entity, $2.backfill_field, d.day::timestamp at time zone $3,
                (d.day + 1)::timestamp at time zone $3, d.day, d.day, $1.max_attempts
         from (
             select distinct (r.%1$I at time zone $3)::date as day
             from bulk_sync.import_roots as r
             where r.job_id = $1.id and not r.accepted and r.%1$I is not null
         ) as d
         order by d.day
         on conflict do nothing  -- a live export of that day will bring the row
         returning j.id, j.fence, j.window_start', v_data.backfill_field)
    using p_job, v_data, v_tz
    loop
        perform bulk_sync.audit(v_gap.id, 'reconcile', 'queued', null, 'queued', v_gap.fence,
            format('reconciliation job %s found %s missing or older on %s', p_job.id, v_table, v_gap.window_start));
        v_days := v_days + 1;
    end loop;
    perform bulk_sync.audit(p_job.id, 'reconcile', 'ok', 'completed', 'completed', p_job.fence,
        format('%s %s no longer in Shopify marked deleted; %s days queued for export again', v_deleted, v_table,
               v_days));
end;
$$;

-- Queues the shops' reconciliations, ids-only exports (bulk_sync.entities that write no table): of order_ids the
-- orders created on every day of [p_from, p_to] (whole days in each shop's time zone; merged into right-sized
-- operations when dispatched), of a whole-shop one (customer_ids: a customer is deleted whatever its age) one job per
-- shop; except what a live reconciliation covers already. Returns how many jobs it created.
create or replace function bulk_sync.enqueue_reconcile(p_from date, p_to date, p_shops text[] default null)
returns integer
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_s bulk_sync.settings := bulk_sync.get_settings();
    v_count integer;
begin
    perform bulk_sync.require_days(p_from, p_to);
    -- Completed reconciliations add up week after week: they go after audit_retention_days.
    delete from bulk_sync.jobs as j
    where not exists (select from bulk_sync.entity_tables as t where t.entity = j.entity)
      and j.status = any(bulk_sync.states('final'))
      and j.finished_at < now() - make_interval(days => v_s.audit_retention_days);
    with reconciling as (
        -- the shops asked for, each with every ids-only entity
        select s.code as shop, s.timezone, e.entity, e.snapshot
        from bulk_sync.shops as s
        cross join bulk_sync.entities as e
        where s.code = any(bulk_sync.resolve_shops(p_shops))
          and not exists (select from bulk_sync.entity_tables as t where t.entity = e.entity)
    ),
    wanted as (
        select r.shop, r.entity, 'created_at' as filter_field,
               d::timestamp at time zone r.timezone as window_start,
               (d + interval '1 day')::timestamp at time zone r.timezone as window_end, d::date as start_date,
               d::date as end_date
        from reconciling as r
        cross join generate_series(p_from::timestamp, p_to::timestamp, interval '1 day') as d
        where not r.snapshot
        union all
        select r.shop, r.entity, null, null, null, p_from, p_to
        from reconciling as r
        where r.snapshot
          and not exists (
              select from bulk_sync.jobs as o
              where o.shop = r.shop and o.entity = r.entity and not o.status = any(bulk_sync.states('terminal'))
          )
    ),
    created as (
        insert into bulk_sync.jobs as j (
            shop, entity, filter_field, window_start, window_end, start_date, end_date, max_attempts
        )
        select w.shop, w.entity, w.filter_field, w.window_start, w.window_end, w.start_date, w.end_date,
               v_s.max_attempts
        from wanted as w
        order by w.shop, w.entity, w.window_start
        on conflict do nothing  -- a live reconciliation of that day is already queued
        returning j.id, j.fence
    )
    select count(*) into v_count
    from (
        select bulk_sync.audit(c.id, 'enqueue', 'queued', null, 'queued', c.fence, 'reconciliation job created')
        from created as c
    ) as a;
    return v_count;
end;
$$;

-- True when a delivery triggered at p_at is newer than a row that job p_job imported: the export that wrote the row
-- started before the delivery was triggered (a row whose job is gone counts as older).
create or replace function bulk_sync.delivery_newer(p_job bigint, p_at timestamptz) returns boolean
language sql stable as $$
    select not exists (select from bulk_sync.jobs where id = p_job and operation_started_at >= p_at);
$$;

-- p_text as a timestamptz, or null when it is missing or not a time.
create or replace function bulk_sync.to_time(p_text text) returns timestamptz
language plpgsql immutable as $$
begin
    return p_text::timestamptz;
exception when others then
    return null;
end;
$$;

-- Marks the row p_id of the shop's shopify.<p_table> deleted when the delivery (at p_at) is newer than the export that
-- wrote it (bulk_sync.delivery_newer); returns how many rows it marked and how many it left alive as stale.
create or replace function bulk_sync.mark_deleted(
    p_table text, p_id text, p_shop text, p_at timestamptz, out marked integer, out stale integer
)
language plpgsql as $$
begin
    execute format(
        'update shopify.%I as r set deleted_at = now()
         where r.id = $1 and r.shop = $2 and r.deleted_at is null and bulk_sync.delivery_newer(r.import_job, $3)',
        p_table)
    using p_id, p_shop, p_at;
    get diagnostics marked = row_count;
    execute format('select count(*) from shopify.%I where id = $1 and shop = $2 and deleted_at is null', p_table)
    into stale using p_id, p_shop;
end;
$$;

-- Writes a products/update's product (REST names: title, handle, product_type, vendor, status in lower case, tags as
-- one comma-separated string, published_at; a field absent leaves its column) into the shop's stored product when the
-- payload's updated_at is newer than the stored one and the delivery (at p_at) newer than the export that wrote the
-- row, and its title into its variants' product_title; returns whether it did. raw keeps the exported line until the
-- next export.
create or replace function bulk_sync.refresh_product(p_shop text, p_id text, p_payload jsonb, p_at timestamptz)
returns boolean
language plpgsql as $$
declare
    v_updated timestamptz := bulk_sync.to_time(p_payload ->> 'updated_at');
begin
    update shopify.products as p
       set title = coalesce(p_payload ->> 'title', p.title),
           handle = coalesce(p_payload ->> 'handle', p.handle),
           product_type = coalesce(p_payload ->> 'product_type', p.product_type),
           vendor = coalesce(p_payload ->> 'vendor', p.vendor),
           status = coalesce(upper(p_payload ->> 'status'), p.status),
           tags = case when p_payload ? 'tags' then array(
                      select btrim(t) from unnest(string_to_array(p_payload ->> 'tags', ',')) as t
                      where btrim(t) <> ''
                  ) else p.tags end,
           published_at = case when p_payload ? 'published_at' then bulk_sync.to_time(p_payload ->> 'published_at')
                               else p.published_at end,
           updated_at = v_updated
     where p.id = p_id and p.shop = p_shop and p.deleted_at is null
       and v_updated > p.updated_at and bulk_sync.delivery_newer(p.import_job, p_at);
    if not found then
        return false;
    end if;
    update shopify.skus as s set product_title = p_payload ->> 'title'
    where s.shop = p_shop and s.product_id = p_id and p_payload ? 'title'
      and s.product_title is distinct from p_payload ->> 'title';
    return true;
end;
$$;

-- Handles an orders/delete, customers/delete, products/delete or products/update notification once per webhook id:
-- marks the deleted order or customer, the product's variants (and the product), or the product's variants missing
-- from the payload and writes the changed product (bulk_sync.refresh_product). Shopify does not deliver in
-- order, so a delivery applies to a row only when it was triggered (p_triggered_at, X-Shopify-Triggered-At; null:
-- now) after the export that wrote the row started, and a products/update only when the product's updated_at in it
-- is newer than the stored one's (the variant's for deletions); the rows it leaves for those reasons are counted as
-- stale. Returns what it did.
create or replace function bulk_sync.webhook_deleted(
    p_webhook_id text, p_shop_domain text, p_topic text, p_payload jsonb, p_triggered_at timestamptz default null
) returns text
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_shop text := (select code from bulk_sync.shops where domain = p_shop_domain);
    v_at timestamptz := coalesce(p_triggered_at, now());
    v_updated timestamptz := bulk_sync.to_time(p_payload ->> 'updated_at');
    v_subject text;
    v_variants text[];
    v_count integer := 0;
    v_stale integer := 0;
    v_products integer := 0;
    v_outcome text;
begin
    if p_topic not in ('orders/delete', 'products/delete', 'products/update', 'customers/delete') then
        raise exception 'unknown deletion topic %', quote_literal(p_topic) using errcode = 'BS009';
    end if;
    v_subject := coalesce(
        p_payload ->> 'admin_graphql_api_id',
        case p_topic
            when 'orders/delete' then 'gid://shopify/Order/'
            when 'customers/delete' then 'gid://shopify/Customer/'
            else 'gid://shopify/Product/'
        end
        || (p_payload ->> 'id')
    );
    if not bulk_sync.webhook_received(p_webhook_id, v_shop, v_subject) then
        return 'duplicate';
    end if;
    if p_topic in ('orders/delete', 'customers/delete') then
        select d.marked, d.stale into v_count, v_stale
        from bulk_sync.mark_deleted(split_part(p_topic, '/', 1), v_subject, v_shop, v_at) as d;
        v_outcome := format('%s %s deleted', v_count,
                            case p_topic when 'orders/delete' then 'order' else 'customer' end);
    else
        v_variants := case when p_topic = 'products/update' then array(
            select coalesce(v ->> 'admin_graphql_api_id', 'gid://shopify/ProductVariant/' || (v ->> 'id'))
            from jsonb_array_elements(
                case jsonb_typeof(p_payload -> 'variants') when 'array' then p_payload -> 'variants' else '[]' end
            ) as v
        ) else '{}' end;
        -- products/update without a variants list says nothing about deletions
        if p_topic = 'products/delete' or jsonb_typeof(p_payload -> 'variants') = 'array' then
            update shopify.skus as s set deleted_at = now()
            where s.shop = v_shop and s.product_id = v_subject and s.deleted_at is null
              and not s.id = any(v_variants)
              and bulk_sync.delivery_newer(s.import_job, v_at)
              and (p_topic = 'products/delete' or v_updated > s.updated_at or s.updated_at is null);
            get diagnostics v_count = row_count;
            select count(*) into v_stale
            from shopify.skus
            where shop = v_shop and product_id = v_subject and deleted_at is null and not id = any(v_variants);
        end if;
        v_outcome := format('%s variants deleted', v_count);
        if p_topic = 'products/delete' then
            v_products := (bulk_sync.mark_deleted('products', v_subject, v_shop, v_at)).marked;
        elsif bulk_sync.refresh_product(v_shop, v_subject, p_payload, v_at) then
            v_outcome := v_outcome || '; the product updated';
        end if;
    end if;
    if v_stale > 0 then
        v_outcome := v_outcome || format(', %s ignored as stale (the delivery is older than the stored row)', v_stale);
    end if;
    if v_products > 0 then
        v_outcome := v_outcome || '; the product deleted';
    end if;
    update bulk_sync.webhooks set outcome = v_outcome where webhook_id = p_webhook_id;
    return v_outcome;
end;
$$;
