-- Staged lines and import roots are a copy of an export that can be downloaded again, so they are unlogged: no WAL
-- for them (a download's COPY of 40k orders lines took 163 ms instead of 256 ms, clearing them 25 ms instead of 41).
-- A crash or an immediate shutdown empties both; an import that then finds its job's staging empty sends the job
-- back to exporting, to download the same export again and import it from its first line
-- (bulk_sync.restage in sql/40_import.sql). Replicas and backups hold neither: they are not data.
alter table bulk_sync.staging set unlogged;

alter table bulk_sync.import_roots set unlogged;

-- Staging lost: download again (the export's URL is kept; an expired one means a new export, as for any download).
insert into bulk_sync.transitions (from_status, to_status) values ('importing', 'exporting');
