-- Right-sized operations. A backfill is queued as one job per day (the unit of planning and progress); when a job
-- is dispatched it absorbs the queued days that follow it, up to the size that fills the shop's concurrency with
-- few operations. Sizes are estimated from what the shop's earlier exports held (objects per second of window);
-- until a shop has a completed export of an entity, its days go one at a time and teach the estimate. An operation
-- that turns out far larger than planned is canceled and split, like a TIMEOUT (bulk_sync.report_poll_result).

-- Objects per second of window in the shop's recent finished backfill operations of an entity (incremental
-- windows, by updated_at and near now, say nothing of a backfill's days); null before the first one.
create or replace function bulk_sync.density(p_shop text, p_entity text) returns double precision
language sql stable as $$
    select sum(r.object_count)::double precision / nullif(sum(extract(epoch from r.window_end - r.window_start)), 0)
    from (
        select j.object_count, j.window_start, j.window_end
        from bulk_sync.jobs as j
        where j.shop = p_shop and j.entity = p_entity and j.operation_status = 'COMPLETED' and j.kind = 'backfill'
          and j.window_start is not null and j.object_count is not null
        order by j.updated_at desc
        limit 50
    ) as r;
$$;

-- Extends a due queued job over the untouched queued days that follow it while the estimate stays within p_target
-- objects; the absorbed jobs (never dispatched: no message, no operation) are deleted. Returns the job.
create or replace function bulk_sync.merge_following(p_job bulk_sync.jobs, p_density double precision, p_target double precision)
returns bulk_sync.jobs
language plpgsql as $$
declare
    v_next bulk_sync.jobs;
    v_end timestamptz := p_job.window_end;
    v_end_date date := p_job.end_date;
    v_absorbed bigint[] := '{}';
begin
    loop
        select * into v_next
        from bulk_sync.jobs as j
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
    delete from bulk_sync.jobs where id = any(v_absorbed);
    update bulk_sync.jobs set window_end = v_end, end_date = v_end_date where id = p_job.id
    returning * into p_job;
    perform bulk_sync.audit(p_job.id, 'dispatch', 'merged', 'queued', 'queued', p_job.fence,
        format('took over %s queued jobs (%s): window now [%s, %s), about %s objects', cardinality(v_absorbed),
               array_to_string(v_absorbed, ','), p_job.window_start, p_job.window_end,
               round(p_density * extract(epoch from p_job.window_end - p_job.window_start))));
    return p_job;
end;
$$;

-- Chooses the jobs a shop starts now (at most p_free): the entity with the fewest operations running goes first,
-- oldest job first within it, each merged up to the right size. Returns their ids in order.
create or replace function bulk_sync.pick_exports(p_shop text, p_free integer) returns bigint[]
language plpgsql as $$
declare
    v_s bulk_sync.settings := bulk_sync.get_settings();
    v_running jsonb;
    v_density jsonb;
    v_target double precision;
    v_slots integer;
    v_picked bigint[] := '{}';
    v_job bulk_sync.jobs;
begin
    select coalesce(jsonb_object_agg(entity, n), '{}') into v_running
    from (
        select entity, count(*) as n from bulk_sync.jobs
        where shop = p_shop and status = any(bulk_sync.states('holds_shop_slot')) group by entity
    ) as r;
    if v_s.window_sizing then
        -- The right size: what is left to export (queued, or being exported) spread evenly over the shop's slots,
        -- less those that snapshot jobs (skus: not windowed, small) will take, within the bounds.
        v_slots := (select max_concurrent_ops from bulk_sync.shops where code = p_shop)
            - (select count(*) from bulk_sync.jobs
               where shop = p_shop and window_start is null
                 and (status = 'queued' or status = any(bulk_sync.states('holds_shop_slot'))));
        select coalesce(jsonb_object_agg(d.entity, d.density) filter (where d.density is not null), '{}'),
               least(v_s.max_operation_objects, greatest(v_s.min_operation_objects,
                     sum(d.density * d.seconds) / greatest(1, v_slots)))
          into v_density, v_target
        from (
            select q.entity, bulk_sync.density(p_shop, q.entity) as density,
                   sum(extract(epoch from q.window_end - q.window_start)) as seconds
            from bulk_sync.jobs as q
            where q.shop = p_shop and q.window_start is not null
              and (q.status = 'queued' or q.status = any(bulk_sync.states('holds_shop_slot')))
            group by q.entity
        ) as d;
    end if;
    for i in 1..p_free loop
        select * into v_job
        from bulk_sync.jobs as j
        where j.shop = p_shop and j.status = 'queued' and j.next_attempt_at <= now() and j.id <> all(v_picked)
        order by coalesce((v_running ->> j.entity)::integer, 0), j.next_attempt_at, j.id
        limit 1
        for update skip locked;
        exit when not found;
        if v_density ? v_job.entity and v_job.attempts = 0 and v_job.parent_id is null then
            v_job := bulk_sync.merge_following(v_job, (v_density ->> v_job.entity)::double precision, v_target);
        end if;
        v_picked := v_picked || v_job.id;
        v_running := jsonb_set(v_running, array[v_job.entity],
                               to_jsonb(coalesce((v_running ->> v_job.entity)::integer, 0) + 1));
    end loop;
    return v_picked;
end;
$$;
