-- Staged lines and import roots name their job without a per-row foreign key: its check, one index probe and row
-- lock per line, was more than half of a download's COPY (800 ms of 80k lines, 360 ms without it). Statement-level
-- triggers (bulk_sync.check_staged_jobs, bulk_sync.forget_staged in sql/40_import.sql) check the jobs once per
-- statement and remove what a deleted job staged, as the foreign keys' cascade did.
alter table bulk_sync.staging drop constraint staging_job_id_fkey;

alter table bulk_sync.import_roots drop constraint import_roots_job_id_fkey;
