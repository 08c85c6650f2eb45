-- pgmq 1.4.4 (Supabase's on PostgreSQL 15) has send(text, jsonb, integer) only: the timestamptz form came with
-- 1.5.0, and calling it failed at the first enqueue. Delays go as whole seconds, rounded up (never sooner).

-- Sends one task message {job_id, task, fence} to the runners' queue, visible after p_delay (whole seconds, up).
create or replace function bulk_sync_send(
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
