-- One live snapshot per shop and backfill range: a re-sync (enqueue_backfill's p_resync) takes the same range again
-- once the earlier one ended. Names the states that are not terminal, as jobs_no_overlap does.
drop index bulk_sync.jobs_snapshot;

create unique index jobs_snapshot
on bulk_sync.jobs (shop, entity, start_date, end_date)
where window_start is null and status not in ('split', 'canceled', 'completed', 'failed');
