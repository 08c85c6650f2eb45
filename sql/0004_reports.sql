-- Reports: the only way a runner changes a job. Each is fenced (a stale or duplicate report changes nothing
-- but is logged), writes its audit row, and enqueues the follow-up at once. Each returns true when applied.

-- Locks the job; returns it when p_fence is the current lease's fence and the status is expected, else logs and
-- returns null.
create function bulk_sync_fenced(p_job_id bigint, p_fence bigint, p_expected text[], p_phase text)
returns bulk_sync_jobs
language plpgsql as $$
declare
    v_job bulk_sync_jobs;
begin
    if p_job_id is null or p_fence is null then
        raise exception 'job id and fence are required' using errcode = 'BS005';
    end if;
    select * into v_job from bulk_sync_jobs where id = p_job_id for update;
    if not found then
        raise exception 'unknown job %', p_job_id using errcode = 'BS008';
    end if;
    if v_job.fence <> p_fence or v_job.lease_expires_at is null or not v_job.status = any(p_expected) then
        perform bulk_sync_audit(v_job.id, p_phase, 'stale', v_job.status, v_job.status, p_fence,
            format('stale %s report ignored (report fence %s, job fence %s, status %s)',
                   p_phase, p_fence, v_job.fence, v_job.status));
        return null;
    end if;
    return v_job;
end;
$$;

-- Raises BS009 unless p_value is a non-empty text.
create function bulk_sync_require_text(p_value text, p_name text) returns void
language plpgsql immutable as $$
begin
    if p_value is null or btrim(p_value) = '' then
        raise exception '% must be a non-empty text', p_name using errcode = 'BS009';
    end if;
end;
$$;

-- Ends a job in failed with the reason, releasing whatever slot it held.
create function bulk_sync_fail(p_job bulk_sync_jobs, p_phase text, p_reason text, p_attempts integer default null)
returns void
language plpgsql as $$
declare
    v_from text := p_job.status;
begin
    update bulk_sync_jobs
       set status = 'failed', slot = null, import_slot = null, lease_expires_at = null, leased_by = null,
           fence = fence + 1, attempts = coalesce(p_attempts, attempts), last_error = bulk_sync_redact(p_reason)
     where id = p_job.id
    returning * into p_job;
    perform bulk_sync_audit(p_job.id, p_phase, 'failed', v_from, 'failed', p_job.fence, p_reason);
end;
$$;

-- The delay before a job's next attempt: p_delay, else backoff when the outcome spends an attempt (none when it
-- doesn't). Null when that attempt was the last: the job has been failed.
create function bulk_sync_retry_delay(
    p_job bulk_sync_jobs, p_phase text, p_reason text, p_count_attempt boolean, p_delay interval
) returns interval
language plpgsql as $$
begin
    if not p_count_attempt then
        return coalesce(p_delay, '0 s');
    end if;
    if p_job.attempts + 1 >= p_job.max_attempts then
        perform bulk_sync_fail(p_job, p_phase,
            format('attempts exhausted (%s of %s): %s', p_job.attempts + 1, p_job.max_attempts, p_reason),
            p_job.attempts + 1);
        return null;
    end if;
    return coalesce(p_delay, bulk_sync_backoff(p_job.attempts + 1));
end;
$$;

-- Repeats the job's current step after a delay (backoff when it counts as an attempt), or fails it.
create function bulk_sync_repeat(
    p_job bulk_sync_jobs, p_phase text, p_reason text,
    p_count_attempt boolean default true, p_delay interval default null
) returns void
language plpgsql as $$
declare
    v_delay interval := bulk_sync_retry_delay(p_job, p_phase, p_reason, p_count_attempt, p_delay);
    v_from text := p_job.status;
begin
    if v_delay is null then
        return;
    end if;
    update bulk_sync_jobs
       set status = case when status = 'importing' then 'copied' else status end,
           import_slot = case when status = 'importing' then null else import_slot end,
           next_attempt_at = now() + v_delay,
           fence = fence + 1, lease_expires_at = null, leased_by = null,
           attempts = attempts + p_count_attempt::integer,
           last_error = case when p_count_attempt then bulk_sync_redact(p_reason) else last_error end
     where id = p_job.id
    returning * into p_job;
    if p_job.status <> 'copied' then
        perform bulk_sync_send(p_job.id, bulk_sync_task_for(p_job.status), p_job.fence, v_delay);
    end if;
    perform bulk_sync_audit(p_job.id, p_phase, case when p_count_attempt then 'retry' else 'wait' end,
        v_from, p_job.status, p_job.fence,
        format('%s; again in %s s', p_reason, round(extract(epoch from v_delay)::numeric, 1)));
end;
$$;

-- Returns the job to queued for a new Shopify export (slot released, operation forgotten), or fails it.
create function bulk_sync_requeue(
    p_job bulk_sync_jobs, p_phase text, p_reason text,
    p_count_attempt boolean default true, p_delay interval default null
) returns void
language plpgsql as $$
declare
    v_delay interval := bulk_sync_retry_delay(p_job, p_phase, p_reason, p_count_attempt, p_delay);
    v_from text := p_job.status;
begin
    if v_delay is null then
        return;
    end if;
    update bulk_sync_jobs
       set status = 'queued', slot = null, next_attempt_at = now() + v_delay,
           fence = fence + 1, lease_expires_at = null, leased_by = null,
           attempts = attempts + p_count_attempt::integer,
           last_error = bulk_sync_redact(p_reason),
           operation_id = null, operation_status = null, operation_started_at = null, object_count = null,
           export_url = null, bytes_total = null, bytes_copied = 0, lines_total = null
     where id = p_job.id
    returning * into p_job;
    perform bulk_sync_audit(p_job.id, p_phase, case when p_count_attempt then 'retry' else 'wait' end,
        v_from, 'queued', p_job.fence,
        format('%s; new export in %s s', p_reason, round(extract(epoch from v_delay)::numeric, 1)));
end;
$$;

-- Replaces a job whose export timed out by two queued jobs covering exactly its window; old job ends in split.
create function bulk_sync_split(p_job bulk_sync_jobs, p_phase text, p_reason text) returns void
language plpgsql as $$
declare
    v_mid timestamptz;
    v_tz text := (select timezone from bulk_sync_shops where code = p_job.shop);
    v_min interval := make_interval(secs => (bulk_sync_settings()).min_split_seconds);
    v_child bulk_sync_jobs;
begin
    if p_job.window_start is null or p_job.window_end - p_job.window_start < 2 * v_min then
        perform bulk_sync_requeue(p_job, p_phase, p_reason || ' (window cannot be split further)');
        return;
    end if;
    v_mid := date_trunc('second', p_job.window_start + (p_job.window_end - p_job.window_start) / 2);
    update bulk_sync_jobs
       set status = 'split', slot = null, lease_expires_at = null, leased_by = null, fence = fence + 1,
           last_error = bulk_sync_redact(p_reason)
     where id = p_job.id;
    perform bulk_sync_audit(p_job.id, p_phase, 'split', p_job.status, 'split', p_job.fence + 1,
        format('%s; split at %s', p_reason, v_mid));
    for v_child in
        insert into bulk_sync_jobs (
            shop, entity, filter_field, window_start, window_end, start_date, end_date, parent_id, max_attempts
        )
        select p_job.shop, p_job.entity, p_job.filter_field, w.s, w.e,
               (w.s at time zone v_tz)::date, ((w.e - interval '1 microsecond') at time zone v_tz)::date,
               p_job.id, p_job.max_attempts
        from (values (p_job.window_start, v_mid), (v_mid, p_job.window_end)) as w (s, e)
        returning *
    loop
        perform bulk_sync_audit(v_child.id, p_phase, 'queued', null, 'queued', v_child.fence,
            format('split from job %s: [%s, %s)', p_job.id, v_child.window_start, v_child.window_end));
    end loop;
end;
$$;

-- Runner started the Shopify bulk operation p_operation_id.
create function report_operation_started(p_job_id bigint, p_fence bigint, p_operation_id text)
returns boolean
language plpgsql as $$
declare
    v_job bulk_sync_jobs;
begin
    if p_operation_id is null or p_operation_id !~ '^gid://shopify/BulkOperation/[0-9]+$' then
        raise exception 'invalid bulk operation id %', coalesce(quote_literal(p_operation_id), 'NULL')
            using errcode = 'BS009';
    end if;
    v_job := bulk_sync_fenced(p_job_id, p_fence, '{starting}', 'start');
    if v_job is null then
        return false;
    end if;
    update bulk_sync_jobs
       set status = 'waiting', operation_id = p_operation_id, operation_status = 'CREATED',
           operation_started_at = now(), object_count = 0,
           fence = fence + 1, lease_expires_at = null, leased_by = null
     where id = v_job.id
    returning * into v_job;
    perform bulk_sync_send(v_job.id, 'poll', v_job.fence,
                           make_interval(secs => (bulk_sync_settings()).poll_interval_seconds));
    perform bulk_sync_audit(v_job.id, 'start', 'ok', 'starting', 'waiting', v_job.fence,
                            'operation ' || p_operation_id || ' created');
    return true;
end;
$$;

-- Shopify refused to start: OPERATION_IN_PROGRESS (another operation of this app holds the shop). Wait, then retry.
create function report_operation_in_progress(p_job_id bigint, p_fence bigint, p_message text)
returns boolean
language plpgsql as $$
declare
    v_job bulk_sync_jobs;
begin
    perform bulk_sync_require_text(p_message, 'p_message');
    v_job := bulk_sync_fenced(p_job_id, p_fence, '{starting}', 'start');
    if v_job is null then
        return false;
    end if;
    perform bulk_sync_requeue(v_job, 'start', 'OPERATION_IN_PROGRESS: ' || p_message, false,
        make_interval(secs => (bulk_sync_settings()).in_progress_retry_seconds * (0.75 + 0.5 * random())));
    perform bulk_sync_dispatch();
    return true;
end;
$$;

-- Shopify throttled a call (THROTTLED or HTTP 429): repeat the same step after p_retry_after_seconds.
create function report_throttled(p_job_id bigint, p_fence bigint, p_retry_after_seconds double precision)
returns boolean
language plpgsql as $$
declare
    v_job bulk_sync_jobs;
begin
    if p_retry_after_seconds is null or p_retry_after_seconds not between 0 and 3600 then
        raise exception 'p_retry_after_seconds must be between 0 and 3600, got %',
            coalesce(p_retry_after_seconds::text, 'NULL') using errcode = 'BS009';
    end if;
    v_job := bulk_sync_fenced(p_job_id, p_fence, '{starting,waiting,exporting}', 'throttled');
    if v_job is null then
        return false;
    end if;
    perform bulk_sync_repeat(v_job, bulk_sync_task_for(v_job.status),
        format('throttled by Shopify, retry after %s s', p_retry_after_seconds), false,
        make_interval(secs => p_retry_after_seconds));
    return true;
end;
$$;

-- Shopify's answer to a poll of the job's operation: status, errorCode, objectCount, fileSize and url.
create function report_poll_result(
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

-- Every line of the export is in staging: p_lines lines, p_bytes bytes, checked against what is staged and against
-- Shopify's counts. Call it in the transaction that copied the lines, and roll that back when it returns false.
create function report_download_finished(p_job_id bigint, p_fence bigint, p_lines bigint, p_bytes bigint)
returns boolean
language plpgsql as $$
declare
    v_job bulk_sync_jobs;
    v_staged bigint;
begin
    if p_lines is null or p_bytes is null or p_lines < 0 or p_bytes < 0 then
        raise exception 'lines and bytes must be non-negative numbers' using errcode = 'BS009';
    end if;
    v_job := bulk_sync_fenced(p_job_id, p_fence, '{exporting}', 'download');
    if v_job is null then
        return false;
    end if;
    -- Lines 1..n, each once: the count, when the highest line number equals it.
    select case when coalesce(max(line_no), 0) = count(*) then count(*) else -1 end into v_staged
    from bulk_sync_staging where job_id = v_job.id;
    if p_lines is distinct from coalesce(v_job.object_count, p_lines)
       or p_bytes is distinct from coalesce(v_job.bytes_total, p_bytes)
       or v_staged is distinct from p_lines then
        perform bulk_sync_repeat(v_job, 'download',
            format('download incomplete: %s of %s lines (%s staged), %s of %s bytes',
                   p_lines, v_job.object_count, v_staged, p_bytes, v_job.bytes_total));
        return true;
    end if;
    update bulk_sync_jobs
       set status = 'copied', lines_total = p_lines, bytes_copied = p_bytes, next_attempt_at = now(),
           lines_processed = 0, lines_rejected = 0,
           fence = fence + 1, lease_expires_at = null, leased_by = null
     where id = v_job.id
    returning * into v_job;
    perform bulk_sync_audit(v_job.id, 'download', 'ok', 'exporting', 'copied', v_job.fence,
                            format('%s lines, %s bytes in staging', p_lines, p_bytes));
    perform bulk_sync_dispatch_imports();
    return true;
end;
$$;

-- The download failed; p_url_expired means the export is gone and must be run again.
create function report_download_failed(
    p_job_id bigint, p_fence bigint, p_reason text, p_url_expired boolean default false
) returns boolean
language plpgsql as $$
declare
    v_job bulk_sync_jobs;
begin
    perform bulk_sync_require_text(p_reason, 'p_reason');
    v_job := bulk_sync_fenced(p_job_id, p_fence, '{exporting}', 'download');
    if v_job is null then
        return false;
    end if;
    if coalesce(p_url_expired, false) then
        perform bulk_sync_requeue(v_job, 'download', 'export URL expired: ' || p_reason);
        perform bulk_sync_dispatch();
    else
        perform bulk_sync_repeat(v_job, 'download', 'download failed: ' || p_reason);
    end if;
    return true;
end;
$$;

-- A transient HTTP error (5xx, reset, timeout) during the job's current step: repeat it after backoff.
create function report_transient_error(p_job_id bigint, p_fence bigint, p_reason text)
returns boolean
language plpgsql as $$
declare
    v_job bulk_sync_jobs;
begin
    perform bulk_sync_require_text(p_reason, 'p_reason');
    v_job := bulk_sync_fenced(p_job_id, p_fence, '{starting,waiting,exporting,importing}', 'transient');
    if v_job is null then
        return false;
    end if;
    perform bulk_sync_repeat(v_job, bulk_sync_task_for(v_job.status), 'transient error: ' || p_reason);
    perform bulk_sync_dispatch();
    return true;
end;
$$;

-- A non-retryable error (401/403, ACCESS_DENIED, an invalid query): the job fails at once with the reason.
create function report_fatal_error(p_job_id bigint, p_fence bigint, p_reason text)
returns boolean
language plpgsql as $$
declare
    v_job bulk_sync_jobs;
begin
    perform bulk_sync_require_text(p_reason, 'p_reason');
    v_job := bulk_sync_fenced(p_job_id, p_fence, '{starting,waiting,exporting,importing}', 'fatal');
    if v_job is null then
        return false;
    end if;
    perform bulk_sync_fail(v_job, bulk_sync_task_for(v_job.status), p_reason);
    perform bulk_sync_dispatch();
    return true;
end;
$$;
