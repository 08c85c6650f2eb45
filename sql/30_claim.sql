-- Dispatch and claim: how due jobs get shop slots and how runners take work with a lease.
--
-- The locking rule, in one predicate: a job may hold shop slot n only while
--   status in ('starting', 'waiting')  and  no other such job of the shop holds n  and  1 <= n <= max_concurrent_ops,
-- guaranteed by the unique index jobs_shop_slot; dispatchers of one shop are also serialised by an advisory lock,
-- so the index is a backstop that never fires in normal operation. Import slots work the same way (jobs_import_slot).

-- Gives free shop slots to the jobs bulk_sync.pick_exports chooses and sends them a start task; returns how many.
create or replace function bulk_sync.dispatch_exports() returns integer
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
        from bulk_sync.shops as s
        where s.active
          and exists (
              select from bulk_sync.jobs as q
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
        from bulk_sync.shops as s
        left join bulk_sync.jobs as a on a.shop = s.code and a.status in ('starting', 'waiting')
        where s.code = any(v_shops)
        group by s.code, s.max_concurrent_ops
        having count(a.id) < s.max_concurrent_ops  -- slots above a lowered limit still count against it
    loop
        v_ids := bulk_sync.pick_exports(v_free.code, v_free.free::integer);
        v_due_shop := v_due_shop || array_fill(v_free.code, array[cardinality(v_ids)]);
        v_due_id := v_due_id || v_ids;
        v_due_rn := v_due_rn || array(select generate_series(1, cardinality(v_ids))::bigint);
    end loop;
    if cardinality(v_due_id) = 0 then
        return 0;
    end if;
    with free_slot as (
        select s.code, n::smallint as slot, row_number() over (partition by s.code order by n) as rn
        from bulk_sync.shops as s
        cross join generate_series(1, 5) as n  -- constant bounds keep the row estimate small
        where s.code = any(v_shops) and n <= s.max_concurrent_ops and not exists (
            select from bulk_sync.jobs as b
            where b.shop = s.code and b.slot = n and b.status in ('starting', 'waiting')
        )
    ),
    moved as (
        update bulk_sync.jobs as j
           set status = 'starting', slot = f.slot, fence = j.fence + 1, lease_expires_at = null, leased_by = null
          from unnest(v_due_shop, v_due_id, v_due_rn) as d (code, id, rn)
          join free_slot as f on f.code = d.code and f.rn = d.rn
         where j.id = d.id
        returning j.id, j.fence, j.slot
    ),
    sent as (
        select bulk_sync.send(m.id, 'start', m.fence),
               bulk_sync.audit(m.id, 'dispatch', 'ok', 'queued', 'starting', m.fence, format('shop slot %s', m.slot))
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
create or replace function bulk_sync.dispatch_imports() returns integer
language plpgsql as $$
declare
    v_count integer;
begin
    if not exists (select from bulk_sync.jobs where status = 'copied' and next_attempt_at <= now())
       or not pg_try_advisory_xact_lock(hashtext('bulk_sync.dispatch'), 0) then
        return 0;
    end if;
    with settings as (
        select max_concurrent_imports as max_imports from bulk_sync.settings where id
    ),
    free_slot as (
        select n::smallint as slot, row_number() over (order by n) as rn
        from settings cross join generate_series(1, 64) as n  -- constant bounds keep the row estimate small
        where n <= settings.max_imports and not exists (
            select from bulk_sync.jobs as b
            where b.import_slot = n and b.status in ('ready_to_import', 'importing')
        )
    ),
    due as (
        select q.id, row_number() over (order by q.next_attempt_at, q.id) as rn
        from (
            select j.id, j.next_attempt_at
            from bulk_sync.jobs as j
            where j.status = 'copied' and j.next_attempt_at <= now()
            order by j.next_attempt_at, j.id
            limit (select count(*) from free_slot)
            for update skip locked
        ) as q
    ),
    moved as (
        update bulk_sync.jobs as j
           set status = 'ready_to_import', import_slot = f.slot, fence = j.fence + 1
          from due as d
          join free_slot as f on f.rn = d.rn
         where j.id = d.id
        returning j.id, j.fence, j.import_slot
    ),
    sent as (
        select bulk_sync.send(m.id, 'import', m.fence),
               bulk_sync.audit(m.id, 'dispatch', 'ok', 'copied', 'ready_to_import', m.fence,
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
create or replace function bulk_sync.dispatch() returns integer
language sql as $$
    select bulk_sync.dispatch_exports() + bulk_sync.dispatch_imports();
$$;

-- Re-dispatches jobs whose runner vanished (lease expired); the vanished runner's fence is dead.
create or replace function bulk_sync.recover() returns integer
language plpgsql as $$
declare
    v_job bulk_sync.jobs;
    v_count integer := 0;
begin
    for v_job in
        select * from bulk_sync.jobs
        where lease_expires_at < now()
        order by lease_expires_at
        for update skip locked
    loop
        perform bulk_sync.repeat(
            v_job, 'recover',
            format('lease of %s expired: runner vanished during %s',
                   coalesce(v_job.leased_by, 'a runner'), bulk_sync.task_for(v_job.status)),
            true, '0 s'
        );
        v_count := v_count + 1;
    end loop;
    return v_count;
end;
$$;

-- True when the shop has fewer jobs holding slots than it may.
create or replace function bulk_sync.has_free_slot(p_shop text) returns boolean
language sql stable as $$
    select count(*) < (select max_concurrent_ops from bulk_sync.shops where code = p_shop)
    from bulk_sync.jobs where shop = p_shop and status in ('starting', 'waiting');
$$;

-- True when fewer imports run than max_concurrent_imports allows.
create or replace function bulk_sync.has_free_import_slot() returns boolean
language sql stable as $$
    select count(*) < (select max_concurrent_imports from bulk_sync.settings where id)
    from bulk_sync.jobs where status in ('ready_to_import', 'importing');
$$;

-- A JSON number that is a valid bigint, else null.
create or replace function bulk_sync.json_bigint(p_value jsonb) returns bigint
language sql immutable as $$
    select case
        when jsonb_typeof(p_value) = 'number'
             and p_value::numeric between -9223372036854775808 and 9223372036854775807
             and p_value::numeric = trunc(p_value::numeric)
        then p_value::numeric::bigint
    end;
$$;

-- True when a claim would find something to do: a visible message it may take (p_shops: the shops whose Shopify
-- calls the caller can make, null: all), a dispatchable job or an expired lease.
create or replace function bulk_sync.work_available(p_shops text[] default null) returns boolean
language sql stable as $$
    select exists (
            select from pgmq.q_bulk_sync as q
            where q.vt <= clock_timestamp()
              and (p_shops is null or q.message ->> 'task' in ('download', 'import') or exists (
                  select from bulk_sync.jobs as j
                  where j.id = bulk_sync.json_bigint(q.message -> 'job_id') and j.shop = any(p_shops)
              ))
        )
        or exists (select from bulk_sync.jobs where lease_expires_at < now())
        or exists (
            select from bulk_sync.shops as s
            where s.active
              and exists (
                  select from bulk_sync.jobs as j
                  where j.shop = s.code and j.status = 'queued' and j.next_attempt_at <= now()
              )
              and (
                  select count(*) from bulk_sync.jobs as j
                  where j.shop = s.code and j.status in ('starting', 'waiting')
              ) < s.max_concurrent_ops
        )
        or (
            exists (select from bulk_sync.jobs where status = 'copied' and next_attempt_at <= now())
            and (
                select count(*) from bulk_sync.jobs where status in ('ready_to_import', 'importing')
            ) < (bulk_sync.get_settings()).max_concurrent_imports
        );
$$;

-- Where and how to reach a shop's Admin API (no secrets: tokens live only in the runner's environment).
create or replace function bulk_sync.shop_endpoint(p_shop text) returns jsonb
language sql stable as $$
    select jsonb_build_object('domain', s.domain, 'api_version', s.api_version)
    from bulk_sync.shops as s where s.code = p_shop;
$$;

-- Takes up to p_qty tasks for worker p_worker, waiting up to p_wait_seconds for work to appear. p_shops: the shops
-- whose Shopify calls (start, poll, cancel) the worker can make (null: every shop); other shops' messages stay in
-- the queue for another runner, spending no attempt. Downloads and imports need no credentials: anyone takes them.
-- Each task is a jsonb object with everything the runner needs; its fence must accompany every report.
create or replace function bulk_sync.claim(
    p_worker text, p_qty integer default 1, p_wait_seconds double precision default 0, p_shops text[] default null
)
returns setof jsonb
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_deadline timestamptz := clock_timestamp() + make_interval(secs => least(greatest(p_wait_seconds, 0), 60));
    v_settings bulk_sync.settings := bulk_sync.get_settings();
    v_msg record;
    v_job bulk_sync.jobs;
    v_task text;
    v_fence bigint;
    v_expected text;
    v_read bigint[] := '{}';
    v_others bigint[] := '{}';
    v_id bigint;
    v_adopt timestamptz;
    v_taken integer := 0;
    v_batch integer;
begin
    if p_worker is null or p_worker !~ '^[A-Za-z0-9_.:@/-]{1,100}$' then
        raise exception 'invalid worker name %', coalesce(quote_literal(p_worker), 'NULL')
            using errcode = 'BS009';
    end if;
    if p_qty is null or p_qty not between 1 and 100 then
        raise exception 'p_qty must be between 1 and 100, got %', coalesce(p_qty::text, 'NULL')
            using errcode = 'BS009';
    end if;
    if array_position(p_shops, null) is not null then
        raise exception 'p_shops must list shop codes without NULLs' using errcode = 'BS009';
    end if;
    perform bulk_sync.seen(p_worker, p_shops);
    -- Wait without holding any lock.
    while clock_timestamp() < v_deadline and not bulk_sync.work_available(p_shops) loop
        perform pg_sleep(0.1);
    end loop;
    perform bulk_sync.recover();
    perform bulk_sync.dispatch();
    -- Reads on past messages of shops the worker cannot serve (given back below), up to 100 batches.
    for v_batch in 1..100 loop
    exit when v_taken >= p_qty;
    for v_msg in select * from pgmq.read('bulk_sync', v_settings.lease_seconds, p_qty - v_taken) loop
        v_read := v_read || v_msg.msg_id;
        v_task := v_msg.message ->> 'task';
        v_fence := bulk_sync.json_bigint(v_msg.message -> 'fence');
        select * into v_job from bulk_sync.jobs
         where id = bulk_sync.json_bigint(v_msg.message -> 'job_id') and v_fence is not null
           for update;
        continue when not found;  -- a malformed message is dropped, never allowed to poison the queue
        if p_shops is not null and v_msg.message ->> 'task' not in ('download', 'import')
           and not v_job.shop = any(p_shops) then
            v_others := v_others || v_msg.msg_id;
            continue;
        end if;
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
                        || bulk_sync.shop_endpoint(v_job.shop);
            v_taken := v_taken + 1;
            continue;
        end if;
        if v_job.fence is distinct from v_fence or v_job.status is distinct from v_expected then
            perform bulk_sync.audit(v_job.id, v_task, 'stale', v_job.status, v_job.status, v_fence,
                format('stale %s message dropped (message fence %s, job fence %s, status %s)',
                       v_task, v_fence, v_job.fence, v_job.status), p_worker);
            continue;
        end if;
        v_adopt := case when v_task = 'start' then v_job.start_attempted_at end;
        update bulk_sync.jobs
           set fence = fence + 1,
               status = case when status = 'ready_to_import' then 'importing' else status end,
               lease_expires_at = now() + make_interval(secs => v_settings.lease_seconds),
               leased_by = p_worker,
               start_attempted_at = case when v_task = 'start' then coalesce(start_attempted_at, now()) end
         where id = v_job.id
        returning * into v_job;
        if v_task in ('start', 'import') then
            -- The steps with side effects worth accounting for (a Shopify operation, an import) log their claim.
            perform bulk_sync.audit(v_job.id, v_task, 'claimed', v_expected, v_job.status, v_job.fence,
                                    format('%s claimed by %s', v_task, p_worker), p_worker);
        end if;
        return next jsonb_build_object(
            'job_id', v_job.id, 'task', v_task, 'fence', v_job.fence, 'shop', v_job.shop,
            'entity', v_job.entity, 'filter_field', v_job.filter_field,
            'window_start', v_job.window_start, 'window_end', v_job.window_end,
            'operation_id', v_job.operation_id, 'object_count', v_job.object_count,
            'bytes_total', v_job.bytes_total, 'attempts', v_job.attempts,
            'lease_seconds', v_settings.lease_seconds,
            'query', case when v_task = 'start' then bulk_sync.bulk_query(v_job) end,
            'export_url', case when v_task = 'download' then v_job.export_url end,
            -- An earlier start of this job may have reached Shopify without its report: look for its operation.
            'adopt_since', v_adopt
        ) || bulk_sync.shop_endpoint(v_job.shop);
        v_taken := v_taken + 1;
    end loop;
    exit when not found;  -- the queue has no more visible messages
    end loop;
    -- Other shops' messages go back to the queue, visible at once; the rest is consumed in this transaction (a
    -- claim that rolls back leaves its messages in the queue).
    foreach v_id in array v_others loop
        perform pgmq.set_vt('bulk_sync', v_id, 0);
    end loop;
    v_read := array(select unnest(v_read) except select unnest(v_others));
    if cardinality(v_read) > 0 then
        perform pgmq.delete('bulk_sync', v_read);
    end if;
end;
$$;

-- Records that worker p_worker claims, and which shops it serves (null: every shop); at most every 10 s.
create or replace function bulk_sync.seen(p_worker text, p_shops text[]) returns void
language plpgsql as $$
begin
    if exists (
        select from bulk_sync.runners as r
        where r.worker = p_worker and r.seen_at >= now() - interval '10 s' and r.shops is not distinct from p_shops
    ) then
        return;  -- read-only when nothing changed: no row lock, no write
    end if;
    insert into bulk_sync.runners as r (worker, shops, seen_at) values (p_worker, p_shops, now())
    on conflict (worker) do update set shops = excluded.shops, seen_at = excluded.seen_at
    where r.seen_at < now() - interval '10 s' or r.shops is distinct from excluded.shops;
end;
$$;

-- Extends the lease of a claimed task (and records download progress); false when the fence is stale.
create or replace function bulk_sync.heartbeat(p_job_id bigint, p_fence bigint, p_bytes_copied bigint default null)
returns boolean
language sql
security definer set search_path = pg_catalog, pg_temp as $$
    with extended as (
        update bulk_sync.jobs
           set lease_expires_at = now() + make_interval(secs => (bulk_sync.get_settings()).lease_seconds),
               bytes_copied = coalesce(p_bytes_copied, bytes_copied)
         where id = p_job_id and fence = p_fence and lease_expires_at is not null
        returning id
    )
    select exists (select from extended);
$$;

-- What runners need besides claim and the reports: giving a task back on shutdown, and knowing when all is done.

-- Gives a claimed task back at once, without spending an attempt (a runner shutting down); false when stale.
create or replace function bulk_sync.release(p_job_id bigint, p_fence bigint) returns boolean
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_job bulk_sync.jobs := bulk_sync.fenced(
        p_job_id, p_fence, '{starting,waiting,exporting,importing}', 'release'
    );
begin
    if v_job is null then
        return false;
    end if;
    perform bulk_sync.repeat(v_job, 'release', format('%s given back by %s', bulk_sync.task_for(v_job.status),
                                                     coalesce(v_job.leased_by, 'its runner')), false, '0 s');
    perform bulk_sync.dispatch_imports();
    return true;
end;
$$;

-- True when no job of an active shop can still make progress (all completed, failed, split or canceled).
create or replace function bulk_sync.idle() returns boolean
language sql stable
security definer set search_path = pg_catalog, pg_temp as $$
    select not exists (
        select from bulk_sync.jobs as j
        join bulk_sync.shops as s on s.code = j.shop
        where s.active and j.status not in ('completed', 'failed', 'split', 'canceled')
    );
$$;
