"""shopify.daily_sales is Shopify's sales report: for every shop and day it equals what the simulator computes from
its own numbers (runner.simulator.truth.daily_sales), to the cent, after a backfill and after live changes."""

import psycopg

from runner.simulator.truth import daily_sales, sales_of
from runner.simulator.webhooks import domain
from tests.processes import runner_env, start_runner
from tests.sim import next_second, start

ZONES = {"DE": "Europe/Berlin", "CHF": "UTC"}


def _run(db: psycopg.Connection, dsn: str, server, log) -> None:
    runner = start_runner(runner_env(dsn, server), "--until-idle", "--concurrency", "3", log=log)
    assert runner.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert db.execute("select count(*) from bulk_sync.jobs where status <> 'completed'").fetchone()[0] == 0


def _equal(db: psycopg.Connection, server) -> int:
    days = 0
    for code, zone in ZONES.items():
        expected = daily_sales(server.shopify.shops[code], zone)
        assert sales_of(db, code) == expected, code
        days += len(expected)
    return days


def test_daily_sales_equal_shopifys_figures_to_the_cent(db: psycopg.Connection, dsn: str, tmp_path) -> None:
    server = start(tuple(ZONES), days=4, orders_per_day=40)
    try:
        db.execute("""update bulk_sync.settings set poll_interval_seconds = 1, backoff_base_seconds = 1,
                      backoff_cap_seconds = 2, lease_seconds = 10, incremental_min_seconds = 0""")  # fmt: skip
        for code, zone in ZONES.items():
            db.execute("select bulk_sync.add_shop(%s, %s, null, null, %s)", (code, domain(code), zone))
        # the days of every order the shops hold, in either zone
        db.execute("select bulk_sync.enqueue_backfill('2025-08-31', '2025-09-05', '{orders}')")
        _run(db, dsn, server, tmp_path / "backfill.log")
        assert _equal(db, server) >= 8  # the days of both shops, and the later days their refunds were made on
        sample = db.execute("select * from shopify.daily_sales where returns > 0 limit 1").fetchone()
        assert sample is not None  # refunds count, on their own day
        # shops change: new orders, refunds (one of many lines), edits, deleted orders; an incremental round and a
        # reconciliation of the backfilled days bring the report up to date
        for code in ZONES:
            server.shopify.change(code, new_orders=10, refunds=5, edits=3, deleted_orders=2, refunded_lines=12)
        next_second(db, server)
        db.execute("select bulk_sync.enqueue_incremental(null, '2025-09-01')")
        db.execute("select bulk_sync.enqueue_reconcile('2025-08-31', '2025-09-05')")
        _run(db, dsn, server, tmp_path / "changes.log")
        assert _equal(db, server) >= 9
        deleted = db.execute("select count(*) from shopify.orders where deleted_at is not null").fetchone()[0]
        assert deleted == 2 * len(ZONES)
    finally:
        server.stop()
