-- The job states as data: every function, view and the runner read what a state means from here, not from lists of
-- names. bulk_sync.transitions stays the one place that says which change is legal; bulk_sync.transition()
-- (sql/10_state_machine.sql) is the one way a job changes state.
create table bulk_sync.job_states (
    state text primary key,
    position smallint not null unique,  -- the order people read them in (the diagram's)
    task text check (task in ('start', 'poll', 'download', 'import')),  -- what a runner does for a job in it
    leased boolean not null,  -- a runner works on the job under a lease (its task claimed) while in it
    terminal boolean not null,  -- nothing happens to the job any more (failed leaves only by retry_failed)
    final boolean not null,  -- terminal for good: its staging and audit rows may be pruned
    covers_window boolean not null,  -- the job answers for its window (not when split into others or canceled)
    holds_shop_slot boolean not null,  -- Shopify works for the job: it counts against the shop's operations
    holds_import_slot boolean not null,  -- the job counts against max_concurrent_imports
    check (not (terminal and (holds_shop_slot or holds_import_slot or task is not null))),
    check (terminal or not final),
    check (not leased or task is not null)
);

insert into bulk_sync.job_states (
    state, position, task, leased, terminal, final, covers_window, holds_shop_slot, holds_import_slot
) values
('queued', 1, null, false, false, false, true, false, false),
('starting', 2, 'start', true, false, false, true, true, false),
('waiting', 3, 'poll', true, false, false, true, true, false),
('exporting', 4, 'download', true, false, false, true, false, false),
('copied', 5, null, false, false, false, true, false, false),
('ready_to_import', 6, 'import', false, false, false, true, false, true),
('importing', 7, 'import', true, false, false, true, false, true),
('completed', 8, null, false, true, true, true, false, false),
('failed', 9, null, false, true, false, true, false, false),
('split', 10, null, false, true, true, false, false, false),
('canceled', 11, null, false, true, true, false, false, false);

-- Predicates cannot read a table; these name states and must agree with the rows above (tests/test_states.py
-- checks each against them):
--   jobs_status_check            every state                 (0001_baseline.sql, replaced below by a foreign key)
--   jobs_check (slot)            holds_shop_slot             (0001_baseline.sql)
--   jobs_check (import_slot)     holds_import_slot           (0001_baseline.sql)
--   jobs_no_overlap              not terminal                (0001_baseline.sql)
--   jobs_shop_slot               holds_shop_slot             (0001_baseline.sql)
--   jobs_import_slot             holds_import_slot           (0001_baseline.sql)
alter table bulk_sync.jobs drop constraint jobs_status_check;

alter table bulk_sync.jobs add constraint jobs_status_fkey
foreign key (status) references bulk_sync.job_states (state);

alter table bulk_sync.transitions add constraint transitions_from_status_fkey
foreign key (from_status) references bulk_sync.job_states (state);

alter table bulk_sync.transitions add constraint transitions_to_status_fkey
foreign key (to_status) references bulk_sync.job_states (state);
