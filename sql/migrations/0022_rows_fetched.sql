-- What a job's fetches wrote (rows of refund line items; a page fetched again counts again), beside the lines its
-- import processed: the fetched rows' share of the progress people watch.
alter table bulk_sync.jobs add column rows_fetched bigint not null default 0 check (rows_fetched >= 0);
