-- An audit row of recover() says when the lease it found expired and when the runner holding it was last heard of
-- (every lease is taken or renewed for lease_seconds), so that a drawing ends the step where the runner vanished
-- rather than where the job was taken over.
alter table bulk_sync.job_runs add column lease_expired_at timestamptz;

alter table bulk_sync.job_runs add column heard_at timestamptz;
