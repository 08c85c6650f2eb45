"""bulk-sync through a transaction pooler, as through Supabase's port 6543: PgBouncer in transaction mode with three
server connections in front of the test cluster, handing each transaction the server connection idle longest.
Nothing may rely on what a session keeps from one transaction to the next: prepared statements, settings, temporary
functions."""

import subprocess
from pathlib import Path

import psycopg
import pytest

from runner.localpg import bindir
from runner.simulator.truth import TABLES
from tests.jobs import export_job, import_job, job, order_lines, table
from tests.pgbouncer import PgBouncer
from tests.processes import cli, runner_env, start_runner
from tests.sim import start, truth

PG_CRON_SQL = Path(__file__).parents[2] / "pg_cron.sql"
SHOPS = ("DE", "NL")


def _connect(dsn: str) -> psycopg.Connection:
    """A client of the pooler as bulk-sync's own are: no prepared statements."""
    return psycopg.connect(dsn, autocommit=True, prepare_threshold=None)


def _spread(bouncer: PgBouncer, dbname: str) -> None:
    """Opens the pooler's three server connections to `dbname` and checks that one client's consecutive statements
    land on different ones (the case a client must survive)."""
    clients = [_connect(bouncer.dsn(dbname)) for _ in range(3)]
    try:
        for client in clients:
            client.execute("begin")
            client.execute("select 1")  # holds a server connection until the commit
        for client in clients:
            client.execute("commit")
    finally:
        for client in clients:
            client.close()
    with _connect(bouncer.dsn(dbname)) as client:
        pids = {client.execute("select pg_backend_pid()").fetchone()[0] for _ in range(3)}
    assert len(pids) == 3, pids


def _psql(dsn: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [bindir() / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def project(postgresql_proc) -> str:
    """An empty database of the test cluster, for bulk-sync to migrate through the pooler; dropped afterwards."""
    direct = f"host={postgresql_proc.host} port={postgresql_proc.port} user={postgresql_proc.user}"
    with psycopg.connect(f"{direct} dbname=postgres", autocommit=True) as admin:
        admin.execute("drop database if exists through_pooler with (force)")
        admin.execute("create database through_pooler")
    yield "through_pooler"
    with psycopg.connect(f"{direct} dbname=postgres", autocommit=True) as admin:
        admin.execute("select cron.unschedule(jobid) from cron.job where jobname like 'bulk_sync%'")
        admin.execute("drop database if exists through_pooler with (force)")


@pytest.fixture
def bouncer(postgresql_proc, tmp_path: Path):
    pooler = PgBouncer(tmp_path / "pgbouncer", postgresql_proc.port, "transaction", pool_size=3).start()
    yield pooler
    pooler.stop()


def test_migrate_schedule_and_backfill_through_a_transaction_pooler(bouncer: PgBouncer, project: str, tmp_path):
    dsn = bouncer.dsn(project)
    migrated = cli("migrate", dsn=dsn, timeout=300)
    assert migrated.returncode == 0, migrated.stderr
    assert cli("migrate", dsn=dsn).stdout.strip() == "database is up to date"

    # pg_cron.sql statement by statement (psql sends each on its own), each landing on another server connection:
    # first in pg_cron's database itself, then into the project's database, named for the one transaction
    _spread(bouncer, "postgres")
    assert (done := _psql(bouncer.dsn("postgres"), "-f", str(PG_CRON_SQL))).returncode == 0, done.stderr
    with _connect(bouncer.dsn("postgres")) as cron:
        here = "select count(*) from cron.job where jobname like 'bulk_sync%%' and database = 'postgres'"
        assert cron.execute(here).fetchone()[0] == 5
        cron.execute("select cron.unschedule(jobid) from cron.job where jobname like 'bulk_sync%%'")
    _spread(bouncer, "postgres")
    named = ("-1", "-c", "set local bulk_sync.database = 'through_pooler'", "-f", str(PG_CRON_SQL))
    assert (done := _psql(bouncer.dsn("postgres"), *named)).returncode == 0, done.stderr
    with _connect(bouncer.dsn("postgres")) as cron:
        scheduled = cron.execute(
            "select jobname, database from cron.job where jobname like 'bulk_sync%%' order by 1, 2"
        ).fetchall()
    assert [j for j in scheduled if j[1] == project] == [
        ("bulk_sync_incremental", project), ("bulk_sync_reconcile", project), ("bulk_sync_skus", project),
        ("bulk_sync_tick", project),
    ]  # fmt: skip
    assert ("bulk_sync_prune_cron_log", "postgres") in scheduled

    server = start(SHOPS, days=3, orders_per_day=15, start_latency=0.2, objects_per_second=20_000)
    log = tmp_path / "runner.log"
    try:
        with _connect(dsn) as db:
            db.execute("update bulk_sync.settings set poll_interval_seconds = 1")
            for code in SHOPS:
                db.execute("select bulk_sync.add_shop(%s, %s)", (code, f"{code.lower()}.myshopify.com"))
            assert db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-03')").fetchone()[0] > 0
            _spread(bouncer, project)
            runner = start_runner(runner_env(dsn, server), "--until-idle", "--concurrency", "8", log=log)
            assert runner.wait(timeout=300) == 0, log.read_text()[-3000:]
            statuses = dict(db.execute("select status, count(*) from bulk_sync.jobs group by status").fetchall())
            assert statuses.keys() == {"completed"}, statuses
            for name in TABLES:
                expected = truth(server, SHOPS, name)
                assert expected and table(db, name) == expected, name
    finally:
        server.stop()
    steps = log.read_text()
    assert "outcome=error" not in steps and "Traceback" not in steps and "phase=database" not in steps, steps[-3000:]
    assert steps.count("phase=import") >= statuses["completed"] // 2  # imports ran, on whatever server connection
    for verb in (("status",), ("jobs", "--limit", "5"), ("timeline", "--out", str(tmp_path / "t.svg"))):
        for _ in range(2):  # the second lands on another server connection
            shown = cli(*verb, dsn=dsn)
            assert shown.returncode == 0 and not shown.stderr, (verb, shown.stderr)
    assert "completed" in cli("status", dsn=dsn).stdout


def test_an_import_finds_the_temp_tables_another_left_on_its_server_connection(postgresql, tmp_path: Path) -> None:
    """The import keeps its temp tables on the server connection (a fresh pair per import would cost its cached
    plans); through a pooler the next client there finds them. Harmless: each batch empties them first, and a
    transaction has its server connection to itself."""
    info = postgresql.info
    pooler = PgBouncer(tmp_path / "pgbouncer", info.port, "transaction", pool_size=1).start()
    try:
        with _connect(pooler.dsn(info.dbname)) as first, _connect(pooler.dsn(info.dbname)) as second:
            import_job(first, task := export_job(first, order_lines(1, 7), day="2025-09-01"))
            assert job(first, task["job_id"])["status"] == "completed"
            # the one server connection holds the first client's batch table: the second client finds it
            assert second.execute("select count(*) from pg_temp.bulk_sync_batch").fetchone()[0] == 7
            import_job(second, task := export_job(second, order_lines(2, 5), day="2025-09-02"))
            assert job(second, task["job_id"])["status"] == "completed"
            ids = [row["id"] for row in table(second, "orders")]
    finally:
        pooler.stop()
    assert ids == sorted(f"gid://shopify/Order/{n}" for n in [*range(1000, 1007), *range(2000, 2005)])
