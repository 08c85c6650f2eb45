"""pg_cron itself runs bulk_sync.tick() in the project's database (waits for the next minute boundary)."""

import time
from pathlib import Path

import psycopg
import pytest

PG_CRON_SQL = Path(__file__).parents[2] / "pg_cron.sql"


@pytest.mark.pg_cron
def test_pg_cron_runs_the_tick(postgresql: psycopg.Connection, db: psycopg.Connection, dsn: str) -> None:
    dbname = postgresql.info.dbname
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-01', '{orders}')")
    (jid,) = db.execute("select id from bulk_sync.jobs").fetchone()
    # A runner took the start task and vanished; from here on nothing but pg_cron calls the tick.
    db.execute(
        "update bulk_sync.jobs set lease_expires_at = now() - interval '1 s', leased_by = 'gone' where id = %s",
        (jid,),
    )
    cron_dsn = dsn.replace(f"dbname={dbname}", "dbname=postgres")
    with psycopg.connect(cron_dsn, autocommit=True, options=f"-c bulk_sync.database={dbname}") as cron:
        cron.execute(PG_CRON_SQL.read_text())
        cron.execute(PG_CRON_SQL.read_text())  # idempotent: still one job of each name
        jobs = cron.execute("select jobname, database, schedule, command from cron.job order by jobname").fetchall()
        assert jobs == [
            ("bulk_sync_incremental", dbname, "*/5 * * * *", "select bulk_sync.enqueue_incremental()"),
            ("bulk_sync_prune_cron_log", "postgres", "17 3 * * *", jobs[1][3]),
            (
                "bulk_sync_reconcile",
                dbname,
                "45 3 * * 0",
                "select bulk_sync.enqueue_reconcile(current_date - 90, current_date)",
            ),
            (
                "bulk_sync_skus",
                dbname,
                "30 2 * * *",
                "select bulk_sync.enqueue_backfill(current_date, current_date, '{skus,products}')",
            ),
            ("bulk_sync_tick", dbname, "* * * * *", "select bulk_sync.tick()"),
        ]
        # what the nightly SKU schedule runs: a snapshot of SKUs and of products per active shop, once a day
        for created in (2, 0):
            assert db.execute(jobs[3][3]).fetchone()[0] == created
        try:
            deadline = time.monotonic() + 130
            while time.monotonic() < deadline:
                runs = cron.execute(
                    """select status, return_message from cron.job_run_details d join cron.job j using (jobid)
                       where j.jobname = 'bulk_sync_tick' and d.status in ('succeeded', 'failed')"""
                ).fetchall()
                if runs:
                    break
                time.sleep(1)
        finally:
            cron.execute("select cron.unschedule(jobname) from cron.job")
    assert runs and runs[0][0] == "succeeded", runs
    recovered = db.execute(
        "select count(*) from bulk_sync.job_runs where job_id = %s and phase = 'recover'", (jid,)
    ).fetchone()[0]
    assert recovered == 1  # the tick, run by pg_cron, recovered the vanished runner's lease


def test_a_role_that_is_not_superuser_schedules_in_its_own_database(dsn: str, postgresql: psycopg.Connection) -> None:
    """Supabase's case: pg_cron lives in the project's database, and postgres may use cron.schedule but not
    cron.schedule_in_database (revoked from PUBLIC by pg_cron)."""
    cron_dsn = dsn.replace(f"dbname={postgresql.info.dbname}", "dbname=postgres")
    with psycopg.connect(cron_dsn, autocommit=True) as admin:
        if not admin.execute("select 1 from pg_roles where rolname = 'cron_user'").fetchone():
            admin.execute("create role cron_user login nosuperuser; grant usage on schema cron to cron_user")
        try:
            user_dsn = cron_dsn.replace(f"user={postgresql.info.user}", "user=cron_user")
            with psycopg.connect(user_dsn, autocommit=True) as user:
                user.execute(PG_CRON_SQL.read_text())
                user.execute(PG_CRON_SQL.read_text())
            jobs = admin.execute(
                "select jobname, database from cron.job where username = 'cron_user' order by jobname"
            ).fetchall()
            assert jobs == [
                ("bulk_sync_incremental", "postgres"), ("bulk_sync_prune_cron_log", "postgres"),
                ("bulk_sync_reconcile", "postgres"), ("bulk_sync_skus", "postgres"), ("bulk_sync_tick", "postgres"),
            ]  # fmt: skip
        finally:
            admin.execute("delete from cron.job where username = 'cron_user'")
