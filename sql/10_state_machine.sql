-- The job state machine: the legal transitions are rows of bulk_sync.transitions (sql/migrations), enforced by the
-- trigger jobs_guard below; the functions here make every state change, each guarded by the state and fence it
-- expects, so a late actor changes nothing.
--
--   queued ──► starting ──► waiting ──► exporting ──► copied ──► ready_to_import ──► importing ──► completed
--     ▲  ▲        │            │ │           │                                          │
--     │  └────────┘ (retry)    │ └─► split (TIMEOUT: window halved into new queued jobs) │
--     │  └─────────────────────┘ (FAILED/CANCELED/EXPIRED op, URL expired)              │
--     │                        └─► completed (empty export)       copied ◄──────────────┘ (retry import)
--     └── failed ◄── any live state (non-retryable, attempts exhausted)
--         canceled ◄── any live state (cancel_jobs)
--
-- A slot of the shop is held in starting and waiting; an import slot in ready_to_import and importing.
-- completed, failed, split and canceled are terminal; failed leaves only through retry_failed().

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

-- The runner task that a job in this status is waiting for.
create or replace function bulk_sync.task_for(p_status text) returns text
language sql immutable as $$
    select case p_status
        when 'starting' then 'start'
        when 'waiting' then 'poll'
        when 'exporting' then 'download'
        when 'ready_to_import' then 'import'
        when 'importing' then 'import'
    end;
$$;

-- Messages use only what pgmq 1.4.4 has (Supabase's on PostgreSQL 15): send(text, jsonb, integer), a delay in
-- whole seconds (the timestamptz form came with 1.5.0). Delays are rounded up, never sooner.

-- Sends one task message {job_id, task, fence} to the runners' queue, visible after p_delay (whole seconds, up).
create or replace function bulk_sync.send(
    p_job_id bigint, p_task text, p_fence bigint, p_delay interval default '0 s'
)
returns bigint
language plpgsql as $$
begin
    return pgmq.send(
        'bulk_sync',
        jsonb_build_object('job_id', p_job_id, 'task', p_task, 'fence', p_fence),
        ceil(extract(epoch from greatest(p_delay, '0 s')))::integer
    );
end;
$$;

-- Asks runners to cancel a Shopify operation nobody waits for any more (best effort, no lease, no report).
create or replace function bulk_sync.send_cancel(p_job_id bigint, p_operation_id text) returns bigint
language plpgsql as $$
begin
    return pgmq.send(
        'bulk_sync', jsonb_build_object('job_id', p_job_id, 'task', 'cancel', 'fence', 0, 'operation_id', p_operation_id)
    );
end;
$$;

-- Raises BS009 unless p_value is a non-empty text.
create or replace function bulk_sync.require_text(p_value text, p_name text) returns void
language plpgsql immutable as $$
begin
    if p_value is null or btrim(p_value) = '' then
        raise exception '% must be a non-empty text', p_name using errcode = 'BS009';
    end if;
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

-- Ends a job in failed with the reason, releasing whatever slot it held.
create or replace function bulk_sync.fail(p_job bulk_sync.jobs, p_phase text, p_reason text, p_attempts integer default null)
returns void
language plpgsql as $$
declare
    v_from text := p_job.status;
begin
    update bulk_sync.jobs
       set status = 'failed', slot = null, import_slot = null, lease_expires_at = null, leased_by = null,
           fence = fence + 1, attempts = coalesce(p_attempts, attempts), last_error = bulk_sync.redact(p_reason)
     where id = p_job.id
    returning * into p_job;
    perform bulk_sync.audit(p_job.id, p_phase, 'failed', v_from, 'failed', p_job.fence, p_reason);
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

-- Repeats the job's current step after a delay (backoff when it counts as an attempt), or fails it.
create or replace function bulk_sync.repeat(
    p_job bulk_sync.jobs, p_phase text, p_reason text,
    p_count_attempt boolean default true, p_delay interval default null
) returns void
language plpgsql as $$
declare
    v_delay interval := bulk_sync.retry_delay(p_job, p_phase, p_reason, p_count_attempt, p_delay);
    v_from text := p_job.status;
begin
    if v_delay is null then
        return;
    end if;
    update bulk_sync.jobs
       set status = case when status = 'importing' then 'copied' else status end,
           import_slot = case when status = 'importing' then null else import_slot end,
           next_attempt_at = now() + v_delay,
           fence = fence + 1, lease_expires_at = null, leased_by = null,
           attempts = attempts + p_count_attempt::integer,
           last_error = case when p_count_attempt then bulk_sync.redact(p_reason) else last_error end
     where id = p_job.id
    returning * into p_job;
    if p_job.status <> 'copied' then
        perform bulk_sync.send(p_job.id, bulk_sync.task_for(p_job.status), p_job.fence, v_delay);
    end if;
    perform bulk_sync.audit(p_job.id, p_phase, case when p_count_attempt then 'retry' else 'wait' end,
        v_from, p_job.status, p_job.fence,
        format('%s; again in %s s', p_reason, round(extract(epoch from v_delay)::numeric, 1)));
end;
$$;

-- Returns the job to queued for a new Shopify export (slot released, operation forgotten), or fails it.
create or replace function bulk_sync.requeue(
    p_job bulk_sync.jobs, p_phase text, p_reason text,
    p_count_attempt boolean default true, p_delay interval default null
) returns void
language plpgsql as $$
declare
    v_delay interval := bulk_sync.retry_delay(p_job, p_phase, p_reason, p_count_attempt, p_delay);
    v_from text := p_job.status;
begin
    if v_delay is null then
        return;
    end if;
    update bulk_sync.jobs
       set status = 'queued', slot = null, next_attempt_at = now() + v_delay,
           fence = fence + 1, lease_expires_at = null, leased_by = null,
           attempts = attempts + p_count_attempt::integer,
           last_error = bulk_sync.redact(p_reason),
           operation_id = null, operation_status = null, operation_started_at = null, object_count = null,
               start_attempted_at = null,
           export_url = null, bytes_total = null, bytes_copied = 0, lines_total = null
     where id = p_job.id
    returning * into p_job;
    perform bulk_sync.audit(p_job.id, p_phase, case when p_count_attempt then 'retry' else 'wait' end,
        v_from, 'queued', p_job.fence,
        format('%s; new export in %s s', p_reason, round(extract(epoch from v_delay)::numeric, 1)));
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
        perform bulk_sync.requeue(p_job, p_phase, p_reason || ' (window cannot be split further)');
        return;
    end if;
    v_mid := date_trunc('second', p_job.window_start + (p_job.window_end - p_job.window_start) / 2);
    update bulk_sync.jobs
       set status = 'split', slot = null, lease_expires_at = null, leased_by = null, fence = fence + 1,
           last_error = bulk_sync.redact(p_reason)
     where id = p_job.id;
    perform bulk_sync.audit(p_job.id, p_phase, 'split', p_job.status, 'split', p_job.fence + 1,
        format('%s; split at %s', p_reason, v_mid));
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
            when new.status in ('completed', 'failed', 'split', 'canceled') then now()
        end;
    end if;
    new.updated_at := now();
    return new;
end;
$$;

create or replace trigger jobs_guard
before update on bulk_sync.jobs
for each row execute function bulk_sync.jobs_guard();
