"""The runner's connection budget: at most --db-connections connections to the database whatever its concurrency,
counted by the pool and seen by the server; one kept while idle; leases kept alive while long steps queue for a
place."""

import threading

import psycopg

from runner.pool import Budget
from runner.simulator.truth import TABLES
from runner.worker import Runner
from tests.jobs import table
from tests.processes import runner_env, wait_for
from tests.sim import start, truth

SHOPS = ("DE", "NL", "CHF")


def _sample(dsn: str, name: str, stop: threading.Event, seen: list[int]) -> None:
    """The connections of runner `name`, as the server sees them, every 20 ms until stopped."""
    with psycopg.connect(dsn, autocommit=True) as db:
        while not stop.is_set():
            seen.append(
                db.execute(
                    "select count(*) from pg_stat_activity where application_name = %s", (f"bulk-sync run {name}",)
                ).fetchone()[0]
            )
            stop.wait(0.02)


def _backfill(db: psycopg.Connection, lease_seconds: int = 120) -> None:
    db.execute(
        "update bulk_sync.settings set poll_interval_seconds = 1, poll_interval_max_seconds = 1, lease_seconds = %s",
        (lease_seconds,),
    )
    for code in SHOPS:
        db.execute("select bulk_sync.add_shop(%s, %s)", (code, f"{code.lower()}.myshopify.com"))
    assert db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-03')").fetchone()[0] > 0


def _equals_truth(db: psycopg.Connection, server) -> None:
    statuses = dict(db.execute("select status, count(*) from bulk_sync.jobs group by status").fetchall())
    assert statuses.keys() == {"completed"}, statuses
    for name in TABLES:
        assert table(db, name) == truth(server, SHOPS, name), name


def test_eight_workers_hold_at_most_four_connections_and_one_once_idle(db: psycopg.Connection, dsn: str) -> None:
    # operations that wait on Shopify (polls), downloads that take a while on the network
    server = start(SHOPS, days=3, orders_per_day=40, start_latency=1.0, objects_per_second=200, download_rate=50_000)
    budget = Budget(dsn, 4, "bulk-sync run budget", idle_seconds=0.5)
    runner = Runner(dsn, runner_env(dsn, server), concurrency=8, name="budget", budget=budget)
    seen: list[int] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sample, args=(dsn, "budget", stop, seen))
    worker = threading.Thread(target=runner.run)
    try:
        _backfill(db)
        sampler.start()
        budget.open()
        worker.start()
        wait_for(lambda: db.execute("select bulk_sync.idle()").fetchone()[0], "the backfill", 240, 0.05)
        busiest = max(seen)
        # idle: the pool gives back what it does not use, down to the one the waiting worker asks with
        wait_for(lambda: budget.stats()["open"] == 1 and seen[-1] == 1, "an idle runner's one connection", 60, 0.05)
        stats = budget.stats()
    finally:
        runner.stop.set()
        worker.join(60)
        stop.set()
        sampler.join()
        budget.close()
        server.stop()
    _equals_truth(db, server)
    assert 2 <= busiest <= 4, seen  # it used more than one, and never more than four
    assert max(seen) <= 4 and stats["high_water"] <= 4, (max(seen), stats)
    assert stats["waits"] > 0  # eight workers did queue for four connections
    print(f"connections seen: most {busiest}, pool high water {stats['high_water']}, waits {stats['waits']}")


def test_leases_live_while_downloads_queue_for_the_one_long_place(db: psycopg.Connection, dsn: str) -> None:
    # two connections: one place for a COPY or an import, one for everything short; each download takes longer
    # than the lease on the network, and the downloads and imports of 8 workers queue for the one long place
    server = start(SHOPS, days=3, orders_per_day=40, start_latency=0.2, objects_per_second=20_000, download_rate=6_000)
    runner = Runner(dsn, runner_env(dsn, server), concurrency=8, name="two", db_connections=2)
    seen: list[int] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sample, args=(dsn, "two", stop, seen))
    try:
        _backfill(db, lease_seconds=6)
        sampler.start()
        worker = threading.Thread(target=runner.run)
        worker.start()
        wait_for(lambda: db.execute("select bulk_sync.idle()").fetchone()[0], "the backfill", 240, 0.05)
    finally:
        runner.stop.set()
        worker.join(60)
        stop.set()
        sampler.join()
        server.stop()
    _equals_truth(db, server)
    slow = db.execute("select count(*) from bulk_sync.jobs where bytes_total > 6 * 6000").fetchone()[0]
    assert slow > 0  # downloads that took longer than the lease
    recovered = db.execute("select count(*) from bulk_sync.job_runs where phase = 'recover'").fetchone()[0]
    assert recovered == 0  # no lease expired
    assert max(seen) <= 2, seen
