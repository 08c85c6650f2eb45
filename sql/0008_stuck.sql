-- Jobs that are not progressing, and why: for people, `bulk-sync status`, and alerting.

alter table bulk_sync_settings
add column stuck_after_seconds integer not null default 900 check (stuck_after_seconds >= 10);

-- True when the shop has fewer jobs holding slots than it may.
create function bulk_sync_has_free_slot(p_shop text) returns boolean
language sql stable as $$
    select count(*) < (select max_concurrent_ops from bulk_sync_shops where code = p_shop)
    from bulk_sync_jobs where shop = p_shop and status in ('starting', 'waiting');
$$;

-- True when fewer imports run than max_concurrent_imports allows.
create function bulk_sync_has_free_import_slot() returns boolean
language sql stable as $$
    select count(*) < (select max_concurrent_imports from bulk_sync_settings where id)
    from bulk_sync_jobs where status in ('ready_to_import', 'importing');
$$;

-- One row per live job that has not moved for longer than expected, with the likely reason.
create view bulk_sync_stuck as
with settings as (
    select
        make_interval(secs => stuck_after_seconds) as patience,
        make_interval(secs => max_operation_seconds) as max_operation
    from bulk_sync_settings
    where id
),

live as (
    select
        j.*,
        s.active,
        now() - j.updated_at as idle_for,
        exists(
            select from pgmq.q_bulk_sync as q
            where q.message ->> 'job_id' = j.id::text and (q.message ->> 'fence')::bigint = j.fence
        ) as has_message
    from bulk_sync_jobs as j
    inner join bulk_sync_shops as s on j.shop = s.code
    where j.status not in ('completed', 'failed', 'split', 'canceled')
)

select
    l.id,
    l.shop,
    l.entity,
    l.status,
    l.updated_at as since,
    l.idle_for,
    l.attempts,
    l.last_error,
    case
        when not l.active then 'the shop is inactive'
        when l.lease_expires_at < now()
            then 'the lease of ' || coalesce(l.leased_by, 'a runner')
                || ' expired: the runner vanished (the next claim or tick hands the step out again)'
        when l.status = 'waiting' and now() - l.operation_started_at > st.max_operation / 2
            then 'the Shopify operation has been running for ' || date_trunc('second', now() - l.operation_started_at)
        when l.status = 'queued' then 'due with a free slot, but not dispatched: is a runner or pg_cron running?'
        when l.status = 'copied' then 'an import slot is free, but the import was not dispatched'
        when l.lease_expires_at is null and l.has_message then 'no runner has taken its task: is a runner running?'
        when l.lease_expires_at is null then 'no task message and no lease: call bulk_sync_tick() or retry_failed()'
        else 'a runner is working on it (leased by ' || coalesce(l.leased_by, '?') || ')'
    end as reason
from live as l
cross join settings as st
where
    (
        l.idle_for > st.patience
        -- Waiting in line (for a retry time, a shop slot or an import slot) is progress, not being stuck.
        and not (l.status = 'queued' and (l.next_attempt_at > now() or not bulk_sync_has_free_slot(l.shop)))
        and not (l.status = 'copied' and not bulk_sync_has_free_import_slot())
    )
    -- Polled all the time, yet going nowhere.
    or (l.status = 'waiting' and now() - l.operation_started_at > st.max_operation / 2);
