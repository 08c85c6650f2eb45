-- Incremental sync: keep orders current after the backfill. Per shop a watermark says up to when its orders are
-- synced by updated_at; enqueue_incremental() (pg_cron) queues the window from the watermark (minus an overlap) to
-- now, and the watermark moves only across completed incremental windows that touch it, so a gap is impossible and
-- an overlap harmless (the newer version of an order wins). Refunds and edits change an order's updated_at, so they
-- arrive with it. A bulk_operations/finish webhook makes a job poll at once instead of at its next poll time.

alter table bulk_sync_settings
add column incremental_overlap_seconds integer not null default 300
check (incremental_overlap_seconds between 0 and 86400),
add column incremental_min_seconds integer not null default 60 check (incremental_min_seconds between 0 and 86400);

alter table bulk_sync_jobs
add column kind text not null default 'backfill' check (kind in ('backfill', 'incremental'));

-- Overlaps are refused among jobs still working only: an incremental window deliberately overlaps the completed
-- one before it. (enqueue_backfill skips days covered by completed or failed jobs itself.)
alter table bulk_sync_jobs drop constraint bulk_sync_jobs_no_overlap;
alter table bulk_sync_jobs add constraint bulk_sync_jobs_no_overlap exclude using gist (
    shop with =,
    entity with =,
    filter_field with =,
    tstzrange(window_start, window_end) with &&
) where (window_start is not null and status not in ('split', 'canceled', 'completed', 'failed'));

create table if not exists bulk_sync_watermarks (
    shop text not null references bulk_sync_shops (code),
    entity text not null check (entity = 'orders'),
    -- Every change to the shop's orders before this moment is imported.
    watermark timestamptz not null,
    updated_at timestamptz not null default now(),
    primary key (shop, entity)
);

-- Notifications already handled, by X-Shopify-Webhook-Id (Shopify retries a delivery for up to 48 hours).
create table if not exists bulk_sync_webhooks (
    webhook_id text primary key,
    shop text,
    operation_id text,
    outcome text not null,
    received_at timestamptz not null default now()
);

create index if not exists bulk_sync_webhooks_received on bulk_sync_webhooks (received_at);

-- bulk_sync_density's recent backfill operations, among however many incremental jobs a shop has run.
create index if not exists bulk_sync_jobs_density
on bulk_sync_jobs (shop, entity, updated_at desc)
where operation_status = 'COMPLETED' and kind = 'backfill' and window_start is not null;

-- Split halves inherit their parent's kind.
create function bulk_sync_jobs_inherit_kind() returns trigger
language plpgsql as $$
begin
    new.kind := (select p.kind from bulk_sync_jobs as p where p.id = new.parent_id);
    return new;
end;
$$;

create trigger bulk_sync_jobs_inherit_kind
before insert on bulk_sync_jobs
for each row when (new.parent_id is not null) execute function bulk_sync_jobs_inherit_kind();

-- Moves a shop's watermark across the completed incremental windows that touch it; returns the watermark.
create function bulk_sync_advance_watermark(p_shop text, p_entity text) returns timestamptz
language plpgsql as $$
declare
    v_mark timestamptz;
    v_next timestamptz;
begin
    select watermark into v_mark from bulk_sync_watermarks where shop = p_shop and entity = p_entity for update;
    if v_mark is null then
        return null;
    end if;
    loop
        select max(j.window_end) into v_next
        from bulk_sync_jobs as j
        where j.shop = p_shop and j.entity = p_entity and j.kind = 'incremental' and j.status = 'completed'
          and j.window_start <= v_mark and j.window_end > v_mark;
        exit when v_next is null;
        v_mark := v_next;
    end loop;
    update bulk_sync_watermarks set watermark = v_mark, updated_at = now()
    where shop = p_shop and entity = p_entity and watermark < v_mark;
    return v_mark;
end;
$$;

-- Advances the watermark when an incremental job completes (in the transaction that completes it).
create function bulk_sync_jobs_completed() returns trigger
language plpgsql as $$
begin
    perform bulk_sync_advance_watermark(new.shop, new.entity);
    return null;
end;
$$;

create trigger bulk_sync_jobs_completed
after update of status on bulk_sync_jobs
for each row when (new.status = 'completed' and new.kind = 'incremental')
execute function bulk_sync_jobs_completed();

-- Queues, per shop (null: every active one), the orders changed since its watermark (less the overlap) until now,
-- unless its previous incremental job is still working or less than incremental_min_seconds passed; a shop's first
-- watermark is p_since, else the end of its orders backfill, else now. Returns how many jobs it created.
create function enqueue_incremental(p_shops text[] default null, p_since timestamptz default null)
returns integer
language plpgsql as $$
declare
    v_s bulk_sync_settings := bulk_sync_settings();
    v_shop bulk_sync_shops;
    v_mark timestamptz;
    v_now timestamptz := date_trunc('second', now());
    v_job bulk_sync_jobs;
    v_count integer := 0;
begin
    if p_since > now() then
        raise exception 'p_since % is in the future', p_since using errcode = 'BS001';
    end if;
    for v_shop in
        select * from bulk_sync_shops where code = any(bulk_sync_resolve_shops(p_shops)) and active
        order by code
    loop
        insert into bulk_sync_watermarks (shop, entity, watermark)
        select v_shop.code, 'orders', coalesce(
            p_since,
            (select least(max(j.window_end), v_now) from bulk_sync_jobs as j
             where j.shop = v_shop.code and j.entity = 'orders' and j.kind = 'backfill'
               and j.status not in ('split', 'canceled')),
            v_now
        )
        on conflict (shop, entity) do nothing;
        v_mark := bulk_sync_advance_watermark(v_shop.code, 'orders');
        -- Twelve windows an hour add up: completed ones go after audit_retention_days (the watermark keeps their sum).
        delete from bulk_sync_jobs as j
        where j.shop = v_shop.code and j.kind = 'incremental' and j.status = 'completed'
          and j.finished_at < now() - make_interval(days => v_s.audit_retention_days);
        continue when v_now - v_mark < make_interval(secs => v_s.incremental_min_seconds)
            or exists (
                select from bulk_sync_jobs as j
                where j.shop = v_shop.code and j.kind = 'incremental'
                  and j.status not in ('completed', 'failed', 'split', 'canceled')
            );
        insert into bulk_sync_jobs (
            shop, entity, filter_field, window_start, window_end, start_date, end_date, max_attempts, kind
        )
        values (
            v_shop.code, 'orders', 'updated_at', v_mark - make_interval(secs => v_s.incremental_overlap_seconds),
            v_now, ((v_mark - make_interval(secs => v_s.incremental_overlap_seconds)) at time zone v_shop.timezone)::date,
            (v_now at time zone v_shop.timezone)::date, v_s.max_attempts, 'incremental'
        )
        returning * into v_job;
        perform bulk_sync_audit(v_job.id, 'enqueue', 'queued', null, 'queued', v_job.fence,
            format('incremental job created: orders updated in [%s, %s)', v_job.window_start, v_job.window_end));
        v_count := v_count + 1;
    end loop;
    perform bulk_sync_dispatch();
    return v_count;
end;
$$;

-- Handles a bulk_operations/finish notification once per webhook id: the job waiting for that operation is polled
-- at once. Returns 'polled', 'duplicate' or 'ignored' (no job waits for it: already polled, or not ours).
create function bulk_sync_webhook_finished(p_webhook_id text, p_shop_domain text, p_operation_id text)
returns text
language plpgsql as $$
declare
    v_shop text := (select code from bulk_sync_shops where domain = p_shop_domain);
    v_job bulk_sync_jobs;
    v_outcome text := 'ignored';
begin
    perform bulk_sync_require_text(p_webhook_id, 'webhook id');
    delete from bulk_sync_webhooks where received_at < now() - interval '3 days';
    insert into bulk_sync_webhooks (webhook_id, shop, operation_id, outcome)
    values (p_webhook_id, v_shop, left(p_operation_id, 200), 'received')
    on conflict (webhook_id) do nothing;
    if not found then
        return 'duplicate';
    end if;
    select * into v_job from bulk_sync_jobs
    where shop = v_shop and operation_id = p_operation_id and status = 'waiting'
    for update;
    if found then
        -- A poll now, with the job's fence: whichever poll message comes first is taken, the other is stale.
        perform bulk_sync_send(v_job.id, 'poll', v_job.fence);
        perform bulk_sync_audit(v_job.id, 'webhook', 'ok', 'waiting', 'waiting', v_job.fence,
                                'bulk_operations/finish received: polling now');
        v_outcome := 'polled';
    end if;
    update bulk_sync_webhooks set outcome = v_outcome where webhook_id = p_webhook_id;
    return v_outcome;
end;
$$;

-- Objects per second of window in the shop's recent finished backfill operations of an entity (incremental
-- windows, by updated_at and near now, say nothing of a backfill's days); null before the first one.
create or replace function bulk_sync_density(p_shop text, p_entity text) returns double precision
language sql stable as $$
    select sum(r.object_count)::double precision / nullif(sum(extract(epoch from r.window_end - r.window_start)), 0)
    from (
        select j.object_count, j.window_start, j.window_end
        from bulk_sync_jobs as j
        where j.shop = p_shop and j.entity = p_entity and j.operation_status = 'COMPLETED' and j.kind = 'backfill'
          and j.window_start is not null and j.object_count is not null
        order by j.updated_at desc
        limit 50
    ) as r;
$$;

-- Per shop and entity: how far its data is current (orders: the incremental watermark).
create view bulk_sync_freshness as
select
    s.code as shop,
    w.entity,
    w.watermark as synced_through,
    date_trunc('second', now() - w.watermark) as behind,
    w.updated_at
from bulk_sync_shops as s
inner join bulk_sync_watermarks as w on s.code = w.shop;

-- Progress per shop and entity; percent weighs jobs by the time their windows span (merged jobs cover many days);
-- synced_through and behind: the freshness of the shop's orders once incremental sync runs.
create or replace view bulk_sync_progress as
select
    j.shop,
    j.entity,
    count(*) as total,
    count(*) filter (where j.status = 'completed') as completed,
    count(*) filter (where j.status = 'failed') as failed,
    count(*) filter (where j.status = 'queued') as queued,
    count(*) filter (where j.status not in ('queued', 'completed', 'failed')) as active,
    round(
        100.0
        * coalesce(sum(extract(epoch from coalesce(j.window_end - j.window_start, interval '1 day'))) filter (
            where j.status = 'completed'
        ), 0)
        / sum(extract(epoch from coalesce(j.window_end - j.window_start, interval '1 day'))), 1
    ) as percent,
    coalesce(sum(j.lines_processed - j.lines_rejected), 0) as rows_imported,
    coalesce(sum(j.lines_rejected), 0) as rows_rejected,
    coalesce(sum(j.bytes_copied), 0) as bytes_copied,
    max(j.updated_at) as last_change,
    max(w.watermark) as synced_through,
    date_trunc('second', now() - max(w.watermark)) as behind
from bulk_sync_jobs as j
left join bulk_sync_watermarks as w on j.shop = w.shop and j.entity = w.entity
where j.status not in ('split', 'canceled')
group by j.shop, j.entity;

do $$
declare
    v_schema text := current_schema();
begin
    revoke execute on function bulk_sync_advance_watermark(text, text) from public;
    revoke execute on function bulk_sync_jobs_inherit_kind() from public;
    revoke execute on function bulk_sync_jobs_completed() from public;
    revoke execute on function enqueue_incremental(text[], timestamptz) from public;
    revoke execute on function bulk_sync_webhook_finished(text, text, text) from public;
    revoke execute on function bulk_sync_density(text, text) from public;
    execute format('alter function enqueue_incremental(text[], timestamptz) security definer '
                   'set search_path = %I, pg_temp', v_schema);
    execute format('alter function bulk_sync_webhook_finished(text, text, text) security definer '
                   'set search_path = %I, pg_temp', v_schema);
    grant execute on function enqueue_incremental(text[], timestamptz) to bulk_sync_operator;
    grant execute on function bulk_sync_webhook_finished(text, text, text) to bulk_sync_runner;
    grant select on bulk_sync_watermarks, bulk_sync_webhooks to bulk_sync_operator;
    grant select on bulk_sync_freshness to bulk_sync_operator, bulk_sync_reader;
end;
$$;
