"""bulk-sync calls only what pgmq 1.4.4 has (Supabase's pgmq on PostgreSQL 15), and works on the 1.13 installed
here: calls are checked by name in every file, and a job runs through its delayed sends in a database whose pgmq
lacks the overloads that came after 1.4.4."""

import re
from pathlib import Path

import psycopg
from psycopg import sql

from tests.jobs import claim_task, make_due, operation_running, report, run_to_completion

ROOT = Path(__file__).parents[2]

# Every function of pgmq 1.4.4's pgmq--1.4.4.sql (integer arguments are seconds).
PGMQ_1_4_4 = {
    "format_table_name": "text, text",
    "read": "text, integer, integer",
    "read_with_poll": "text, integer, integer, integer, integer",
    "archive": "text, bigint | text, bigint[]",
    "delete": "text, bigint | text, bigint[]",
    "send": "text, jsonb, integer default 0",
    "send_batch": "text, jsonb[], integer default 0",
    "metrics": "text",
    "metrics_all": "",
    "list_queues": "",
    "purge_queue": "text",
    "detach_archive": "text",
    "pop": "text",
    "set_vt": "text, bigint, integer",
    "drop_queue": "text, boolean default false",
    "validate_queue_name": "text",
    "create_non_partitioned": "text",
    "create_unlogged": "text",
    "create_partitioned": "text, text, text",
    "create": "text",
    "convert_archive_partitioned": "text, text, text, integer",
}
# What pgmq added after 1.4.4 and nothing inside pgmq 1.13 calls: dropped from the test's database if there.
LATER_OVERLOADS = (
    "send(text, jsonb, timestamp with time zone)",
    "send(text, jsonb, jsonb)",
    "send(text, jsonb, jsonb, integer)",
    "send_batch(text, jsonb[], timestamp with time zone)",
    "send_batch(text, jsonb[], jsonb[])",
    "send_batch(text, jsonb[], jsonb[], integer)",
)


def test_every_pgmq_function_called_exists_in_1_4_4() -> None:
    called: dict[str, set[str]] = {}
    files = [*ROOT.glob("sql/**/*.sql"), ROOT / "pg_cron.sql", *ROOT.glob("runner/**/*.py")]
    for path in files:
        for name in re.findall(r"\bpgmq\.(\w+)\s*\(", path.read_text()):
            called.setdefault(name, set()).add(path.relative_to(ROOT).as_posix())
    assert {"send", "read", "delete", "create"} <= called.keys()  # the scan finds what bulk-sync does call
    assert {name: where for name, where in called.items() if name not in PGMQ_1_4_4} == {}


def test_a_job_runs_through_delayed_sends_without_what_came_after_1_4_4(db: psycopg.Connection) -> None:
    for signature in LATER_OVERLOADS:
        db.execute(sql.SQL("drop function if exists pgmq.{}").format(sql.SQL(signature)))
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-01', '{orders}')")
    (jid,) = db.execute("select id from bulk_sync.jobs").fetchone()
    (start,) = claim_task(db, jid, "start")
    assert report(db, "report_throttled", jid, start["fence"], 2.5)  # a delayed send
    (visible,) = db.execute("select vt - now() from pgmq.q_bulk_sync").fetchone()
    assert visible.total_seconds() >= 2.5  # whole seconds, rounded up: never sooner than asked
    (start,) = claim_task(db, jid, "start")
    assert report(db, "report_transient_error", jid, start["fence"], "HTTP 502")  # backoff
    db.execute("select bulk_sync.tick()")
    make_due(db)
    (start,) = claim_task(db, jid, "start")
    poll = operation_running(db, start)
    assert report(db, "report_poll_result", jid, poll["fence"], "RUNNING", None, 10)  # the next poll, delayed
    make_due(db)
    (poll,) = claim_task(db, jid, "poll")
    assert report(db, "report_poll_result", jid, poll["fence"], "CANCELED", None)  # exported again after backoff
    db.execute("select bulk_sync.tick()")
    make_due(db)
    db.execute("select bulk_sync.dispatch()")
    (start,) = claim_task(db, jid, "start")
    run_to_completion(db, start)
