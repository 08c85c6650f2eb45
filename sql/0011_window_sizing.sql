-- Right-sized operations. A backfill is queued as one job per day (the unit of planning and progress); when a job
-- is dispatched it absorbs the queued days that follow it, up to the size that fills the shop's concurrency with
-- few operations. Sizes are estimated from what the shop's earlier exports held (objects per second of window);
-- until a shop has a completed export of an entity, its days go one at a time and teach the estimate. An operation
-- that turns out far larger than planned is canceled and split, like a TIMEOUT.

alter table bulk_sync_settings
add column window_sizing boolean not null default true,
add column min_operation_objects bigint not null default 40000 check (min_operation_objects >= 0),
add column max_operation_objects bigint not null default 250000 check (max_operation_objects >= 1),
add column split_operation_objects bigint not null default 5000000 check (split_operation_objects >= 1000),
add constraint bulk_sync_settings_operation_objects check (min_operation_objects <= max_operation_objects);

-- Merging: the queued job whose window starts where another one's ends.
create index if not exists bulk_sync_jobs_next_window
on bulk_sync_jobs (shop, entity, window_start) where status = 'queued';

-- Objects per second of window in the shop's recent finished operations of an entity; null before the first one.
create function bulk_sync_density(p_shop text, p_entity text) returns double precision
language sql stable as $$
    select sum(r.object_count)::double precision / nullif(sum(extract(epoch from r.window_end - r.window_start)), 0)
    from (
        -- A COMPLETED operation's objectCount is final; its job may still be downloading or importing.
        select j.object_count, j.window_start, j.window_end
        from bulk_sync_jobs as j
        where j.shop = p_shop and j.entity = p_entity and j.operation_status = 'COMPLETED'
          and j.window_start is not null and j.object_count is not null
        order by j.updated_at desc
        limit 50
    ) as r;
$$;

-- Extends a due queued job over the untouched queued days that follow it while the estimate stays within p_target
-- objects; the absorbed jobs (never dispatched: no message, no operation) are deleted. Returns the job.
create function bulk_sync_merge_following(p_job bulk_sync_jobs, p_density double precision, p_target double precision)
returns bulk_sync_jobs
language plpgsql as $$
declare
    v_next bulk_sync_jobs;
    v_end timestamptz := p_job.window_end;
    v_end_date date := p_job.end_date;
    v_absorbed bigint[] := '{}';
begin
    loop
        select * into v_next
        from bulk_sync_jobs as j
        where j.shop = p_job.shop and j.entity = p_job.entity and j.status = 'queued'
          and j.window_start = v_end and j.filter_field = p_job.filter_field
          and j.next_attempt_at <= now() and j.fence = 1 and j.attempts = 0 and j.parent_id is null
        for update skip locked;
        -- Whole days only: take the next one while the target lies beyond its middle.
        exit when not found
            or p_density * (extract(epoch from v_next.window_end - p_job.window_start)
                            - extract(epoch from v_next.window_end - v_next.window_start) / 2) > p_target;
        v_absorbed := v_absorbed || v_next.id;
        v_end := v_next.window_end;
        v_end_date := v_next.end_date;
    end loop;
    if cardinality(v_absorbed) = 0 then
        return p_job;
    end if;
    delete from bulk_sync_jobs where id = any(v_absorbed);
    update bulk_sync_jobs set window_end = v_end, end_date = v_end_date where id = p_job.id
    returning * into p_job;
    perform bulk_sync_audit(p_job.id, 'dispatch', 'merged', 'queued', 'queued', p_job.fence,
        format('took over %s queued jobs (%s): window now [%s, %s), about %s objects', cardinality(v_absorbed),
               array_to_string(v_absorbed, ','), p_job.window_start, p_job.window_end,
               round(p_density * extract(epoch from p_job.window_end - p_job.window_start))));
    return p_job;
end;
$$;

-- Chooses the jobs a shop starts now (at most p_free): the entity with the fewest operations running goes first,
-- oldest job first within it, each merged up to the right size. Returns their ids in order.
create function bulk_sync_pick_exports(p_shop text, p_free integer) returns bigint[]
language plpgsql as $$
declare
    v_s bulk_sync_settings := bulk_sync_settings();
    v_running jsonb;
    v_density jsonb;
    v_target double precision;
    v_slots integer;
    v_picked bigint[] := '{}';
    v_job bulk_sync_jobs;
begin
    select coalesce(jsonb_object_agg(entity, n), '{}') into v_running
    from (
        select entity, count(*) as n from bulk_sync_jobs
        where shop = p_shop and status in ('starting', 'waiting') group by entity
    ) as r;
    if v_s.window_sizing then
        -- The right size: what is left to export (queued, or being exported) spread evenly over the shop's slots,
        -- less those that snapshot jobs (skus: not windowed, small) will take, within the bounds.
        v_slots := (select max_concurrent_ops from bulk_sync_shops where code = p_shop)
            - (select count(*) from bulk_sync_jobs
               where shop = p_shop and window_start is null and status in ('queued', 'starting', 'waiting'));
        select coalesce(jsonb_object_agg(d.entity, d.density) filter (where d.density is not null), '{}'),
               least(v_s.max_operation_objects, greatest(v_s.min_operation_objects,
                     sum(d.density * d.seconds) / greatest(1, v_slots)))
          into v_density, v_target
        from (
            select q.entity, bulk_sync_density(p_shop, q.entity) as density,
                   sum(extract(epoch from q.window_end - q.window_start)) as seconds
            from bulk_sync_jobs as q
            where q.shop = p_shop and q.status in ('queued', 'starting', 'waiting') and q.window_start is not null
            group by q.entity
        ) as d;
    end if;
    for i in 1..p_free loop
        select * into v_job
        from bulk_sync_jobs as j
        where j.shop = p_shop and j.status = 'queued' and j.next_attempt_at <= now() and j.id <> all(v_picked)
        order by coalesce((v_running ->> j.entity)::integer, 0), j.next_attempt_at, j.id
        limit 1
        for update skip locked;
        exit when not found;
        if v_density ? v_job.entity and v_job.attempts = 0 and v_job.parent_id is null then
            v_job := bulk_sync_merge_following(v_job, (v_density ->> v_job.entity)::double precision, v_target);
        end if;
        v_picked := v_picked || v_job.id;
        v_running := jsonb_set(v_running, array[v_job.entity],
                               to_jsonb(coalesce((v_running ->> v_job.entity)::integer, 0) + 1));
    end loop;
    return v_picked;
end;
$$;

-- Gives free shop slots to the jobs bulk_sync_pick_exports chooses and sends them a start task; returns how many.
create or replace function bulk_sync_dispatch_exports() returns integer
language plpgsql as $$
declare
    v_shops text[];
    v_free record;
    v_due_shop text[] := '{}';
    v_due_id bigint[] := '{}';
    v_due_rn bigint[] := '{}';
    v_ids bigint[];
    v_count integer;
begin
    -- Serialise dispatchers per shop; the next statement's snapshot sees every earlier dispatch of these shops.
    v_shops := array(
        select s.code
        from bulk_sync_shops as s
        where s.active
          and exists (
              select from bulk_sync_jobs as q
              where q.shop = s.code and q.status = 'queued' and q.next_attempt_at <= now()
          )
          and pg_try_advisory_xact_lock(hashtext('bulk_sync.dispatch'), hashtext(s.code))
    );
    if cardinality(v_shops) = 0 then
        return 0;
    end if;
    -- Choose (and merge) first, in statements of their own: the dispatch below must see the merged windows.
    for v_free in
        select s.code, s.max_concurrent_ops - count(a.id) as free
        from bulk_sync_shops as s
        left join bulk_sync_jobs as a on a.shop = s.code and a.status in ('starting', 'waiting')
        where s.code = any(v_shops)
        group by s.code, s.max_concurrent_ops
        having count(a.id) < s.max_concurrent_ops  -- slots above a lowered limit still count against it
    loop
        v_ids := bulk_sync_pick_exports(v_free.code, v_free.free::integer);
        v_due_shop := v_due_shop || array_fill(v_free.code, array[cardinality(v_ids)]);
        v_due_id := v_due_id || v_ids;
        v_due_rn := v_due_rn || array(select generate_series(1, cardinality(v_ids))::bigint);
    end loop;
    if cardinality(v_due_id) = 0 then
        return 0;
    end if;
    with free_slot as (
        select s.code, n::smallint as slot, row_number() over (partition by s.code order by n) as rn
        from bulk_sync_shops as s
        cross join generate_series(1, 5) as n  -- constant bounds keep the row estimate small
        where s.code = any(v_shops) and n <= s.max_concurrent_ops and not exists (
            select from bulk_sync_jobs as b
            where b.shop = s.code and b.slot = n and b.status in ('starting', 'waiting')
        )
    ),
    moved as (
        update bulk_sync_jobs as j
           set status = 'starting', slot = f.slot, fence = j.fence + 1, lease_expires_at = null, leased_by = null
          from unnest(v_due_shop, v_due_id, v_due_rn) as d (code, id, rn)
          join free_slot as f on f.code = d.code and f.rn = d.rn
         where j.id = d.id
        returning j.id, j.fence, j.slot
    ),
    sent as (
        select bulk_sync_send(m.id, 'start', m.fence),
               bulk_sync_audit(m.id, 'dispatch', 'ok', 'queued', 'starting', m.fence, format('shop slot %s', m.slot))
        from moved as m
    )
    select count(*) into v_count from sent;
    return v_count;
exception when unique_violation then
    -- Another dispatcher took a slot first: nothing to dispatch now.
    return 0;
end;
$$;

-- Shopify's answer to a poll of the job's operation: status, errorCode, objectCount, fileSize and url.
create or replace function report_poll_result(
    p_job_id bigint, p_fence bigint, p_status text, p_error_code text default null,
    p_object_count bigint default null, p_file_size bigint default null, p_url text default null
) returns boolean
language plpgsql as $$
declare
    v_job bulk_sync_jobs;
    v_s bulk_sync_settings := bulk_sync_settings();
begin
    if p_status is null or p_status not in
       ('CREATED', 'RUNNING', 'CANCELING', 'COMPLETED', 'FAILED', 'CANCELED', 'EXPIRED') then
        raise exception 'unknown bulk operation status %', coalesce(quote_literal(p_status), 'NULL')
            using errcode = 'BS009';
    end if;
    if p_object_count < 0 or p_file_size < 0 then
        raise exception 'object count and file size must not be negative' using errcode = 'BS009';
    end if;
    if p_url !~ '^https?://' then
        raise exception 'export url must be an http(s) URL' using errcode = 'BS009';
    end if;
    v_job := bulk_sync_fenced(p_job_id, p_fence, '{waiting}', 'poll');
    if v_job is null then
        return false;
    end if;
    if p_status in ('CREATED', 'RUNNING') and now() - v_job.operation_started_at
       > make_interval(secs => v_s.max_operation_seconds) then
        -- Too long: cancel it and export the window in halves (or again, when it cannot be split).
        perform bulk_sync_send_cancel(v_job.id, v_job.operation_id);
        perform bulk_sync_split(v_job, 'poll', format('operation still %s after %s s (max_operation_seconds)',
                                                     p_status, v_s.max_operation_seconds));
    elsif p_status = 'RUNNING' and p_object_count > v_s.split_operation_objects
          and v_job.window_end - v_job.window_start >= make_interval(secs => 2 * v_s.min_split_seconds) then
        -- Far larger than planned (a busy stretch): cancel it and export the window in halves.
        perform bulk_sync_send_cancel(v_job.id, v_job.operation_id);
        perform bulk_sync_split(v_job, 'poll', format('operation at %s objects, over split_operation_objects (%s)',
                                                     p_object_count, v_s.split_operation_objects));
    elsif p_status in ('CREATED', 'RUNNING', 'CANCELING') then
        update bulk_sync_jobs
           set operation_status = p_status, object_count = coalesce(p_object_count, object_count)
         where id = v_job.id
        returning * into v_job;
        perform bulk_sync_repeat(v_job, 'poll',
            format('operation %s, %s objects', p_status, coalesce(p_object_count::text, '?')), false,
            least(make_interval(secs => v_s.poll_interval_max_seconds),
                  greatest(make_interval(secs => v_s.poll_interval_seconds),
                           (now() - v_job.operation_started_at) / 10)));
        return true;
    elsif p_status = 'COMPLETED' and p_url is not null then
        update bulk_sync_jobs
           set status = 'exporting', slot = null, operation_status = p_status, object_count = p_object_count,
               bytes_total = p_file_size, export_url = p_url,
               fence = fence + 1, lease_expires_at = null, leased_by = null
         where id = v_job.id
        returning * into v_job;
        perform bulk_sync_send(v_job.id, 'download', v_job.fence);
        perform bulk_sync_audit(v_job.id, 'poll', 'ok', 'waiting', 'exporting', v_job.fence,
            format('operation COMPLETED: %s objects, %s bytes', p_object_count, p_file_size));
    elsif p_status = 'COMPLETED' and coalesce(p_object_count, 0) = 0 then
        update bulk_sync_jobs
           set status = 'completed', slot = null, operation_status = p_status, object_count = 0,
               lines_total = 0, lines_processed = 0, bytes_total = 0,
               fence = fence + 1, lease_expires_at = null, leased_by = null
         where id = v_job.id
        returning * into v_job;
        perform bulk_sync_audit(v_job.id, 'poll', 'ok', 'waiting', 'completed', v_job.fence,
                                'operation COMPLETED with no objects');
    elsif p_status = 'COMPLETED' then
        perform bulk_sync_requeue(v_job, 'poll',
            format('operation COMPLETED with %s objects but no download URL', p_object_count));
    elsif p_status = 'FAILED' and p_error_code = 'ACCESS_DENIED' then
        perform bulk_sync_fail(v_job, 'poll',
            'operation FAILED with ACCESS_DENIED: the app lacks an access scope this query needs');
    elsif p_status = 'FAILED' and p_error_code = 'TIMEOUT' then
        perform bulk_sync_split(v_job, 'poll', 'operation FAILED with TIMEOUT');
    else
        perform bulk_sync_requeue(v_job, 'poll', format('operation %s%s', p_status,
            case when p_status = 'FAILED' then ' with ' || coalesce(p_error_code, 'no error code') else '' end));
    end if;
    perform bulk_sync_dispatch_exports();  -- the shop slot was released
    return true;
end;
$$;

-- Progress per shop and entity; percent weighs jobs by the time their windows span (merged jobs cover many days).
create or replace view bulk_sync_progress as
select
    shop,
    entity,
    count(*) as total,
    count(*) filter (where status = 'completed') as completed,
    count(*) filter (where status = 'failed') as failed,
    count(*) filter (where status = 'queued') as queued,
    count(*) filter (where status not in ('queued', 'completed', 'failed')) as active,
    round(
        100.0
        * coalesce(sum(extract(epoch from coalesce(window_end - window_start, interval '1 day'))) filter (
            where status = 'completed'
        ), 0)
        / sum(extract(epoch from coalesce(window_end - window_start, interval '1 day'))), 1
    ) as percent,
    coalesce(sum(lines_processed - lines_rejected), 0) as rows_imported,
    coalesce(sum(lines_rejected), 0) as rows_rejected,
    coalesce(sum(bytes_copied), 0) as bytes_copied,
    max(updated_at) as last_change
from bulk_sync_jobs
where status not in ('split', 'canceled')
group by shop, entity;

do $$
begin
    -- New helpers are nobody's entry point; replaced entry points keep running as their owner.
    revoke execute on function bulk_sync_density(text, text) from public;
    revoke execute on function bulk_sync_merge_following(bulk_sync_jobs, double precision, double precision)
    from public;
    revoke execute on function bulk_sync_pick_exports(text, integer) from public;
    execute format(
        'alter function report_poll_result(bigint, bigint, text, text, bigint, bigint, text) '
        'security definer set search_path = %I, pg_temp', current_schema()
    );
end;
$$;
