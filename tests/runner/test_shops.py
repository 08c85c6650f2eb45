"""Shop changes against the simulator: a time-zone change leaves no gap, a misdirected URL starts nothing, a re-sync
puts back rows labelled with the wrong shop."""

import datetime as dt

import httpx
import psycopg

from runner.simulator.truth import TABLES
from tests.jobs import table
from tests.processes import runner_env, start_runner
from tests.sim import start, truth


def _setup(db: psycopg.Connection, codes: tuple[str, ...]) -> None:
    db.execute("update bulk_sync.settings set poll_interval_seconds = 1, backoff_base_seconds = 1, "
               "backoff_cap_seconds = 4, lease_seconds = 10")  # fmt: skip
    for code in codes:
        db.execute("select bulk_sync.add_shop(%s, %s)", (code, f"{code.lower()}.myshopify.com"))


def _run(env: dict[str, str], tmp_path) -> None:
    log = tmp_path / "runner.log"
    runner = start_runner(env, "--until-idle", log=log)
    assert runner.wait(timeout=300) == 0, log.read_text()[-3000:]


def _statuses(db: psycopg.Connection) -> list[tuple]:
    return db.execute("select shop, status, count(*) from bulk_sync.jobs group by 1, 2 order by 1, 2").fetchall()


def test_a_time_zone_change_between_backfills_leaves_no_order_out(db: psycopg.Connection, dsn: str, tmp_path) -> None:
    server = start(("DE",), days=3, orders_per_day=24)
    try:
        _setup(db, ("DE",))
        db.execute("select bulk_sync.enqueue_backfill('2025-09-02', '2025-09-02', '{orders}')")
        _run(runner_env(dsn, server), tmp_path)
        db.execute("select bulk_sync.update_shop('DE', p_timezone => 'Pacific/Kiritimati')")  # UTC+14
        # Kiritimati's 2 September began 14 hours before UTC's: those hours are exported now
        assert db.execute("select bulk_sync.enqueue_backfill('2025-09-02', '2025-09-02', '{orders}')").fetchone() == (
            1,
        )
        _run(runner_env(dsn, server), tmp_path)
        assert _statuses(db) == [("DE", "completed", 2)]
        start_, end = dt.datetime(2025, 9, 1, 10, tzinfo=dt.UTC), dt.datetime(2025, 9, 3, tzinfo=dt.UTC)
        expected = [o["id"] for o in truth(server, ("DE",), "orders")
                    if start_ <= dt.datetime.fromisoformat(o["created_at"]) < end]  # fmt: skip
        assert len(expected) > 24  # more than one day's orders
        assert [o["id"] for o in table(db, "orders")] == expected
    finally:
        server.stop()


def test_a_shop_url_that_answers_as_another_shop_fails_only_that_shops_jobs(
    db: psycopg.Connection, dsn: str, tmp_path
) -> None:
    server = start(("DE", "NL"), days=1, orders_per_day=10)
    try:
        _setup(db, ("DE", "NL"))
        db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-01', '{orders}')")
        _run(runner_env(dsn, server, SHOP_DE_URL=server.shop_url("NL")), tmp_path)
        assert _statuses(db) == [("DE", "failed", 1), ("NL", "completed", 1)]
        (error,) = db.execute("select last_error from bulk_sync.jobs where shop = 'DE'").fetchone()
        assert error == (
            f"shop DE is registered as de.myshopify.com but nl.myshopify.com answers at {server.shop_url('NL')}: "
            "check SHOP_DE_URL and the credentials; no bulk operation started"
        )
        stats = httpx.get(f"{server.base_url}/_admin/stats").json()["shops"]
        assert (stats["DE"]["operations_started"], stats["NL"]["operations_started"]) == (0, 1)
        assert {o["shop"] for o in table(db, "orders")} == {"NL"}
    finally:
        server.stop()


def test_a_resync_puts_back_rows_labelled_with_the_wrong_shop(db: psycopg.Connection, dsn: str, tmp_path) -> None:
    codes = ("DE", "NL")
    server = start(codes, days=2, orders_per_day=10)
    try:
        _setup(db, codes)
        db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-02')")
        _run(runner_env(dsn, server), tmp_path)
        # what a misdirected runner of release 0.2 left: DE's rows under NL, and every day "completed"
        for name in ("orders", "order_line_items", "refunds", "skus"):
            db.execute(psycopg.sql.SQL("update {} set shop = 'NL' where shop = 'DE'").format(
                psycopg.sql.Identifier("shopify", name)))  # fmt: skip
        assert db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-02')").fetchone() == (0,)
        resynced = db.execute(
            "select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-02', p_shops => '{DE}', p_resync => true)"
        ).fetchone()[0]
        assert resynced == 2 * 3 + 2  # orders, refunds and customers of two days; two snapshots (skus, products)
        _run(runner_env(dsn, server), tmp_path)
        assert {s for _, s, _ in _statuses(db)} == {"completed"}
        for name in TABLES:
            assert table(db, name) == truth(server, codes, name), name
    finally:
        server.stop()
