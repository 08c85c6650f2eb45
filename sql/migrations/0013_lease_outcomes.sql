-- What ends a lease without a report is an outcome like a report's: a runner gives its task back (released, no
-- attempt spent: bulk_sync.release) or vanishes (lease_expired, an attempt spent: bulk_sync.recover). Either way the
-- job does its step again at once; an import goes back to wait for an import slot.
insert into bulk_sync.outcomes (state, outcome, next_state, spends_attempt, new_export, delay) values
('starting', 'released', 'starting', false, false, 'none'),
('waiting', 'released', 'waiting', false, false, 'none'),
('exporting', 'released', 'exporting', false, false, 'none'),
('importing', 'released', 'copied', false, false, 'none'),
('starting', 'lease_expired', 'starting', true, false, 'none'),
('waiting', 'lease_expired', 'waiting', true, false, 'none'),
('exporting', 'lease_expired', 'exporting', true, false, 'none'),
('importing', 'lease_expired', 'copied', true, false, 'none');
