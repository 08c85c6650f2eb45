-- Dispatch and claim: how due jobs get shop slots and how runners take work with a lease.
--
-- The locking rule, in one predicate: a job may hold shop slot n only while
--   status in ('starting', 'waiting')  and  no other such job of the shop holds n  and  1 <= n <= max_concurrent_ops,
-- guaranteed by the unique index bulk_sync_jobs_shop_slot; dispatchers of one shop are also serialised
-- by an advisory lock, so the index is a backstop that never fires in normal operation.

-- Gives free shop slots to due queued jobs (oldest first) and sends them a start task; returns how many.
create function bulk_sync_dispatch_exports() returns integer
language plpgsql as $$
declare
    v_shops text[];
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
    with capacity as (
        -- Slots above a lowered limit still count against it.
        select s.code, s.max_concurrent_ops as max_ops, s.max_concurrent_ops - count(a.id) as free
        from bulk_sync_shops as s
        left join bulk_sync_jobs as a on a.shop = s.code and a.status in ('starting', 'waiting')
        where s.code = any(v_shops)
        group by s.code, s.max_concurrent_ops
        having count(a.id) < s.max_concurrent_ops
    ),
    free_slot as (
        select c.code, n::smallint as slot, row_number() over (partition by c.code order by n) as rn
        from capacity as c
        cross join generate_series(1, 5) as n  -- constant bounds keep the row estimate small
        where n <= c.max_ops and not exists (
            select from bulk_sync_jobs as b
            where b.shop = c.code and b.slot = n and b.status in ('starting', 'waiting')
        )
    ),
    due as (
        select c.code, q.id, row_number() over (partition by c.code order by q.next_attempt_at, q.id) as rn
        from capacity as c
        cross join lateral (
            select j.id, j.next_attempt_at
            from bulk_sync_jobs as j
            where j.shop = c.code and j.status = 'queued' and j.next_attempt_at <= now()
            order by j.next_attempt_at, j.id
            limit c.free
            for update skip locked
        ) as q
    ),
    moved as (
        update bulk_sync_jobs as j
           set status = 'starting', slot = f.slot, fence = j.fence + 1, lease_expires_at = null, leased_by = null
          from due as d
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

-- Gives free import slots to copied jobs (oldest first) and sends them an import task; returns how many.
create function bulk_sync_dispatch_imports() returns integer
language plpgsql as $$
declare
    v_count integer;
begin
    if not exists (select from bulk_sync_jobs where status = 'copied' and next_attempt_at <= now())
       or not pg_try_advisory_xact_lock(hashtext('bulk_sync.dispatch'), 0) then
        return 0;
    end if;
    with settings as (
        select max_concurrent_imports as max_imports from bulk_sync_settings where id
    ),
    free_slot as (
        select n::smallint as slot, row_number() over (order by n) as rn
        from settings cross join generate_series(1, 64) as n  -- constant bounds keep the row estimate small
        where n <= settings.max_imports and not exists (
            select from bulk_sync_jobs as b
            where b.import_slot = n and b.status in ('ready_to_import', 'importing')
        )
    ),
    due as (
        select q.id, row_number() over (order by q.next_attempt_at, q.id) as rn
        from (
            select j.id, j.next_attempt_at
            from bulk_sync_jobs as j
            where j.status = 'copied' and j.next_attempt_at <= now()
            order by j.next_attempt_at, j.id
            limit (select count(*) from free_slot)
            for update skip locked
        ) as q
    ),
    moved as (
        update bulk_sync_jobs as j
           set status = 'ready_to_import', import_slot = f.slot, fence = j.fence + 1
          from due as d
          join free_slot as f on f.rn = d.rn
         where j.id = d.id
        returning j.id, j.fence, j.import_slot
    ),
    sent as (
        select bulk_sync_send(m.id, 'import', m.fence),
               bulk_sync_audit(m.id, 'dispatch', 'ok', 'copied', 'ready_to_import', m.fence,
                               format('import slot %s', m.import_slot))
        from moved as m
    )
    select count(*) into v_count from sent;
    return v_count;
exception when unique_violation then
    return 0;
end;
$$;

-- Dispatches every kind of due work; returns how many jobs were handed out.
create function bulk_sync_dispatch() returns integer
language sql as $$
    select bulk_sync_dispatch_exports() + bulk_sync_dispatch_imports();
$$;

-- Re-dispatches jobs whose runner vanished (lease expired); the vanished runner's fence is dead.
create function bulk_sync_recover() returns integer
language plpgsql as $$
declare
    v_job bulk_sync_jobs;
    v_count integer := 0;
begin
    for v_job in
        select * from bulk_sync_jobs
        where lease_expires_at < now()
        order by lease_expires_at
        for update skip locked
    loop
        perform bulk_sync_repeat(
            v_job, 'recover',
            format('lease of %s expired: runner vanished during %s',
                   coalesce(v_job.leased_by, 'a runner'), bulk_sync_task_for(v_job.status)),
            true, '0 s'
        );
        v_count := v_count + 1;
    end loop;
    return v_count;
end;
$$;

-- True when a claim would find something to do: a visible message, a dispatchable job or an expired lease.
create function bulk_sync_work_available() returns boolean
language sql stable as $$
    select exists (select from pgmq.q_bulk_sync where vt <= clock_timestamp())
        or exists (select from bulk_sync_jobs where lease_expires_at < now())
        or exists (
            select from bulk_sync_shops as s
            where s.active
              and exists (
                  select from bulk_sync_jobs as j
                  where j.shop = s.code and j.status = 'queued' and j.next_attempt_at <= now()
              )
              and (
                  select count(*) from bulk_sync_jobs as j
                  where j.shop = s.code and j.status in ('starting', 'waiting')
              ) < s.max_concurrent_ops
        )
        or (
            exists (select from bulk_sync_jobs where status = 'copied' and next_attempt_at <= now())
            and (
                select count(*) from bulk_sync_jobs where status in ('ready_to_import', 'importing')
            ) < (bulk_sync_settings()).max_concurrent_imports
        );
$$;

-- A JSON number that is a valid bigint, else null.
create function bulk_sync_json_bigint(p_value jsonb) returns bigint
language sql immutable as $$
    select case
        when jsonb_typeof(p_value) = 'number'
             and p_value::numeric between -9223372036854775808 and 9223372036854775807
             and p_value::numeric = trunc(p_value::numeric)
        then p_value::numeric::bigint
    end;
$$;

-- Takes up to p_qty tasks for worker p_worker, waiting up to p_wait_seconds for work to appear.
-- Each task is a jsonb object with everything the runner needs; its fence must accompany every report.
create function bulk_sync_claim(p_worker text, p_qty integer default 1, p_wait_seconds double precision default 0)
returns setof jsonb
language plpgsql as $$
declare
    v_deadline timestamptz := clock_timestamp() + make_interval(secs => least(greatest(p_wait_seconds, 0), 60));
    v_settings bulk_sync_settings := bulk_sync_settings();
    v_msg record;
    v_job bulk_sync_jobs;
    v_task text;
    v_fence bigint;
    v_expected text;
    v_read bigint[] := '{}';
begin
    if p_worker is null or p_worker !~ '^[A-Za-z0-9_.:@/-]{1,100}$' then
        raise exception 'invalid worker name %', coalesce(quote_literal(p_worker), 'NULL')
            using errcode = 'BS009';
    end if;
    if p_qty is null or p_qty not between 1 and 100 then
        raise exception 'p_qty must be between 1 and 100, got %', coalesce(p_qty::text, 'NULL')
            using errcode = 'BS009';
    end if;
    -- Wait without holding any lock (a visible message is the common, cheapest sign of work).
    if not exists (select from pgmq.q_bulk_sync where vt <= clock_timestamp()) then
        while clock_timestamp() < v_deadline and not bulk_sync_work_available() loop
            perform pg_sleep(0.1);
        end loop;
    end if;
    perform bulk_sync_recover();
    perform bulk_sync_dispatch();
    for v_msg in select * from pgmq.read('bulk_sync', v_settings.lease_seconds, p_qty) loop
        v_read := v_read || v_msg.msg_id;
        v_task := v_msg.message ->> 'task';
        v_fence := bulk_sync_json_bigint(v_msg.message -> 'fence');
        select * into v_job from bulk_sync_jobs
         where id = bulk_sync_json_bigint(v_msg.message -> 'job_id') and v_fence is not null
           for update;
        continue when not found;  -- a malformed message is dropped, never allowed to poison the queue
        v_expected := case v_task
            when 'start' then 'starting'
            when 'poll' then 'waiting'
            when 'download' then 'exporting'
            when 'import' then 'ready_to_import'
        end;
        if v_task = 'cancel' and v_msg.message ->> 'operation_id' ~ '^gid://shopify/BulkOperation/[0-9]+$' then
            -- Best effort, whatever the job does now: ask Shopify to stop an operation nobody waits for.
            return next jsonb_build_object('job_id', v_job.id, 'task', v_task, 'fence', v_job.fence,
                                           'shop', v_job.shop, 'operation_id', v_msg.message ->> 'operation_id')
                        || bulk_sync_shop_endpoint(v_job.shop);
            continue;
        end if;
        if v_job.fence is distinct from v_fence or v_job.status is distinct from v_expected then
            perform bulk_sync_audit(v_job.id, v_task, 'stale', v_job.status, v_job.status, v_fence,
                format('stale %s message dropped (message fence %s, job fence %s, status %s)',
                       v_task, v_fence, v_job.fence, v_job.status), p_worker);
            continue;
        end if;
        update bulk_sync_jobs
           set fence = fence + 1,
               status = case when status = 'ready_to_import' then 'importing' else status end,
               lease_expires_at = now() + make_interval(secs => v_settings.lease_seconds),
               leased_by = p_worker
         where id = v_job.id
        returning * into v_job;
        if v_task in ('start', 'import') then
            -- The steps with side effects worth accounting for (a Shopify operation, an import) log their claim.
            perform bulk_sync_audit(v_job.id, v_task, 'claimed', v_expected, v_job.status, v_job.fence,
                                    format('%s claimed by %s', v_task, p_worker), p_worker);
        end if;
        return next jsonb_build_object(
            'job_id', v_job.id, 'task', v_task, 'fence', v_job.fence, 'shop', v_job.shop,
            'entity', v_job.entity, 'filter_field', v_job.filter_field,
            'window_start', v_job.window_start, 'window_end', v_job.window_end,
            'operation_id', v_job.operation_id, 'object_count', v_job.object_count,
            'bytes_total', v_job.bytes_total, 'attempts', v_job.attempts,
            'lease_seconds', v_settings.lease_seconds,
            'query', case when v_task = 'start' then bulk_sync_bulk_query(v_job) end,
            'export_url', case when v_task = 'download' then v_job.export_url end
        ) || bulk_sync_shop_endpoint(v_job.shop);
    end loop;
    -- Consumed in this transaction: a claim that rolls back leaves its messages in the queue.
    if cardinality(v_read) > 0 then
        perform pgmq.delete('bulk_sync', v_read);
    end if;
end;
$$;

-- Where and how to reach a shop's Admin API (no secrets: tokens live only in the runner's environment).
create function bulk_sync_shop_endpoint(p_shop text) returns jsonb
language sql stable as $$
    select jsonb_build_object('domain', s.domain, 'api_version', s.api_version)
    from bulk_sync_shops as s where s.code = p_shop;
$$;

-- Extends the lease of a claimed task (and records download progress); false when the fence is stale.
create function bulk_sync_heartbeat(p_job_id bigint, p_fence bigint, p_bytes_copied bigint default null)
returns boolean
language sql as $$
    with extended as (
        update bulk_sync_jobs
           set lease_expires_at = now() + make_interval(secs => (bulk_sync_settings()).lease_seconds),
               bytes_copied = coalesce(p_bytes_copied, bytes_copied)
         where id = p_job_id and fence = p_fence and lease_expires_at is not null
        returning id
    )
    select exists (select from extended);
$$;
