"""Crashes at the worst moments: a runner killed with SIGKILL holding a lease, a backend killed inside a claim."""

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg

from runner.localpg import LocalCluster
from tests.jobs import claim, claim_task, download, export_job, import_job, job, make_due, report, table

FIXTURE = (Path(__file__).parents[1] / "fixtures" / "orders_export.jsonl").read_text().splitlines(keepends=True)
TABLES = ("orders", "order_line_items", "refunds")

CLAIM_AND_HANG = textwrap.dedent(
    """
    import sys, time, psycopg
    with psycopg.connect(sys.argv[1], autocommit=True) as db:
        (task,) = db.execute("select bulk_sync.claim('doomed', 1)").fetchone()
        print(task["job_id"], task["fence"], flush=True)
        time.sleep(600)
    """
)


def _one_job(db: psycopg.Connection) -> int:
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-01', '{orders}')")
    return db.execute("select id from bulk_sync.jobs").fetchone()[0]


def test_runner_killed_holding_a_lease_is_replaced_and_fenced_out(db: psycopg.Connection, dsn: str) -> None:
    jid = _one_job(db)
    runner = subprocess.Popen([sys.executable, "-c", CLAIM_AND_HANG, dsn], stdout=subprocess.PIPE, text=True)
    try:
        claimed_job, dead_fence = map(int, runner.stdout.readline().split())
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
    assert claimed_job == jid
    assert job(db, jid)["leased_by"] == "doomed"
    assert claim(db, "rescuer") == []  # the lease still runs (120 s): nobody else may take the job
    # Time passes: the lease and the message's visibility run out (moved in the database, not waited for).
    db.execute("update bulk_sync.jobs set lease_expires_at = now() - interval '1 s' where id = %s", (jid,))
    make_due(db)
    tasks = claim(db, "rescuer")
    assert [t["task"] for t in tasks] == ["start"] and tasks[0]["fence"] > dead_fence
    # The vanished runner's report, had it come late, is rejected; the rescuer's is applied.
    assert report(db, "report_operation_started", jid, dead_fence, "gid://shopify/BulkOperation/1") is False
    assert report(db, "report_operation_started", jid, tasks[0]["fence"], "gid://shopify/BulkOperation/2") is True
    j = job(db, jid)
    assert (j["status"], j["operation_id"], j["attempts"]) == ("waiting", "gid://shopify/BulkOperation/2", 1)


def test_backend_killed_inside_a_claim_loses_nothing(db: psycopg.Connection, dsn: str) -> None:
    jid = _one_job(db)
    victim = psycopg.connect(dsn)
    pid = victim.info.backend_pid
    (task,) = victim.execute("select bulk_sync.claim('victim', 1)").fetchone()  # claimed, not committed
    assert task["job_id"] == jid
    db.execute("select pg_terminate_backend(%s, 60000)", (pid,))  # returns once the backend is gone
    victim.close()
    # The claim rolled back: the message is still in the queue and the job holds no lease.
    assert job(db, jid)["lease_expires_at"] is None
    (again,) = claim(db, "survivor")
    assert (again["job_id"], again["fence"]) == (jid, task["fence"])


def test_claim_waits_for_work_then_returns_it(db: psycopg.Connection) -> None:
    jid = _one_job(db)
    (start,) = claim(db)
    report(db, "report_throttled", jid, start["fence"], 1)
    (visible,) = db.execute("select vt from pgmq.q_bulk_sync").fetchone()  # the start task again, a second from now
    started = time.monotonic()
    tasks = [r[0] for r in db.execute("select bulk_sync.claim('w', 1, 60)").fetchall()]
    waited = time.monotonic() - started
    (returned,) = db.execute("select clock_timestamp()").fetchone()
    assert [t["task"] for t in tasks] == ["start"] and returned >= visible
    assert waited < 45  # it returned once the task was visible, not at the end of its 60 s wait
    started = time.monotonic()
    assert db.execute("select bulk_sync.claim('w', 1, 0.5)").fetchall() == []
    assert 0.5 <= time.monotonic() - started < 45  # no work: it waits its whole wait, then gives up


def test_staging_lost_in_a_database_crash_is_downloaded_again(tmp_path: Path) -> None:
    # Staging is unlogged: an immediate shutdown (a crash, for the database) empties it mid-import. The import
    # then sends the job back to download the same export, and imports it again from its first line.
    lines = FIXTURE
    with LocalCluster(tmp_path / "pg") as cluster:
        dsn = cluster.create_database("crash")
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute("update bulk_sync.settings set import_batch_size = 2")
            task = export_job(db, lines)
            jid = task["job_id"]
            for _ in range(2):  # two batches committed, as a runner killed with the database would leave them
                assert db.execute("select bulk_sync.import_batch(%s, %s)", (jid, task["fence"])).fetchone() == ("more",)
        cluster.restart("immediate")
        with psycopg.connect(dsn, autocommit=True) as db:
            assert job(db, jid)["lines_processed"] == 4
            assert db.execute("select count(*) from bulk_sync.staging").fetchone() == (0,)
            import_job(db, task)  # the runner's import task, on the new server
            lost = job(db, jid)
            assert (lost["status"], lost["lines_processed"], lost["lines_total"]) == ("exporting", 0, None)
            assert lost["export_url"] is not None and lost["attempts"] == 0
            message = db.execute(
                "select message from bulk_sync.job_runs where job_id = %s order by id desc limit 1", (jid,)
            ).fetchone()[0]
            assert message.startswith("staged lines lost") and "after 4 of 7 lines" in message
            (again,) = claim_task(db, jid, "download")
            assert download(db, again, lines)
            (task,) = claim_task(db, jid, "import")
            import_job(db, task)
            done = job(db, jid)
            assert (done["status"], done["lines_processed"], done["lines_rejected"]) == ("completed", 7, 0)
            assert [len(table(db, t)) for t in TABLES] == [3, 4, 1]
