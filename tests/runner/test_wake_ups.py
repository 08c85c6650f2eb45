"""A backfill whose queue is purged in its middle still completes, equal to the ground truth: the job rows say what
is due, and tick or an idle claim sends the lost wake-ups again."""

import time

import psycopg

from runner.simulator.truth import TABLES
from tests.jobs import table
from tests.processes import runner_env, start_runner, wait_for
from tests.sim import start, truth

CODES = ("DE", "NL")


def _statuses(db: psycopg.Connection) -> set[str]:
    return {s for (s,) in db.execute("select distinct status from bulk_sync.jobs").fetchall()}


def test_a_purged_queue_in_the_middle_of_a_backfill_loses_nothing(db: psycopg.Connection, dsn: str, tmp_path) -> None:
    server = start(CODES, days=6, orders_per_day=150, start_latency=0.5, objects_per_second=3_000)
    try:
        db.execute("update bulk_sync.settings set poll_interval_seconds = 1, backoff_base_seconds = 1, "
                   "backoff_cap_seconds = 4, lease_seconds = 10, window_sizing = false")  # fmt: skip
        db.execute("update bulk_sync.import_limits set max_concurrent_imports = 1")  # exports wait in copied
        for code in CODES:
            db.execute("select bulk_sync.add_shop(%s, %s)", (code, f"{code.lower()}.myshopify.com"))
        db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-06')")
        log = tmp_path / "runner.log"
        runner = start_runner(runner_env(dsn, server), "--until-idle", "--concurrency", "3", log=log)
        seen: list[tuple] = []

        def purge_while_waiting() -> bool:
            """Purges the queue in the same statement that sees jobs waiting for Shopify and for an import slot."""
            seen[:] = [db.execute(
                """select x.s, case when x.s @> '{waiting,copied}' then pgmq.purge_queue('bulk_sync') end
                   from (select array_agg(distinct status) as s from bulk_sync.jobs) as x"""
            ).fetchone()]  # fmt: skip
            return bool(seen[0][1])  # purged at least one message

        wait_for(purge_while_waiting, "jobs waiting for Shopify and for an import slot", every=0.02)
        purged_in, purged = set(seen[0][0]), seen[0][1]
        purged_at = time.monotonic()
        db.execute("select bulk_sync.tick()")  # what pg_cron runs every minute
        assert runner.wait(timeout=300) == 0, log.read_text()[-3000:]
        took = time.monotonic() - purged_at
        assert purged > 0 and {"waiting", "copied"} <= purged_in
        assert _statuses(db) == {"completed"}
        for name in TABLES:
            assert table(db, name) == truth(server, CODES, name), name
        restored = db.execute("select count(*) from bulk_sync.job_runs where phase = 'restore'").fetchone()[0]
        assert restored > 0
        print(
            f"purged {purged} messages with jobs in {sorted(purged_in)}; {restored} wake-ups restored; "
            f"completed {took:.1f} s after the purge"
        )
    finally:
        server.stop()
