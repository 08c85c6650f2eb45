-- The job row is the truth of what runs next; a queue message only wakes a runner for it. A job whose state has a
-- runner task records when that task is due and the message sent for it; a cancel of a Shopify operation nobody
-- waits for is a row of bulk_sync.cancels. bulk_sync.restore_wake_ups (in tick, and in a claim that finds nothing)
-- sends again what is due, unleased and without its message (a purged queue, a message deleted by hand).
alter table bulk_sync.jobs add column task_due_at timestamptz;

alter table bulk_sync.jobs add column task_msg_id bigint;

-- Due wake-ups of unleased jobs: what bulk_sync.restore_wake_ups reads.
create index jobs_wake_up on bulk_sync.jobs (task_due_at) where task_due_at is not null and lease_expires_at is null;

create table bulk_sync.cancels (
    operation_id text primary key check (operation_id ~ '^gid://shopify/BulkOperation/[0-9]+$'),
    job_id bigint not null references bulk_sync.jobs (id) on delete cascade,
    attempt integer not null default 0 check (attempt >= 0),
    due_at timestamptz not null default now(),
    msg_id bigint
);

create index cancels_job on bulk_sync.cancels (job_id);

create index cancels_due on bulk_sync.cancels (due_at);

-- What an earlier release queued: each unleased job of a state with a task is due when its message is (else now),
-- and a cancel message becomes a row. Rows keep their updated_at: the guard that stamps it waits meanwhile.
do $$
begin
    if exists (select from pg_trigger where tgrelid = 'bulk_sync.jobs'::regclass and tgname = 'jobs_guard') then
        alter table bulk_sync.jobs disable trigger jobs_guard;
    end if;
end;
$$;

update bulk_sync.jobs as j
set
    task_msg_id = (
        select max(m.msg_id) from pgmq.q_bulk_sync as m
        where m.message ->> 'job_id' = j.id::text and m.message ->> 'fence' = j.fence::text
    )
where
    j.lease_expires_at is null
    and j.status in (
        select s.state from bulk_sync.job_states as s
        where s.task is not null
    );

update bulk_sync.jobs as j
set
    task_due_at = coalesce((
        select m.vt from pgmq.q_bulk_sync as m
        where m.msg_id = j.task_msg_id
    ), now())
where
    j.lease_expires_at is null
    and j.status in (
        select s.state from bulk_sync.job_states as s
        where s.task is not null
    );

do $$
begin
    if exists (select from pg_trigger where tgrelid = 'bulk_sync.jobs'::regclass and tgname = 'jobs_guard') then
        alter table bulk_sync.jobs enable trigger jobs_guard;
    end if;
end;
$$;

insert into bulk_sync.cancels (operation_id, job_id, attempt, due_at, msg_id)
select distinct on (m.message ->> 'operation_id')
    m.message ->> 'operation_id' as operation_id,
    (m.message ->> 'job_id')::bigint as job_id,
    coalesce((m.message ->> 'attempt')::integer, 0) as attempt,
    m.vt as due_at,
    m.msg_id
from pgmq.q_bulk_sync as m
where
    m.message ->> 'task' = 'cancel'
    and m.message ->> 'operation_id' ~ '^gid://shopify/BulkOperation/[0-9]+$'
    and exists (
        select from bulk_sync.jobs as j
        where j.id::text = m.message ->> 'job_id'
    )
order by m.message ->> 'operation_id' asc, m.msg_id desc;
