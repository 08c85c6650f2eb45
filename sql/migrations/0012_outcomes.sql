-- What a runner's report does to a job, as data: for each state and outcome a runner can report, the next state,
-- whether it spends an attempt (the last one fails the job instead), whether the export starts afresh (operation and
-- URL forgotten), and which delay applies before the next step. bulk_sync.apply_outcome (sql/50_reports.sql) is the
-- one way a report moves a job; next_state 'split' halves the window (sql/10_state_machine.sql).
create table bulk_sync.outcomes (
    state text not null references bulk_sync.job_states (state),
    outcome text not null,
    next_state text not null references bulk_sync.job_states (state),
    spends_attempt boolean not null,
    new_export boolean not null,
    delay text not null check (delay in ('none', 'backoff', 'poll', 'in_progress', 'retry_after')),
    primary key (state, outcome),
    check (not new_export or next_state = 'queued')
);

insert into bulk_sync.outcomes (state, outcome, next_state, spends_attempt, new_export, delay) values
-- start: Shopify made the operation, or another operation holds the shop
('starting', 'started', 'waiting', false, false, 'poll'),
('starting', 'in_progress', 'queued', false, true, 'in_progress'),
-- poll: Shopify's answer, and the split rule's verdicts on a running operation
('waiting', 'running', 'waiting', false, false, 'poll'),
('waiting', 'too_long', 'split', false, false, 'none'),
('waiting', 'too_large', 'split', false, false, 'none'),
('waiting', 'completed', 'exporting', false, false, 'none'),
('waiting', 'completed_empty', 'completed', false, false, 'none'),
('waiting', 'completed_without_url', 'queued', true, true, 'backoff'),
('waiting', 'access_denied', 'failed', false, false, 'none'),
('waiting', 'timeout', 'split', false, false, 'none'),
('waiting', 'failed', 'queued', true, true, 'backoff'),
-- download
('exporting', 'downloaded', 'copied', false, false, 'none'),
('exporting', 'download_incomplete', 'exporting', true, false, 'backoff'),
('exporting', 'download_failed', 'exporting', true, false, 'backoff'),
('exporting', 'url_expired', 'queued', true, true, 'backoff'),
-- any Shopify call: throttled (the same step after Retry-After), transient errors, fatal ones
('starting', 'throttled', 'starting', false, false, 'retry_after'),
('waiting', 'throttled', 'waiting', false, false, 'retry_after'),
('exporting', 'throttled', 'exporting', false, false, 'retry_after'),
('starting', 'transient', 'starting', true, false, 'backoff'),
('waiting', 'transient', 'waiting', true, false, 'backoff'),
('exporting', 'transient', 'exporting', true, false, 'backoff'),
('importing', 'transient', 'copied', true, false, 'backoff'),
('starting', 'fatal', 'failed', false, false, 'none'),
('waiting', 'fatal', 'failed', false, false, 'none'),
('exporting', 'fatal', 'failed', false, false, 'none'),
('importing', 'fatal', 'failed', false, false, 'none');
