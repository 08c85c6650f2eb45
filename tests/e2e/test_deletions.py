"""Deletions and lost operations: the mirror holds exactly what the shops hold, whether a deletion arrives by webhook,
by a SKU snapshot or by reconciliation, and a start whose report was lost is adopted, never started twice."""

import os
import signal
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from runner.localpg import free_port
from runner.simulator.truth import TABLES, database_rows
from runner.simulator.webhooks import domain
from tests.processes import runner_env, start_runner
from tests.sim import start, truth

SHOPS = {"DE": "2026-10", "NL": "2025-10"}  # NL polls and adopts the way API versions before 2026-01 do
DAYS = ("2025-09-01", "2025-09-04")
SECRET = "shpss_webhook_secret_for_deletions"  # noqa: S105 - a fake


def _until_idle(env: dict[str, str], log: Path) -> None:
    runner = start_runner(env, "--until-idle", "--concurrency", "3", log=log)
    assert runner.wait(timeout=300) == 0, log.read_text()[-3000:]


def _setup(db: psycopg.Connection) -> None:
    db.execute("update bulk_sync.settings set poll_interval_seconds = 1, backoff_base_seconds = 1, "
               "backoff_cap_seconds = 2, lease_seconds = 10")  # fmt: skip
    for code, version in SHOPS.items():
        db.execute("select bulk_sync.add_shop(%s, %s, %s)", (code, domain(code), version))
    db.execute("select bulk_sync.enqueue_backfill(%s, %s)", DAYS)


def _assert_mirror_is_the_shops(db: psycopg.Connection, server, deleted: dict[str, set[str]]) -> None:
    """What the shops hold now equals the live views, and deleted_at is set on exactly the deleted rows."""
    for name in TABLES:
        expected = truth(server, SHOPS, name)
        assert expected and database_rows(db, name, live=True) == expected, name
    marked = {
        table: {i for (i,) in db.execute(sql.SQL("select id from {} where deleted_at is not null").format(
            sql.Identifier("shopify", table)))}
        for table in deleted
    }  # fmt: skip
    assert marked == deleted


def _delete(server, db: psycopg.Connection, customers: int = 0, products: int = 0) -> dict[str, set[str]]:
    """Deletes 5 % of each shop's orders, 10 % of its variants and `customers` customers, and renames `products`
    products; returns the deleted ids."""
    deleted: dict[str, set[str]] = {"orders": set(), "skus": set()} | ({"customers": set()} if customers else {})
    for code in SHOPS:
        orders = db.execute("select count(*) from shopify.orders where shop = %s", (code,)).fetchone()[0]
        variants = db.execute("select count(*) from shopify.skus where shop = %s", (code,)).fetchone()[0]
        spec = {"deleted_orders": max(1, orders // 20), "deleted_variants": max(1, variants // 10),
                "deleted_customers": customers, "edited_products": products}  # fmt: skip
        answer = httpx.post(f"{server.base_url}/_admin/shops/{code.lower()}/changes", json=spec, timeout=60).json()
        deleted["orders"] |= set(answer["deleted_orders"])
        deleted["skus"] |= set(answer["deleted_variants"])
        if customers:
            deleted["customers"] |= set(answer["deleted_customers"])
    return deleted


def test_without_webhooks_an_incremental_round_a_snapshot_and_reconciliation_find_every_deletion(
    db: psycopg.Connection, dsn: str, tmp_path
) -> None:
    server = start(tuple(SHOPS), days=4, orders_per_day=30, start_latency=0.2, objects_per_second=20_000)
    try:
        _setup(db)
        env, log = runner_env(dsn, server), tmp_path / "runner.log"
        _until_idle(env, log)
        _assert_mirror_is_the_shops(db, server, {"orders": set(), "skus": set()})
        deleted = _delete(server, db)
        # The mirror also lost an order of its own and holds another one older than Shopify: reconciliation
        # must bring both back by exporting their days again.
        lost, stale = db.execute(
            "select (array_agg(id order by id))[1], (array_agg(id order by id))[2] from shopify.orders "
            "where shop = 'DE' and deleted_at is null and id <> all(%s)", (list(deleted["orders"]),),
        ).fetchone()  # fmt: skip
        db.execute("delete from shopify.orders where id = %s", (lost,))
        db.execute("update shopify.orders set updated_at = updated_at - interval '1 day', total_price = 0 "
                   "where id = %s", (stale,))  # fmt: skip
        db.execute("select bulk_sync.enqueue_incremental()")
        db.execute("select bulk_sync.enqueue_backfill(current_date, current_date, '{skus,products}')")
        _until_idle(env, log)
        assert db.execute("select count(*) from shopify.skus where deleted_at is not null").fetchone()[0] == len(
            deleted["skus"]
        )  # the snapshot found every deleted variant; orders need reconciliation
        assert db.execute("select count(*) from shopify.orders where deleted_at is not null").fetchone() == (0,)
        created = db.execute("select bulk_sync.enqueue_reconcile(%s, %s)", DAYS).fetchone()[0]
        assert created == len(SHOPS) * 4 + len(SHOPS)  # the orders of each day, each shop's customers
        _until_idle(env, log)
        _assert_mirror_is_the_shops(db, server, deleted)
        gaps = db.execute(
            "select count(*) from bulk_sync.job_runs where phase = 'reconcile' and status = 'queued'"
        ).fetchone()[0]
        assert gaps >= 1  # the day of the lost and the stale order was exported again
        statuses = db.execute("select distinct status from bulk_sync.jobs").fetchall()
        assert statuses == [("completed",)]
    finally:
        server.stop()


def test_with_webhooks_deletions_land_before_any_reconciliation(db: psycopg.Connection, dsn: str, tmp_path) -> None:
    port = free_port()
    server = start(tuple(SHOPS), days=2, orders_per_day=30, start_latency=0.2, objects_per_second=20_000,
                   webhook_url=f"http://127.0.0.1:{port}/webhooks", webhook_secret=SECRET)  # fmt: skip
    runner = None
    try:
        _setup(db)
        env, log = runner_env(dsn, server, SHOPIFY_WEBHOOK_SECRET=SECRET), tmp_path / "runner.log"
        hook_args = ("--webhook-port", str(port), "--webhook-host", "127.0.0.1")
        runner = start_runner(env, "--concurrency", "3", *hook_args, log=log)
        deadline = time.monotonic() + 120  # guards a hang only

        def settled() -> bool:
            return db.execute(
                "select count(*) filter (where status not in ('completed', 'failed')) = 0 and count(*) > 0 "
                "from bulk_sync.jobs"
            ).fetchone()[0]

        while not settled():
            assert runner.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        # customers/delete: marked by its webhook alone (no reconciliation); products/update: renamed products, and
        # those that lost variants (updated then), written from their webhooks alone (no snapshot)
        deleted = _delete(server, db, customers=3, products=2)
        while db.execute(
            "select (select count(*) from shopify.orders where deleted_at is not null) "
            "+ (select count(*) from shopify.skus where deleted_at is not null)"
            "+ (select count(*) from shopify.customers where deleted_at is not null)"
        ).fetchone()[0] < sum(map(len, deleted.values())):
            assert runner.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        renamed = "select count(*) from shopify.products where title like 'Renamed%%'"
        while db.execute(renamed).fetchone()[0] < 2 * len(SHOPS):
            assert runner.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        assert db.execute("select count(*) from bulk_sync.jobs where entity <> all('{orders,refunds,skus,customers,"
                          "products}')").fetchone() == (0,)  # fmt: skip
        _assert_mirror_is_the_shops(db, server, deleted)
        outcomes = db.execute("select outcome, count(*) from bulk_sync.webhooks group by 1 order by 1").fetchall()
        print(f"deletion webhooks: {outcomes}")
    finally:
        if runner is not None:
            os.killpg(runner.pid, signal.SIGTERM)
            runner.wait(timeout=60)
        server.stop()


@pytest.mark.parametrize("lost", [3])
def test_a_start_whose_report_was_lost_is_adopted_never_started_twice(
    db: psycopg.Connection, dsn: str, tmp_path, lost: int
) -> None:
    server = start(tuple(SHOPS), days=3, orders_per_day=20, start_latency=1.0, objects_per_second=2_000,
                   faults={code: {"lost_start_report": lost} for code in SHOPS})  # fmt: skip
    try:
        _setup(db)
        log = tmp_path / "runner.log"
        _until_idle(runner_env(dsn, server), log)
        stats = httpx.get(f"{server.base_url}/_admin/stats").json()["shops"]
        adopted = db.execute(
            "select j.shop, count(*) from bulk_sync.job_runs as r join bulk_sync.jobs as j on j.id = r.job_id "
            "where r.phase = 'start' and r.message like '%%adopted%%' group by j.shop order by 1"
        ).fetchall()
        print(f"lost starts {lost} per shop; adopted {adopted}; operations started "
              f"{ {c: stats[c]['operations_started'] for c in SHOPS} }")  # fmt: skip
        assert dict(adopted) == dict.fromkeys(SHOPS, lost)
        assert all(stats[code]["duplicate_starts"] == 0 for code in SHOPS), stats
        assert db.execute("select distinct status from bulk_sync.jobs").fetchall() == [("completed",)]
        for name in TABLES:
            expected = truth(server, SHOPS, name)
            assert database_rows(db, name) == expected, name
    finally:
        server.stop()
