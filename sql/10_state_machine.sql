-- The job state machine. What each state means is a row of bulk_sync.job_states and the legal changes are rows of
-- bulk_sync.transitions (sql/migrations), enforced by the trigger jobs_guard below. Every state change goes through
-- bulk_sync.transition(), guarded by the state and fence it expects, so a late actor changes nothing. What a runner's
-- report, a task given back or an expired lease does is a row of bulk_sync.outcomes, applied by apply_outcome below;
-- what the changes of a transaction free (slots) is handed out at its commit by the trigger jobs_hand_out below. The
-- other triggers on bulk_sync.jobs live beside the tables they keep: jobs_window_fits (35_entities.sql),
-- jobs_forget_staged (40_import.sql), jobs_inherit_kind and jobs_completed (60_incremental.sql).
--
--   queued ──► starting ──► waiting ──► exporting ──► copied ──► ready_to_import ──► importing ──► completed
--     ▲  ▲        │            │ │           │                                          │  │             ▲
--     │  └────────┘ (retry)    │ └─► split (TIMEOUT: window halved into new queued jobs) │  └► fetching ──┘
--     │  └─────────────────────┘ (FAILED/CANCELED/EXPIRED op, URL expired)              │  (rows a bulk query
--     │                        └─► completed (empty export)       copied ◄──────────────┤   cannot export)
--     │                                    exporting ◄──────────────────────────────────┘ (staging lost: download again)
--     └── failed ◄── any live state (non-retryable, attempts exhausted)
--         canceled ◄── any live state (cancel_jobs)
--
-- Which states hold a shop slot or an import slot, are terminal, or wait for which runner task: bulk_sync.job_states.
-- failed leaves only through retry_failed().

-- Removes secrets from free text: URL query strings (signatures) and Shopify access tokens.
create or replace function bulk_sync.redact(p_text text) returns text
language sql immutable as $$
    select left(
        regexp_replace(
            regexp_replace(p_text, '(https?://[^\s?#"'']*)\?[^\s"'']*', '\1?<redacted>', 'g'),
            'shp[a-z]{2}_[A-Za-z0-9]+', '<redacted-token>', 'g'
        ),
        2000
    );
$$;

-- Hot helpers are PL/pgSQL rather than SQL functions: PL/pgSQL keeps its plans for the session.

-- Appends one row to the audit trail (message redacted).
create or replace function bulk_sync.audit(
    p_job_id bigint, p_phase text, p_status text, p_from text, p_to text,
    p_fence bigint, p_message text, p_worker text default null
) returns void
language plpgsql as $$
begin
    insert into bulk_sync.job_runs (job_id, phase, status, from_status, to_status, fence, worker, message)
    values (p_job_id, p_phase, p_status, p_from, p_to, p_fence, p_worker, bulk_sync.redact(p_message));
end;
$$;

-- The settings row.
create or replace function bulk_sync.get_settings() returns bulk_sync.settings
language plpgsql stable as $$
declare
    v_settings bulk_sync.settings;
begin
    select * into strict v_settings from bulk_sync.settings where id;
    return v_settings;
end;
$$;

-- Capped, jittered exponential backoff for the n-th failed attempt: in [d/2, d], d = min(cap, base * 2^(n-1)).
create or replace function bulk_sync.backoff(p_attempt integer, p_rand double precision default random())
returns interval
language sql stable as $$
    select make_interval(secs => (d * (0.5 + 0.5 * least(greatest(p_rand::numeric, 0), 1)))::double precision)
    from (
        select least(s.backoff_cap_seconds::numeric,
                     s.backoff_base_seconds * power(2::numeric, least(greatest(p_attempt, 1), 60) - 1)) as d
        from bulk_sync.get_settings() as s
    ) as b;
$$;

-- The state list below is declared immutable although it reads bulk_sync.job_states: PostgreSQL folds a call with
-- constant arguments into a constant when it plans a query, so the partial indexes on states apply (dispatch runs
-- 25 % slower without). That holds because job_states changes only by a migration, and migrate re-applies every
-- definition after a migration, which invalidates the plans that folded the old lists.

-- The states whose property p_property (a boolean column of bulk_sync.job_states) is p_value, in their order.
create or replace function bulk_sync.states(p_property text, p_value boolean default true) returns text[]
language plpgsql immutable as $$
declare
    v_states text[];
begin
    execute format(
        'select array(select state from bulk_sync.job_states where %I = $1 order by position)', p_property
    ) into v_states using p_value;
    return v_states;
end;
$$;

-- The runner task that a job in this status is waiting for.
create or replace function bulk_sync.task_for(p_status text) returns text
language sql stable as $$
    select task from bulk_sync.job_states where state = p_status;
$$;

-- Messages use only what pgmq 1.4.4 has (Supabase's on PostgreSQL 15): send(text, jsonb, integer), a delay in
-- whole seconds (the timestamptz form came with 1.5.0). Delays are rounded up, never sooner.

-- Sends one task message {job_id, task, fence} (and p_more's fields) to the runners' queue, visible after p_delay
-- (whole seconds, up).
create or replace function bulk_sync.send(
    p_job_id bigint, p_task text, p_fence bigint, p_delay interval default '0 s', p_more jsonb default '{}'
)
returns bigint
language plpgsql as $$
begin
    return pgmq.send(
        'bulk_sync',
        jsonb_build_object('job_id', p_job_id, 'task', p_task, 'fence', p_fence) || p_more,
        ceil(extract(epoch from greatest(p_delay, '0 s')))::integer
    );
end;
$$;

-- Asks runners to cancel a Shopify operation nobody waits for any more (no lease; a cancel Shopify did not take is
-- asked again, bulk_sync.report_cancel_failed); p_attempt: how many were tried before. The cancel is a row of
-- bulk_sync.cancels until a runner takes it; the message only wakes one.
create or replace function bulk_sync.send_cancel(
    p_job_id bigint, p_operation_id text, p_attempt integer default 0, p_delay interval default '0 s'
) returns bigint
language sql as $$
    insert into bulk_sync.cancels as c (operation_id, job_id, attempt, due_at, msg_id)
    values (p_operation_id, p_job_id, p_attempt, now() + greatest(p_delay, '0 s'),
            bulk_sync.send(p_job_id, 'cancel', 0, p_delay,
                           jsonb_build_object('operation_id', p_operation_id, 'attempt', p_attempt)))
    on conflict (operation_id) do update
    set job_id = excluded.job_id, attempt = excluded.attempt, due_at = excluded.due_at, msg_id = excluded.msg_id
    returning c.msg_id;
$$;

-- Sends again the wake-up of every due job that holds no lease and of every due cancel whose message is gone (an
-- operator purged the queue, a message was deleted by hand), each with an audit row; returns how many. A message is
-- found by its id (the queue's primary key): no scan of the queue.
create or replace function bulk_sync.restore_wake_ups() returns integer
language plpgsql as $$
declare
    v_job bulk_sync.jobs;
    v_cancel bulk_sync.cancels;
    v_count integer := 0;
begin
    for v_job in
        select j.* from bulk_sync.jobs as j
        where j.task_due_at <= now() and j.lease_expires_at is null
          and not exists (select from pgmq.q_bulk_sync as q where q.msg_id = j.task_msg_id)
        order by j.task_due_at
        for update skip locked
    loop
        update bulk_sync.jobs
           set task_msg_id = bulk_sync.send(v_job.id, bulk_sync.task_for(v_job.status), v_job.fence)
         where id = v_job.id;
        perform bulk_sync.audit(v_job.id, 'restore', 'restored', v_job.status, v_job.status, v_job.fence,
            format('%s message was gone: wake-up restored', bulk_sync.task_for(v_job.status)));
        v_count := v_count + 1;
    end loop;
    for v_cancel in
        select c.* from bulk_sync.cancels as c
        where c.due_at <= now()
          and not exists (select from pgmq.q_bulk_sync as q where q.msg_id = c.msg_id)
        for update skip locked
    loop
        perform bulk_sync.send_cancel(v_cancel.job_id, v_cancel.operation_id, v_cancel.attempt);
        perform bulk_sync.audit(v_cancel.job_id, 'restore', 'restored', null, null, null,
            format('cancel of %s: message was gone, wake-up restored', v_cancel.operation_id));
        v_count := v_count + 1;
    end loop;
    return v_count;
end;
$$;

-- Returns p_value; raises BS009 unless it is a non-empty text.
create or replace function bulk_sync.require_text(p_value text, p_name text) returns text
language plpgsql immutable as $$
begin
    if p_value is null or btrim(p_value) = '' then
        raise exception '% must be a non-empty text', p_name using errcode = 'BS009';
    end if;
    return p_value;
end;
$$;


-- Locks the job; returns it when p_fence is the current lease's fence and the status is expected, else logs and
-- returns null.
create or replace function bulk_sync.fenced(p_job_id bigint, p_fence bigint, p_expected text[], p_phase text)
returns bulk_sync.jobs
language plpgsql as $$
declare
    v_job bulk_sync.jobs;
begin
    if p_job_id is null or p_fence is null then
        raise exception 'job id and fence are required' using errcode = 'BS005';
    end if;
    select * into v_job from bulk_sync.jobs where id = p_job_id for update;
    if not found then
        raise exception 'unknown job %', p_job_id using errcode = 'BS008';
    end if;
    if v_job.fence <> p_fence or v_job.lease_expires_at is null or not v_job.status = any(p_expected) then
        perform bulk_sync.audit(v_job.id, p_phase, 'stale', v_job.status, v_job.status, p_fence,
            format('stale %s report ignored (report fence %s, job fence %s, status %s)',
                   p_phase, p_fence, v_job.fence, v_job.status));
        return null;
    end if;
    return v_job;
end;
$$;

-- The one way a job changes state (or, to the same state, starts its step again). p_job is the job as the caller
-- read it (locked: bulk_sync.fenced, or for update) with the caller's changes to any column; the row is written
-- only while it still has the state and fence p_job was read with. In order: the new state and the caller's row, the
-- fence bumped, the lease taken for p_lease_by (a worker) or cleared, slots the new state does not hold released, the
-- audit row (unless p_audit is false: a poll or download handed out), and the task message of the new state (after
-- p_delay) unless a lease was taken, recorded on the row (task_due_at, task_msg_id) for bulk_sync.restore_wake_ups.
-- Returns the job as written; null when the guard failed (nothing changed).
--
-- The caller's row is written whole, but for the columns transition() owns (id, status, fence, the lease, the slots,
-- the wake-up) and those jobs_guard stamps (updated_at, finished_at): the block below makes the function from the
-- catalog, so a column added to bulk_sync.jobs is carried without an edit here. What heartbeats write beside the lease
-- (bytes_copied) cannot change under a caller: the caller holds the row's lock, and a heartbeat needs the fence this
-- bumps.
do $make$
declare
    v_owned text[] := array[
        'id', 'status', 'fence', 'lease_expires_at', 'leased_by', 'slot', 'import_slot', 'task_due_at', 'task_msg_id',
        'updated_at', 'finished_at'
    ];
    v_columns text;
    v_values text;
begin
    select string_agg(quote_ident(a.attname), ', ' order by a.attnum),
           string_agg('p_job.' || quote_ident(a.attname), ', ' order by a.attnum)
      into strict v_columns, v_values
    from pg_attribute as a
    where a.attrelid = 'bulk_sync.jobs'::regclass and a.attnum > 0 and not a.attisdropped
      and not a.attname = any(v_owned);
    execute format($function$
create or replace function bulk_sync.transition(
    p_job bulk_sync.jobs, p_to text, p_phase text, p_outcome text, p_message text,
    p_delay interval default '0 s', p_lease_by text default null, p_audit boolean default true
) returns bulk_sync.jobs
language plpgsql as $body$
declare
    v_job bulk_sync.jobs;
    v_to bulk_sync.job_states;
    v_msg bigint;  -- the wake-up of the new state's task, sent first with the fence the update gives
begin
    select * into strict v_to from bulk_sync.job_states where state = p_to;
    if v_to.task is not null and p_lease_by is null then
        v_msg := bulk_sync.send(p_job.id, v_to.task, p_job.fence + 1, p_delay);
    end if;
    update bulk_sync.jobs as j
       set status = p_to,
           fence = j.fence + 1,
           task_due_at = case when v_msg is not null then now() + greatest(p_delay, '0 s') end,
           task_msg_id = v_msg,
           lease_expires_at = case when p_lease_by is not null
                                   then now() + make_interval(secs => (bulk_sync.get_settings()).lease_seconds) end,
           leased_by = p_lease_by,
           slot = case when v_to.holds_shop_slot then p_job.slot end,
           import_slot = case when v_to.holds_import_slot then p_job.import_slot end,
           (%s) = (%s)
     where j.id = p_job.id and j.status = p_job.status and j.fence = p_job.fence
    returning j.* into v_job;
    if not found then
        if v_msg is not null then
            perform pgmq.delete('bulk_sync', v_msg);
        end if;
        return null;
    end if;
    if p_audit then
        perform bulk_sync.audit(v_job.id, p_phase, p_outcome, p_job.status, p_to, v_job.fence, p_message, p_lease_by);
    end if;
    return v_job;
end;
$body$;
$function$, v_columns, v_values);
end;
$make$;

-- Ends a job in failed with the reason, releasing whatever slot it held.
create or replace function bulk_sync.fail(p_job bulk_sync.jobs, p_phase text, p_reason text, p_attempts integer default null)
returns void
language plpgsql as $$
begin
    p_job.attempts := coalesce(p_attempts, p_job.attempts);
    p_job.last_error := bulk_sync.redact(p_reason);
    perform bulk_sync.transition(p_job, 'failed', p_phase, 'failed', p_reason);
end;
$$;

-- The delay before a job's next attempt: p_delay, else backoff when the outcome spends an attempt (none when it
-- doesn't). Null when that attempt was the last: the job has been failed.
create or replace function bulk_sync.retry_delay(
    p_job bulk_sync.jobs, p_phase text, p_reason text, p_count_attempt boolean, p_delay interval
) returns interval
language plpgsql as $$
begin
    if not p_count_attempt then
        return coalesce(p_delay, '0 s');
    end if;
    if p_job.attempts + 1 >= p_job.max_attempts then
        perform bulk_sync.fail(p_job, p_phase,
            format('attempts exhausted (%s of %s): %s', p_job.attempts + 1, p_job.max_attempts, p_reason),
            p_job.attempts + 1);
        return null;
    end if;
    return coalesce(p_delay, bulk_sync.backoff(p_job.attempts + 1));
end;
$$;

-- The job without what its Shopify export left (operation, counts, URL, progress): it is to export afresh.
create or replace function bulk_sync.without_export(p_job bulk_sync.jobs) returns bulk_sync.jobs
language plpgsql immutable as $$
begin
    p_job.operation_id := null;
    p_job.operation_status := null;
    p_job.operation_started_at := null;
    p_job.object_count := null;
    p_job.start_attempted_at := null;
    p_job.export_url := null;
    p_job.bytes_total := null;
    p_job.bytes_copied := 0;
    p_job.lines_total := null;
    p_job.lines_processed := 0;
    p_job.lines_rejected := 0;
    return p_job;
end;
$$;

-- Tries the job again after a delay (backoff when it counts as an attempt), or fails it: in p_to (a report's next
-- state, bulk_sync.outcomes), else its current step again (an import from copied, where it waits for an import
-- slot), or, with p_new_export, a new Shopify export from queued (slot released, operation forgotten).
create or replace function bulk_sync.retry(
    p_job bulk_sync.jobs, p_phase text, p_reason text,
    p_count_attempt boolean default true, p_delay interval default null, p_new_export boolean default false,
    p_to text default null
) returns void
language plpgsql as $$
declare
    v_delay interval := bulk_sync.retry_delay(p_job, p_phase, p_reason, p_count_attempt, p_delay);
    v_to text := coalesce(p_to, case when p_new_export then 'queued' when p_job.status = 'importing' then 'copied'
                                     else p_job.status end);
begin
    if v_delay is null then
        return;
    end if;
    p_job.next_attempt_at := now() + v_delay;
    p_job.attempts := p_job.attempts + p_count_attempt::integer;
    if p_count_attempt or p_new_export then
        p_job.last_error := bulk_sync.redact(p_reason);
    end if;
    if p_new_export then
        p_job := bulk_sync.without_export(p_job);
    end if;
    perform bulk_sync.transition(p_job, v_to, p_phase, case when p_count_attempt then 'retry' else 'wait' end,
        format('%s; %s in %s s', p_reason, case when p_new_export then 'new export' else 'again' end,
               round(extract(epoch from v_delay)::numeric, 1)), v_delay);
end;
$$;

-- Replaces a job whose export timed out by two queued jobs covering exactly its window; old job ends in split.
create or replace function bulk_sync.split(p_job bulk_sync.jobs, p_phase text, p_reason text) returns void
language plpgsql as $$
declare
    v_mid timestamptz;
    v_tz text := (select timezone from bulk_sync.shops where code = p_job.shop);
    v_min interval := make_interval(secs => (bulk_sync.get_settings()).min_split_seconds);
    v_child bulk_sync.jobs;
begin
    if p_job.window_start is null or p_job.window_end - p_job.window_start < 2 * v_min then
        perform bulk_sync.retry(p_job, p_phase, p_reason || ' (window cannot be split further)', p_new_export => true);
        return;
    end if;
    v_mid := date_trunc('second', p_job.window_start + (p_job.window_end - p_job.window_start) / 2);
    p_job.last_error := bulk_sync.redact(p_reason);
    perform bulk_sync.transition(p_job, 'split', p_phase, 'split', format('%s; split at %s', p_reason, v_mid));
    for v_child in
        insert into bulk_sync.jobs (
            shop, entity, filter_field, window_start, window_end, start_date, end_date, parent_id, max_attempts
        )
        select p_job.shop, p_job.entity, p_job.filter_field, w.s, w.e,
               (w.s at time zone v_tz)::date, ((w.e - interval '1 microsecond') at time zone v_tz)::date,
               p_job.id, p_job.max_attempts
        from (values (p_job.window_start, v_mid), (v_mid, p_job.window_end)) as w (s, e)
        returning *
    loop
        perform bulk_sync.audit(v_child.id, p_phase, 'queued', null, 'queued', v_child.fence,
            format('split from job %s: [%s, %s)', p_job.id, v_child.window_start, v_child.window_end));
    end loop;
end;
$$;

-- Moves the job as bulk_sync.outcomes says for p_outcome in its state: fails it, halves its window, tries again
-- (an attempt spent, the export forgotten, after the row's delay: p_delay for poll and retry_after), or moves it on.
-- Returns the job as written when it moved on, else null.
create or replace function bulk_sync.apply_outcome(
    p_job bulk_sync.jobs, p_outcome text, p_phase text, p_message text, p_delay interval default null
) returns bulk_sync.jobs
language plpgsql as $$
declare
    v_o bulk_sync.outcomes;
    v_job bulk_sync.jobs;
begin
    select * into strict v_o from bulk_sync.outcomes where state = p_job.status and outcome = p_outcome;
    if v_o.next_state = 'failed' then
        perform bulk_sync.fail(p_job, p_phase, p_message);
    elsif v_o.next_state = 'split' then
        perform bulk_sync.split(p_job, p_phase, p_message);
    elsif v_o.spends_attempt or v_o.new_export or v_o.next_state = p_job.status then
        perform bulk_sync.retry(p_job, p_phase, p_message, v_o.spends_attempt,
            case v_o.delay
                when 'backoff' then null
                when 'in_progress' then make_interval(
                    secs => (bulk_sync.get_settings()).in_progress_retry_seconds * (0.75 + 0.5 * random()))
                when 'none' then '0 s'
                else p_delay
            end,
            v_o.new_export, v_o.next_state);
    else
        v_job := bulk_sync.transition(p_job, v_o.next_state, p_phase, 'ok', p_message,
                                      case when v_o.delay = 'none' then '0 s' else p_delay end);
    end if;
    return v_job;
end;
$$;

-- Rejects any status change not listed in bulk_sync.transitions; stamps updated_at and finished_at.
create or replace function bulk_sync.jobs_guard() returns trigger
language plpgsql as $$
begin
    if new.status is distinct from old.status then
        if not exists (
            select from bulk_sync.transitions as t
            where t.from_status = old.status and t.to_status = new.status
        ) then
            raise exception 'illegal transition of job %: % -> %', old.id, old.status, new.status
                using errcode = 'BS010';
        end if;
        new.finished_at := case
            when (select terminal from bulk_sync.job_states where state = new.status) then now()
        end;
    end if;
    new.updated_at := now();
    return new;
end;
$$;

create or replace trigger jobs_guard
before update on bulk_sync.jobs
for each row execute function bulk_sync.jobs_guard();

-- Hands out what a transaction's state changes freed, once, at its commit: a shop slot freed, or a job come to wait
-- for one (queued, new or again), sends bulk_sync.dispatch_exports; the same of an import slot (copied),
-- bulk_sync.dispatch_imports. What is freed or waits is read from bulk_sync.job_states: a state that holds a slot
-- frees it for one that does not; a state without a task waits for the slot its next state holds. The one place that
-- answers a freed slot: a function that moves many jobs (cancel_jobs, remove_shop) hands out nothing before its last
-- move, and no caller can forget to.
create or replace function bulk_sync.jobs_hand_out() returns trigger
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_exports boolean;
    v_imports boolean;
begin
    if tg_op = 'UPDATE' and old.status = new.status then
        return null;
    end if;
    select coalesce(f.holds_shop_slot and not t.holds_shop_slot, false)
           or (t.task is null and not t.terminal and coalesce(n.holds_shop_slot, false)),
           coalesce(f.holds_import_slot and not t.holds_import_slot, false)
           or (t.task is null and not t.terminal and coalesce(n.holds_import_slot, false))
      into strict v_exports, v_imports
    from bulk_sync.job_states as t
    left join bulk_sync.job_states as f on f.state = case when tg_op = 'UPDATE' then old.status end
    left join bulk_sync.job_states as n on n.position = t.position + 1  -- where a waiting job goes next
    where t.state = new.status;
    -- Once per transaction each: at commit every change of it is in place, and a dispatch frees nothing.
    if v_exports and current_setting('bulk_sync.exports_handed_out', true) is distinct from 'on' then
        perform set_config('bulk_sync.exports_handed_out', 'on', true);
        perform bulk_sync.dispatch_exports();
    end if;
    if v_imports and current_setting('bulk_sync.imports_handed_out', true) is distinct from 'on' then
        perform set_config('bulk_sync.imports_handed_out', 'on', true);
        perform bulk_sync.dispatch_imports();
    end if;
    return null;
end;
$$;

-- A constraint trigger, for it can wait for the commit (deferred); migrate drops it before applying this file, as it
-- does every trigger of bulk-sync's (a constraint trigger cannot be created "or replace").
create constraint trigger jobs_hand_out
after insert or update of status on bulk_sync.jobs
deferrable initially deferred
for each row execute function bulk_sync.jobs_hand_out();
