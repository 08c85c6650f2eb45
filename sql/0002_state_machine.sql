-- The job state machine: legal transitions in one table, enforced by one trigger.
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

create table bulk_sync_transitions (
    from_status text not null,
    to_status text not null,
    primary key (from_status, to_status)
);

insert into bulk_sync_transitions (from_status, to_status) values
('queued', 'starting'),
('queued', 'failed'),
('queued', 'canceled'),
('starting', 'waiting'),
('starting', 'queued'),
('starting', 'failed'),
('starting', 'canceled'),
('waiting', 'exporting'),
('waiting', 'completed'),
('waiting', 'queued'),
('waiting', 'split'),
('waiting', 'failed'),
('waiting', 'canceled'),
('exporting', 'copied'),
('exporting', 'queued'),
('exporting', 'failed'),
('exporting', 'canceled'),
('copied', 'ready_to_import'),
('copied', 'failed'),
('copied', 'canceled'),
('ready_to_import', 'importing'),
('ready_to_import', 'failed'),
('ready_to_import', 'canceled'),
('importing', 'completed'),
('importing', 'copied'),
('importing', 'failed'),
('importing', 'canceled'),
('failed', 'queued');

-- Rejects any status change not listed in bulk_sync_transitions; stamps updated_at and finished_at.
create function bulk_sync_jobs_guard() returns trigger
language plpgsql as $$
begin
    if new.status is distinct from old.status then
        if not exists (
            select from bulk_sync_transitions t
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

create trigger bulk_sync_jobs_guard
before update on bulk_sync_jobs
for each row execute function bulk_sync_jobs_guard();

-- Removes secrets from free text: URL query strings (signatures) and Shopify access tokens.
create function bulk_sync_redact(p_text text) returns text
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
create function bulk_sync_audit(
    p_job_id bigint, p_phase text, p_status text, p_from text, p_to text,
    p_fence bigint, p_message text, p_worker text default null
) returns void
language plpgsql as $$
begin
    insert into bulk_sync_job_runs (job_id, phase, status, from_status, to_status, fence, worker, message)
    values (p_job_id, p_phase, p_status, p_from, p_to, p_fence, p_worker, bulk_sync_redact(p_message));
end;
$$;

-- The settings row.
create function bulk_sync_settings() returns bulk_sync_settings
language plpgsql stable as $$
declare
    v_settings bulk_sync_settings;
begin
    select * into strict v_settings from bulk_sync_settings where id;
    return v_settings;
end;
$$;

-- Capped, jittered exponential backoff for the n-th failed attempt: in [d/2, d], d = min(cap, base * 2^(n-1)).
create function bulk_sync_backoff(p_attempt integer, p_rand double precision default random())
returns interval
language sql stable as $$
    select make_interval(secs => (d * (0.5 + 0.5 * least(greatest(p_rand::numeric, 0), 1)))::double precision)
    from (
        select least(s.backoff_cap_seconds::numeric,
                     s.backoff_base_seconds * power(2::numeric, least(greatest(p_attempt, 1), 60) - 1)) as d
        from bulk_sync_settings() as s
    ) as b;
$$;

-- The runner task that a job in this status is waiting for.
create function bulk_sync_task_for(p_status text) returns text
language sql immutable as $$
    select case p_status
        when 'starting' then 'start'
        when 'waiting' then 'poll'
        when 'exporting' then 'download'
        when 'ready_to_import' then 'import'
        when 'importing' then 'import'
    end;
$$;

-- Asks runners to cancel a Shopify operation nobody waits for any more (best effort, no lease, no report).
create function bulk_sync_send_cancel(p_job_id bigint, p_operation_id text) returns bigint
language plpgsql as $$
begin
    return pgmq.send(
        'bulk_sync', jsonb_build_object('job_id', p_job_id, 'task', 'cancel', 'fence', 0, 'operation_id', p_operation_id)
    );
end;
$$;

-- Sends one task message {job_id, task, fence} to the runners' queue, visible after p_delay.
create function bulk_sync_send(p_job_id bigint, p_task text, p_fence bigint, p_delay interval default '0 s')
returns bigint
language plpgsql as $$
begin
    return pgmq.send(
        'bulk_sync',
        jsonb_build_object('job_id', p_job_id, 'task', p_task, 'fence', p_fence),
        clock_timestamp() + greatest(p_delay, '0 s')
    );
end;
$$;
