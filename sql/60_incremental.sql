-- Incremental sync: keep orders current after the backfill. Per shop a watermark says up to when its orders are
-- synced by updated_at; enqueue_incremental() (pg_cron) queues the window from the watermark (minus an overlap) to
-- now, and the watermark moves only across completed incremental windows that touch it, so a gap is impossible and
-- an overlap harmless (the newer version of an order wins). Refunds and edits change an order's updated_at, so they
-- arrive with it.

-- Split halves inherit their parent's kind.
create or replace function bulk_sync.jobs_inherit_kind() returns trigger
language plpgsql as $$
begin
    new.kind := (select p.kind from bulk_sync.jobs as p where p.id = new.parent_id);
    return new;
end;
$$;

-- Here, not in 10_state_machine.sql: the job kinds (backfill, incremental) are this file's idea.
create or replace trigger jobs_inherit_kind
before insert on bulk_sync.jobs
for each row when (new.parent_id is not null) execute function bulk_sync.jobs_inherit_kind();

-- Moves a shop's watermark across the completed incremental windows that touch it; returns the watermark.
create or replace function bulk_sync.advance_watermark(p_shop text, p_entity text) returns timestamptz
language plpgsql as $$
declare
    v_mark timestamptz;
    v_next timestamptz;
begin
    select watermark into v_mark from bulk_sync.watermarks where shop = p_shop and entity = p_entity for update;
    if v_mark is null then
        return null;
    end if;
    loop
        select max(j.window_end) into v_next
        from bulk_sync.jobs as j
        where j.shop = p_shop and j.entity = p_entity and j.kind = 'incremental' and j.status = 'completed'
          and j.window_start <= v_mark and j.window_end > v_mark;
        exit when v_next is null;
        v_mark := v_next;
    end loop;
    update bulk_sync.watermarks set watermark = v_mark, updated_at = now()
    where shop = p_shop and entity = p_entity and watermark < v_mark;
    return v_mark;
end;
$$;

-- Advances the watermark when an incremental job completes (in the transaction that completes it).
create or replace function bulk_sync.jobs_completed() returns trigger
language plpgsql as $$
begin
    perform bulk_sync.advance_watermark(new.shop, new.entity);
    return null;
end;
$$;

-- Here, not in 10_state_machine.sql: it moves the watermark, this file's table, when an incremental job completes.
create or replace trigger jobs_completed
after update of status on bulk_sync.jobs
for each row when (new.status = 'completed' and new.kind = 'incremental')
execute function bulk_sync.jobs_completed();

-- Queues, per shop (null: every active one) and entity kept current (bulk_sync.entities.incremental: orders), what
-- changed since its watermark (less the overlap) until now, unless its previous incremental job is still working or
-- less than incremental_min_seconds passed; a first watermark is p_since, else the end of the entity's backfill, else
-- now. Returns how many jobs it created.
create or replace function bulk_sync.enqueue_incremental(p_shops text[] default null, p_since timestamptz default null)
returns integer
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_s bulk_sync.settings := bulk_sync.get_settings();
    v_shop bulk_sync.shops;
    v_entity text;
    v_mark timestamptz;
    v_now timestamptz := date_trunc('second', now());
    v_job bulk_sync.jobs;
    v_count integer := 0;
begin
    if p_since > now() then
        raise exception 'p_since % is in the future', p_since using errcode = 'BS001';
    end if;
    for v_shop in
        select * from bulk_sync.shops where code = any(bulk_sync.resolve_shops(p_shops)) and active
        order by code
    loop
        for v_entity in select entity from bulk_sync.entities where incremental order by position loop
            insert into bulk_sync.watermarks (shop, entity, watermark)
            select v_shop.code, v_entity, coalesce(
                p_since,
                (select least(max(j.window_end), v_now) from bulk_sync.jobs as j
                 where j.shop = v_shop.code and j.entity = v_entity and j.kind = 'backfill'
                   and not j.status = any(bulk_sync.states('covers_window', false))),
                v_now
            )
            on conflict (shop, entity) do nothing;
            v_mark := bulk_sync.advance_watermark(v_shop.code, v_entity);
            -- Twelve windows an hour add up: completed ones go after audit_retention_days (the watermark keeps their
            -- sum).
            delete from bulk_sync.jobs as j
            where j.shop = v_shop.code and j.entity = v_entity and j.kind = 'incremental' and j.status = 'completed'
              and j.finished_at < now() - make_interval(days => v_s.audit_retention_days);
            continue when v_now - v_mark < make_interval(secs => v_s.incremental_min_seconds)
                or exists (
                    select from bulk_sync.jobs as j
                    where j.shop = v_shop.code and j.entity = v_entity and j.kind = 'incremental'
                      and not j.status = any(bulk_sync.states('terminal'))
                );
            insert into bulk_sync.jobs (
                shop, entity, filter_field, window_start, window_end, start_date, end_date, max_attempts, kind
            )
            values (
                v_shop.code, v_entity, 'updated_at', v_mark - make_interval(secs => v_s.incremental_overlap_seconds),
                v_now,
                ((v_mark - make_interval(secs => v_s.incremental_overlap_seconds)) at time zone v_shop.timezone)::date,
                (v_now at time zone v_shop.timezone)::date, v_s.max_attempts, 'incremental'
            )
            returning * into v_job;
            perform bulk_sync.audit(v_job.id, 'enqueue', 'queued', null, 'queued', v_job.fence,
                format('incremental job created: %s updated in [%s, %s)',
                       v_entity, v_job.window_start, v_job.window_end));
            v_count := v_count + 1;
        end loop;
    end loop;
    return v_count;
end;
$$;
