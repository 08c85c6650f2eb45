-- What runners need besides claim and the reports: giving a task back on shutdown, and knowing when all is done.

-- Gives a claimed task back at once, without spending an attempt (a runner shutting down); false when stale.
create function bulk_sync_release(p_job_id bigint, p_fence bigint) returns boolean
language plpgsql as $$
declare
    v_job bulk_sync_jobs := bulk_sync_fenced(
        p_job_id, p_fence, '{starting,waiting,exporting,importing}', 'release'
    );
begin
    if v_job is null then
        return false;
    end if;
    perform bulk_sync_repeat(v_job, 'release', format('%s given back by %s', bulk_sync_task_for(v_job.status),
                                                     coalesce(v_job.leased_by, 'its runner')), false, '0 s');
    perform bulk_sync_dispatch_imports();
    return true;
end;
$$;

-- True when no job of an active shop can still make progress (all completed, failed, split or canceled).
create function bulk_sync_idle() returns boolean
language sql stable as $$
    select not exists (
        select from bulk_sync_jobs as j
        join bulk_sync_shops as s on s.code = j.shop
        where s.active and j.status not in ('completed', 'failed', 'split', 'canceled')
    );
$$;
