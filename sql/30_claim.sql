-- Dispatch and claim: how due jobs get shop slots and how runners take work with a lease.
--
-- The locking rule, in one predicate: a job may hold shop slot n only while
--   its state holds a shop slot (job_states.holds_shop_slot)  and  no other such job of the shop holds n  and
--   1 <= n <= max_concurrent_ops,
-- guaranteed by the unique index jobs_shop_slot; dispatchers of one shop are also serialised by an advisory lock,
-- so the index is a backstop that never fires in normal operation. Import slots work the same way (jobs_import_slot).
--
-- A claim is these steps, each a function below: recover expired leases (bulk_sync.recover), dispatch due jobs into
-- free slots (bulk_sync.dispatch, the headroom from bulk_sync.free_slots), read the queue and hand out tasks
-- (bulk_sync.take_task for each message).

-- The free shop slots of a shop (0 when it holds as many or more than it may: a lowered limit still counts).
create or replace function bulk_sync.free_slots(p_shop text) returns integer
language sql stable as $$
    select greatest(0, s.max_concurrent_ops - (
        select count(*) from bulk_sync.jobs as j
        where j.shop = s.code and j.status = any(bulk_sync.states('holds_shop_slot'))
    ))::integer
    from bulk_sync.shops as s where s.code = p_shop;
$$;

-- The free import slots of an entity: its own (import_limits) less its imports dispatched or running, at most what
-- max_concurrent_imports leaves over all entities.
create or replace function bulk_sync.free_import_slots(p_entity text) returns integer
language sql stable as $$
    select greatest(0, least(
        coalesce((select max_concurrent_imports from bulk_sync.import_limits where entity = p_entity), 0)
        - count(*) filter (where j.entity = p_entity),
        (bulk_sync.get_settings()).max_concurrent_imports - count(*)
    ))::integer
    from bulk_sync.jobs as j
    where j.status = any(bulk_sync.states('holds_import_slot'));
$$;

-- The numbers 1..p_limit not in p_taken, in order: the free slots when p_taken are the slots held.
create or replace function bulk_sync.unused(p_taken smallint[], p_limit integer) returns smallint[]
language sql immutable as $$
    select array(select n::smallint from generate_series(1, p_limit) as n where not n = any(p_taken) order by n);
$$;

-- The free slot numbers, lowest first, of a shop's operations (p_shop) or of an entity's imports (p_entity).
create or replace function bulk_sync.free_slot_numbers(p_shop text, p_entity text) returns smallint[]
language sql stable as $$
    select bulk_sync.unused(
        array(
            select case when p_shop is null then j.import_slot else j.slot end
            from bulk_sync.jobs as j
            where (j.shop = p_shop and j.status = any(bulk_sync.states('holds_shop_slot')))
               or (j.entity = p_entity and j.status = any(bulk_sync.states('holds_import_slot')))
        ),
        coalesce(
            (select s.max_concurrent_ops from bulk_sync.shops as s where s.code = p_shop),
            (select l.max_concurrent_imports from bulk_sync.import_limits as l where l.entity = p_entity)
        )
    );
$$;

-- Gives the jobs p_ids, in order, the slots p_slots and moves them to p_to (starting: shop slots; ready_to_import:
-- import slots) with their task messages; returns how many moved (none when a slot was taken meanwhile).
create or replace function bulk_sync.give_slots(p_ids bigint[], p_slots smallint[], p_to text) returns integer
language plpgsql as $$
declare
    v_import boolean := (select holds_import_slot from bulk_sync.job_states where state = p_to);
    v_job bulk_sync.jobs;
    v_count integer := 0;
begin
    for i in 1..least(cardinality(p_ids), cardinality(p_slots)) loop
        select * into v_job from bulk_sync.jobs where id = p_ids[i] for update;
        v_job.slot := case when v_import then v_job.slot else p_slots[i] end;
        v_job.import_slot := case when v_import then p_slots[i] else v_job.import_slot end;
        v_job := bulk_sync.transition(v_job, p_to, 'dispatch', 'ok',
                                      format('%s slot %s', case when v_import then 'import' else 'shop' end, p_slots[i]));
        v_count := v_count + (v_job is not null)::integer;
    end loop;
    return v_count;
exception when unique_violation then
    -- Another dispatcher took one of these slots first (the index is the backstop): none given now.
    return 0;
end;
$$;

-- Gives one shop's free slots to the jobs bulk_sync.pick_exports chooses (the caller holds the shop's dispatch lock)
-- and sends them a start task; returns how many.
create or replace function bulk_sync.dispatch_shop(p_shop text) returns integer
language plpgsql as $$
declare
    v_free integer := bulk_sync.free_slots(p_shop);
    v_ids bigint[];
begin
    if v_free = 0 then
        return 0;
    end if;
    -- Choose (and merge) first, in a statement of its own: giving the slots must see the merged windows.
    v_ids := bulk_sync.pick_exports(p_shop, v_free);
    return bulk_sync.give_slots(v_ids, bulk_sync.free_slot_numbers(p_shop, null), 'starting');
end;
$$;

-- Dispatches the due exports of every active shop whose dispatch lock it gets; returns how many. The lock
-- serialises dispatchers per shop: what each does after taking it sees every earlier dispatch of the shop.
create or replace function bulk_sync.dispatch_exports() returns integer
language sql as $$
    select coalesce(sum(bulk_sync.dispatch_shop(s.code)), 0)::integer
    from bulk_sync.shops as s
    where s.active
      and exists (
          select from bulk_sync.jobs as q
          where q.shop = s.code and q.status = 'queued' and q.next_attempt_at <= now()
      )
      and pg_try_advisory_xact_lock(hashtext('bulk_sync.dispatch'), hashtext(s.code));
$$;

-- Gives each entity's free import slots to its copied jobs (oldest first) and sends them an import task; returns
-- how many.
create or replace function bulk_sync.dispatch_imports() returns integer
language plpgsql as $$
declare
    v_entity text;
    v_count integer := 0;
begin
    if not exists (select from bulk_sync.jobs where status = 'copied' and next_attempt_at <= now())
       or not pg_try_advisory_xact_lock(hashtext('bulk_sync.dispatch'), 0) then
        return 0;
    end if;
    for v_entity in
        select entity from bulk_sync.jobs
        where status = 'copied' and next_attempt_at <= now()
        group by entity
        order by min(next_attempt_at)
    loop
        v_count := v_count + bulk_sync.give_slots(
            array(
                select id from bulk_sync.jobs
                where status = 'copied' and entity = v_entity and next_attempt_at <= now()
                order by next_attempt_at, id
                limit bulk_sync.free_import_slots(v_entity)
                for update skip locked
            ),
            bulk_sync.free_slot_numbers(null, v_entity),
            'ready_to_import'
        );
    end loop;
    return v_count;
end;
$$;

-- Dispatches every kind of due work; returns how many jobs were handed out.
create or replace function bulk_sync.dispatch() returns integer
language sql as $$
    select bulk_sync.dispatch_exports() + bulk_sync.dispatch_imports();
$$;

-- Gives each job whose runner vanished (lease expired) its step again, an attempt spent (outcome lease_expired);
-- the vanished runner's fence is dead. Its audit row says when the lease expired and when the runner was last heard
-- of. Returns how many.
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
        perform bulk_sync.apply_outcome(v_job, 'lease_expired', 'recover',
            format('lease of %s expired: runner vanished during %s',
                   coalesce(v_job.leased_by, 'a runner'), bulk_sync.task_for(v_job.status)));
        -- when, on the row just written: the lease's end, and its last renewal (a lease lasts lease_seconds)
        update bulk_sync.job_runs
           set lease_expired_at = v_job.lease_expires_at,
               heard_at = v_job.lease_expires_at - make_interval(secs => (bulk_sync.get_settings()).lease_seconds)
         where id = (select max(id) from bulk_sync.job_runs where job_id = v_job.id and phase = 'recover');
        v_count := v_count + 1;
    end loop;
    return v_count;
end;
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
              and bulk_sync.free_slots(s.code) > 0
        )
        or exists (
            -- per entity, not per copied job: idle runners ask this every 100 ms, and many copied jobs may wait
            select from (
                select distinct entity from bulk_sync.jobs where status = 'copied' and next_attempt_at <= now()
            ) as e
            where bulk_sync.free_import_slots(e.entity) > 0
        );
$$;

-- Where and how to reach a shop's Admin API (no secrets: tokens live only in the runner's environment).
create or replace function bulk_sync.shop_endpoint(p_shop text) returns jsonb
language sql stable as $$
    select jsonb_build_object('domain', s.domain, 'api_version', s.api_version)
    from bulk_sync.shops as s where s.code = p_shop;
$$;

-- Raises BS009 unless the claim's arguments are usable: a worker name, 1 to 100 tasks, shop codes without NULLs.
create or replace function bulk_sync.check_claim(p_worker text, p_qty integer, p_shops text[]) returns void
language plpgsql immutable as $$
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
end;
$$;

-- Waits (up to p_deadline, without holding any lock) until a claim would find something to do.
create or replace function bulk_sync.wait_for_work(p_shops text[], p_deadline timestamptz) returns void
language plpgsql as $$
begin
    while clock_timestamp() < p_deadline and not bulk_sync.work_available(p_shops) loop
        perform pg_sleep(0.1);
    end loop;
end;
$$;

-- The task a runner gets for a leased job: everything it needs, and the fence every report must present.
create or replace function bulk_sync.task(p_job bulk_sync.jobs, p_task text, p_adopt_since timestamptz) returns jsonb
language plpgsql stable as $$
begin
    return jsonb_build_object(
        'job_id', p_job.id, 'task', p_task, 'fence', p_job.fence, 'shop', p_job.shop,
        'entity', p_job.entity, 'filter_field', p_job.filter_field,
        'window_start', p_job.window_start, 'window_end', p_job.window_end,
        'operation_id', p_job.operation_id, 'object_count', p_job.object_count,
        'bytes_total', p_job.bytes_total, 'attempts', p_job.attempts,
        'lease_seconds', (bulk_sync.get_settings()).lease_seconds,
        'query', case when p_task = 'start' then bulk_sync.bulk_query(p_job) end,
        'export_url', case when p_task = 'download' then p_job.export_url end,
        -- An earlier start of this job may have reached Shopify without its report: look for its operation.
        'adopt_since', p_adopt_since
    ) || bulk_sync.shop_endpoint(p_job.shop)
      -- a fetch: its query, variables and cost (sql/45_fetch.sql)
      || case when p_task = 'fetch' then coalesce(bulk_sync.fetch_task(p_job), '{}') else '{}' end;
end;
$$;

-- Hands out the task of one queue message to p_worker: the task (its job leased, by a state change when it moves
-- to importing), or null when the message is stale or malformed (dropped, a stale one logged), or 'other' when the
-- job's shop is not one of p_shops (the message goes back to the queue).
create or replace function bulk_sync.take_task(p_message jsonb, p_worker text, p_shops text[]) returns jsonb
language plpgsql as $$
declare
    v_task text := p_message ->> 'task';
    v_fence bigint := bulk_sync.json_bigint(p_message -> 'fence');
    v_job bulk_sync.jobs;
    v_expected text;
    v_adopt timestamptz;
    v_attempt integer;
begin
    select * into v_job from bulk_sync.jobs
     where id = bulk_sync.json_bigint(p_message -> 'job_id') and v_fence is not null
       for update;
    if not found then
        return null;  -- a malformed message is dropped, never allowed to poison the queue
    end if;
    if p_shops is not null and v_task not in ('download', 'import') and not v_job.shop = any(p_shops) then
        return '"other"';
    end if;
    if v_task = 'cancel' then
        -- Best effort, whatever the job does now: ask Shopify to stop an operation nobody waits for. Its row is
        -- the truth: taken here (a failed cancel makes it again); a message for a cancel already taken is stale.
        delete from bulk_sync.cancels where operation_id = p_message ->> 'operation_id'
        returning attempt into v_attempt;
        if not found then
            return null;
        end if;
        return jsonb_build_object('job_id', v_job.id, 'task', v_task, 'fence', v_job.fence, 'shop', v_job.shop,
                                  'operation_id', p_message ->> 'operation_id', 'attempt', v_attempt)
               || bulk_sync.shop_endpoint(v_job.shop);
    end if;
    -- The state whose task this is (an import is taken in ready_to_import and done in importing).
    v_expected := (select state from bulk_sync.job_states where task = v_task order by position limit 1);
    if v_job.fence is distinct from v_fence or v_job.status is distinct from v_expected then
        perform bulk_sync.audit(v_job.id, v_task, 'stale', v_job.status, v_job.status, v_fence,
            format('stale %s message dropped (message fence %s, job fence %s, status %s)',
                   v_task, v_fence, v_job.fence, v_job.status), p_worker);
        return null;
    end if;
    if v_task = 'start' and not (select active from bulk_sync.shops where code = v_job.shop) then
        -- Paused after the dispatch: no export starts; the job waits, queued, for bulk_sync.resume_shop.
        perform bulk_sync.transition(v_job, 'queued', v_task, 'paused',
                                     format('shop %s is paused: start put back', v_job.shop));
        return null;
    end if;
    v_adopt := case when v_task = 'start' then v_job.start_attempted_at end;
    if v_task = 'start' then
        v_job.start_attempted_at := coalesce(v_job.start_attempted_at, now());
    end if;
    -- The steps with side effects worth accounting for (a Shopify operation, an import) log their claim.
    v_job := bulk_sync.transition(v_job, case when v_task = 'import' then 'importing' else v_job.status end,
                                  v_task, 'claimed', format('%s claimed by %s', v_task, p_worker),
                                  p_lease_by => p_worker, p_audit => v_task in ('start', 'import'));
    return bulk_sync.task(v_job, v_task, v_adopt);
end;
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
    v_msg record;
    v_task jsonb;
    v_read bigint[] := '{}';
    v_others bigint[] := '{}';
    v_id bigint;
    v_taken integer := 0;
    v_batch integer;
begin
    perform bulk_sync.check_claim(p_worker, p_qty, p_shops);
    perform bulk_sync.seen(p_worker, p_shops);
    perform bulk_sync.wait_for_work(
        p_shops, clock_timestamp() + make_interval(secs => least(greatest(p_wait_seconds, 0), 60)));
    perform bulk_sync.recover();
    perform bulk_sync.dispatch();
    -- Reads on past messages of shops the worker cannot serve (given back below), up to 100 batches.
    for v_batch in 1..100 loop
        exit when v_taken >= p_qty;
        for v_msg in
            select * from pgmq.read('bulk_sync', (bulk_sync.get_settings()).lease_seconds, p_qty - v_taken)
        loop
            v_read := v_read || v_msg.msg_id;
            v_task := bulk_sync.take_task(v_msg.message, p_worker, p_shops);
            if v_task = '"other"' then
                v_others := v_others || v_msg.msg_id;
            elsif v_task is not null then
                return next v_task;
                v_taken := v_taken + 1;
            end if;
        end loop;
        exit when not found;  -- the queue has no more visible messages
    end loop;
    if v_taken = 0 then
        perform bulk_sync.restore_wake_ups();  -- nothing to do: is a wake-up missing?
    end if;
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

-- Gives a claimed task back at once, without spending an attempt (outcome released: a runner shutting down); false
-- when stale.
create or replace function bulk_sync.release(p_job_id bigint, p_fence bigint) returns boolean
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_job bulk_sync.jobs := bulk_sync.fenced(
        p_job_id, p_fence, bulk_sync.states('leased'), 'release'
    );
begin
    if v_job is null then
        return false;
    end if;
    perform bulk_sync.apply_outcome(v_job, 'released', 'release',
        format('%s given back by %s', bulk_sync.task_for(v_job.status), coalesce(v_job.leased_by, 'its runner')));
    return true;
end;
$$;

-- True when nothing of an active shop is left to do: every job terminal and no cancel left to send to Shopify.
create or replace function bulk_sync.idle() returns boolean
language sql stable
security definer set search_path = pg_catalog, pg_temp as $$
    select not exists (
        select from bulk_sync.jobs as j
        join bulk_sync.shops as s on s.code = j.shop
        where s.active and not j.status = any(bulk_sync.states('terminal'))
    )
    -- a cancel still to send: the split halves of a job can finish before a runner takes it
    and not exists (
        select from bulk_sync.cancels as c
        join bulk_sync.jobs as j on j.id = c.job_id
        join bulk_sync.shops as s on s.code = j.shop
        where s.active
    );
$$;

-- The lease a claimed task runs under, in seconds (a runner that claimed nothing for that long is not ready).
create or replace function bulk_sync.lease_seconds() returns integer
language sql stable
security definer set search_path = pg_catalog, pg_temp as $$
    select (bulk_sync.get_settings()).lease_seconds;
$$;
