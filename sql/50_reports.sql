-- Reports: the only way a runner changes a job. Each checks its input and is fenced (a stale or duplicate report
-- changes nothing but is logged), names the outcome it saw, and bulk_sync.apply_outcome (10_state_machine.sql) moves
-- the job as the row of bulk_sync.outcomes for its state and that outcome says. Each returns true when applied.

-- Runner started the Shopify bulk operation p_operation_id (p_adopted: found, started by an earlier attempt whose
-- report was lost, instead of starting another).
create or replace function bulk_sync.report_operation_started(
    p_job_id bigint, p_fence bigint, p_operation_id text, p_adopted boolean default false
)
returns boolean
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_job bulk_sync.jobs;
begin
    if p_operation_id is null or p_operation_id !~ '^gid://shopify/BulkOperation/[0-9]+$' then
        raise exception 'invalid bulk operation id %', coalesce(quote_literal(p_operation_id), 'NULL')
            using errcode = 'BS009';
    end if;
    v_job := bulk_sync.fenced(p_job_id, p_fence, '{starting}', 'start');
    if v_job is null then
        return false;
    end if;
    v_job.operation_id := p_operation_id;
    v_job.operation_status := 'CREATED';
    -- when the first start was claimed, before Shopify can have made the operation: deletions found by this export
    -- apply only to rows imported before it started (sql/65_deletions.sql)
    v_job.operation_started_at := coalesce(v_job.start_attempted_at, now());
    v_job.object_count := 0;
    v_job.start_attempted_at := null;
    perform bulk_sync.apply_outcome(v_job, 'started', 'start',
        case when coalesce(p_adopted, false)
             then 'operation ' || p_operation_id || ' adopted: an earlier start created it and its report was lost'
             else 'operation ' || p_operation_id || ' created' end,
        make_interval(secs => (bulk_sync.get_settings()).poll_interval_seconds));
    return true;
end;
$$;

-- A report that the job's current step did not succeed, fenced to the states the outcome has rows for (p_phase
-- names it when stale): p_what: p_detail is the reason, and the detail (Shopify's words or the runner's) is
-- required; bulk_sync.outcomes says what follows.
create or replace function bulk_sync.report_failure(
    p_job_id bigint, p_fence bigint, p_outcome text, p_phase text, p_what text, p_detail text,
    p_delay interval default null
) returns boolean
language plpgsql as $$
declare
    v_reason text := concat_ws(': ', p_what, bulk_sync.require_text(p_detail, 'the reason'));
    v_job bulk_sync.jobs := bulk_sync.fenced(p_job_id, p_fence,
        array(select state from bulk_sync.outcomes where outcome = p_outcome), p_phase);
begin
    if v_job is null then
        return false;
    end if;
    perform bulk_sync.apply_outcome(v_job, p_outcome, bulk_sync.task_for(v_job.status), v_reason, p_delay);
    return true;
end;
$$;

-- Shopify refused to start: OPERATION_IN_PROGRESS (another operation holds the shop). Export later, no attempt spent.
create or replace function bulk_sync.report_operation_in_progress(p_job_id bigint, p_fence bigint, p_message text)
returns boolean
language sql
security definer set search_path = pg_catalog, pg_temp as $$
    select bulk_sync.report_failure(p_job_id, p_fence, 'in_progress', 'start', 'OPERATION_IN_PROGRESS', p_message);
$$;

-- Shopify throttled a call (THROTTLED or HTTP 429): repeat the same step after p_retry_after_seconds.
create or replace function bulk_sync.report_throttled(p_job_id bigint, p_fence bigint, p_retry_after_seconds double precision)
returns boolean
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
begin
    if p_retry_after_seconds is null or p_retry_after_seconds not between 0 and 3600 then
        raise exception 'p_retry_after_seconds must be between 0 and 3600, got %',
            coalesce(p_retry_after_seconds::text, 'NULL') using errcode = 'BS009';
    end if;
    return bulk_sync.report_failure(p_job_id, p_fence, 'throttled', 'throttled',
        'throttled by Shopify', format('retry after %s s', p_retry_after_seconds),
        make_interval(secs => p_retry_after_seconds));
end;
$$;

-- Raises BS009 unless the poll result is one Shopify can give: a known status, counts not negative, an http(s) URL.
create or replace function bulk_sync.check_poll_result(
    p_status text, p_object_count bigint, p_file_size bigint, p_url text
) returns void
language plpgsql immutable as $$
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
end;
$$;

-- Shopify's answer to a poll of the job's operation: status, errorCode, objectCount, fileSize and url.
create or replace function bulk_sync.report_poll_result(
    p_job_id bigint, p_fence bigint, p_status text, p_error_code text default null,
    p_object_count bigint default null, p_file_size bigint default null, p_url text default null
) returns boolean
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_job bulk_sync.jobs;
    v_s bulk_sync.settings := bulk_sync.get_settings();
    v_outcome text;
begin
    perform bulk_sync.check_poll_result(p_status, p_object_count, p_file_size, p_url);
    v_job := bulk_sync.fenced(p_job_id, p_fence, '{waiting}', 'poll');
    if v_job is null then
        return false;
    end if;
    -- The split rule: an operation running too long, or far larger than planned, is canceled and its window halved.
    v_outcome := case
        when p_status in ('CREATED', 'RUNNING')
             and now() - v_job.operation_started_at > make_interval(secs => v_s.max_operation_seconds) then 'too_long'
        when p_status = 'RUNNING' and p_object_count > v_s.split_operation_objects
             and v_job.window_end - v_job.window_start >= make_interval(secs => 2 * v_s.min_split_seconds)
            then 'too_large'
        when p_status in ('CREATED', 'RUNNING', 'CANCELING') then 'running'
        when p_status = 'COMPLETED' and p_url is not null then 'completed'
        when p_status = 'COMPLETED' and coalesce(p_object_count, 0) = 0 then 'completed_empty'
        when p_status = 'COMPLETED' then 'completed_without_url'
        when p_status = 'FAILED' and p_error_code = 'ACCESS_DENIED' then 'access_denied'
        when p_status = 'FAILED' and p_error_code = 'TIMEOUT' then 'timeout'
        else 'failed'
    end;
    if v_outcome in ('too_long', 'too_large') then
        perform bulk_sync.send_cancel(v_job.id, v_job.operation_id);
    end if;
    if v_outcome in ('running', 'completed', 'completed_empty') then
        v_job.operation_status := p_status;
    end if;
    if v_outcome = 'running' then
        v_job.object_count := coalesce(p_object_count, v_job.object_count);
    elsif v_outcome = 'completed' then
        v_job.object_count := p_object_count;
        v_job.bytes_total := p_file_size;
        v_job.export_url := p_url;
    elsif v_outcome = 'completed_empty' then
        v_job.object_count := 0;
        v_job.lines_total := 0;
        v_job.lines_processed := 0;
        v_job.bytes_total := 0;
    end if;
    v_job := bulk_sync.apply_outcome(v_job, v_outcome, 'poll',
        case v_outcome
            when 'too_long' then format('operation still %s after %s s (max_operation_seconds)',
                                        p_status, v_s.max_operation_seconds)
            when 'too_large' then format('operation at %s objects, over split_operation_objects (%s)',
                                         p_object_count, v_s.split_operation_objects)
            when 'running' then format('operation %s, %s objects', p_status, coalesce(p_object_count::text, '?'))
            when 'completed' then format('operation COMPLETED: %s objects, %s bytes', p_object_count, p_file_size)
            when 'completed_empty' then 'operation COMPLETED with no objects'
            when 'completed_without_url' then format('operation COMPLETED with %s objects but no download URL',
                                                     p_object_count)
            when 'access_denied' then
                'operation FAILED with ACCESS_DENIED: the app lacks an access scope this query needs'
            when 'timeout' then 'operation FAILED with TIMEOUT'
            else format('operation %s%s', p_status,
                        case when p_status = 'FAILED' then ' with ' || coalesce(p_error_code, 'no error code') else '' end)
        end,
        -- polls come less often as the operation ages: a tenth of its age, within the poll interval's bounds
        least(make_interval(secs => v_s.poll_interval_max_seconds),
              greatest(make_interval(secs => v_s.poll_interval_seconds), (now() - v_job.operation_started_at) / 10)));
    if v_outcome = 'completed_empty' then
        perform bulk_sync.export_complete(v_job);
    end if;
    return true;
end;
$$;

-- Every line of the export is in staging: p_lines lines, p_bytes bytes, checked against what is staged and against
-- Shopify's counts. Call it in the transaction that copied the lines, and roll that back when it returns false.
create or replace function bulk_sync.report_download_finished(p_job_id bigint, p_fence bigint, p_lines bigint, p_bytes bigint)
returns boolean
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_job bulk_sync.jobs;
    v_staged bigint;
begin
    if p_lines is null or p_bytes is null or p_lines < 0 or p_bytes < 0 then
        raise exception 'lines and bytes must be non-negative numbers' using errcode = 'BS009';
    end if;
    v_job := bulk_sync.fenced(p_job_id, p_fence, '{exporting}', 'download');
    if v_job is null then
        return false;
    end if;
    -- Lines 1..n, each once: the count, when the highest line number equals it.
    select case when coalesce(max(line_no), 0) = count(*) then count(*) else -1 end into v_staged
    from bulk_sync.staging where job_id = v_job.id;
    if p_lines is distinct from coalesce(v_job.object_count, p_lines)
       or p_bytes is distinct from coalesce(v_job.bytes_total, p_bytes)
       or v_staged is distinct from p_lines then
        perform bulk_sync.apply_outcome(v_job, 'download_incomplete', 'download',
            format('download incomplete: %s of %s lines (%s staged), %s of %s bytes',
                   p_lines, v_job.object_count, v_staged, p_bytes, v_job.bytes_total));
        return true;
    end if;
    v_job.lines_total := p_lines;
    v_job.bytes_copied := p_bytes;
    v_job.next_attempt_at := now();
    v_job.lines_processed := 0;
    v_job.lines_rejected := 0;
    perform bulk_sync.apply_outcome(v_job, 'downloaded', 'download',
                                    format('%s lines, %s bytes in staging', p_lines, p_bytes));
    return true;
end;
$$;

-- The download failed; p_url_expired means the export is gone and must be run again.
create or replace function bulk_sync.report_download_failed(
    p_job_id bigint, p_fence bigint, p_reason text, p_url_expired boolean default false
) returns boolean
language sql
security definer set search_path = pg_catalog, pg_temp as $$
    select bulk_sync.report_failure(p_job_id, p_fence,
        case when p_url_expired then 'url_expired' else 'download_failed' end, 'download',
        case when p_url_expired then 'export URL expired' else 'download failed' end, p_reason);
$$;

-- A page fetched (bulk_sync.fetch_task): p_data is the data of Shopify's answer to the query for the parents p_ids,
-- one node (or null) for each, in order. Written (bulk_sync.write_fetched); the job fetches on, or is complete when
-- nothing is left to fetch.
create or replace function bulk_sync.report_fetched(p_job_id bigint, p_fence bigint, p_ids text[], p_data jsonb)
returns boolean
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_job bulk_sync.jobs;
    v_rows integer;
    v_left integer;
begin
    if cardinality(p_ids) is null or cardinality(p_ids) = 0 or jsonb_typeof(p_data -> 'nodes') is distinct from 'array'
       or jsonb_array_length(p_data -> 'nodes') <> cardinality(p_ids) then
        raise exception 'a fetch report needs the ids asked and a data object with one node (or null) for each'
            using errcode = 'BS009';
    end if;
    v_job := bulk_sync.fenced(p_job_id, p_fence, '{fetching}', 'fetch');
    if v_job is null then
        return false;
    end if;
    if not exists (select from bulk_sync.fetches where job_id = v_job.id and parent_id = any(p_ids)) then
        raise exception 'job % has none of these ids to fetch', v_job.id using errcode = 'BS009';
    end if;
    v_rows := bulk_sync.write_fetched(v_job, p_ids, p_data);
    update bulk_sync.jobs set rows_fetched = rows_fetched + v_rows where id = v_job.id
    returning * into v_job;
    v_left := (select count(*) from bulk_sync.fetches where job_id = v_job.id);
    v_job := bulk_sync.apply_outcome(v_job, case when v_left > 0 then 'fetched' else 'fetched_all' end, 'fetch',
        format('%s rows of %s parents fetched; %s parents left', v_rows, cardinality(p_ids), v_left));
    if v_job.status = 'completed' then
        perform bulk_sync.job_completed(v_job);
    end if;
    return true;
end;
$$;

-- A transient HTTP error (5xx, reset, timeout) during the job's current step: repeat it after backoff.
create or replace function bulk_sync.report_transient_error(p_job_id bigint, p_fence bigint, p_reason text)
returns boolean
language sql
security definer set search_path = pg_catalog, pg_temp as $$
    select bulk_sync.report_failure(p_job_id, p_fence, 'transient', 'transient', 'transient error', p_reason);
$$;

-- A non-retryable error (401/403, ACCESS_DENIED, an invalid query): the job fails at once with the reason.
create or replace function bulk_sync.report_fatal_error(p_job_id bigint, p_fence bigint, p_reason text)
returns boolean
language sql
security definer set search_path = pg_catalog, pg_temp as $$
    select bulk_sync.report_failure(p_job_id, p_fence, 'fatal', 'fatal', null, p_reason);
$$;

-- A cancel Shopify did not take (no answer, 5xx, throttled): asked again after backoff until max_attempts cancels
-- were tried, each audited; false when given up. Cancels are not fenced: the job ended when its operation was
-- abandoned.
create or replace function bulk_sync.report_cancel_failed(
    p_job_id bigint, p_operation_id text, p_attempt integer, p_reason text
) returns boolean
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_job bulk_sync.jobs;
    v_next integer := greatest(coalesce(p_attempt, 0), 0) + 1;
    v_delay interval := bulk_sync.backoff(v_next);
    v_again boolean := v_next < (bulk_sync.get_settings()).max_attempts;
begin
    select * into v_job from bulk_sync.jobs where id = p_job_id;
    if not found or coalesce(p_operation_id, '') !~ '^gid://shopify/BulkOperation/[0-9]+$' then
        raise exception 'no operation % of job % to cancel', p_operation_id, p_job_id using errcode = 'BS009';
    end if;
    if v_again then
        perform bulk_sync.send_cancel(v_job.id, p_operation_id, v_next, v_delay);
    end if;
    perform bulk_sync.audit(v_job.id, 'cancel', case when v_again then 'retry' else 'failed' end,
        v_job.status, v_job.status, v_job.fence,
        format('cancel of %s failed (%s); %s', p_operation_id, bulk_sync.require_text(p_reason, 'p_reason'),
               case when v_again then format('again in %s s', round(extract(epoch from v_delay)::numeric, 1))
                    else format('given up after %s tries', v_next) end));
    return v_again;
end;
$$;
