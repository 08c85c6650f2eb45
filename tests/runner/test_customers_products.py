"""Customers and products as entities of their own: equal to the simulator's ground truth after a backfill, and after
live changes (new orders' customers, redactions, renamed and deleted products) and an incremental round and a
snapshot, and after a reconciliation that finds deleted customers no webhook told of and a customer the mirror lost."""

import psycopg

from runner.simulator.truth import database_rows, key
from runner.simulator.webhooks import domain
from tests.processes import runner_env, start_runner
from tests.sim import next_second, start

SHOPS = ("DE", "CHF")


def _run(db: psycopg.Connection, dsn: str, server, log) -> None:
    runner = start_runner(runner_env(dsn, server), "--until-idle", "--concurrency", "3", log=log)
    assert runner.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert db.execute("select count(*) from bulk_sync.jobs where status <> 'completed'").fetchone()[0] == 0


def _equal(db: psycopg.Connection, server, name: str) -> list[dict]:
    truth = sorted((row for code in SHOPS for row in server.shopify.truth(code, name)), key=key(name))
    assert database_rows(db, name, live=True) == truth, name
    return truth


def test_customers_and_products_equal_the_truth_through_changes(db: psycopg.Connection, dsn: str, tmp_path) -> None:
    server = start(SHOPS, days=3, orders_per_day=30)
    try:
        db.execute("""update bulk_sync.settings set poll_interval_seconds = 1, backoff_base_seconds = 1,
                      backoff_cap_seconds = 2, lease_seconds = 10, incremental_min_seconds = 0""")  # fmt: skip
        for code in SHOPS:
            db.execute("select bulk_sync.add_shop(%s, %s)", (code, domain(code)))
        db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-03', '{customers,products}')")
        _run(db, dsn, server, tmp_path / "backfill.log")
        customers = _equal(db, server, "customers")
        assert len(customers) > 50 and all(c["email"] and c["first_name"] for c in customers)
        placed = sum(1 for code in SHOPS for _ in server.shopify.truth(code, "orders"))
        assert sum(c["number_of_orders"] for c in customers) == placed  # every order has its customer
        products = _equal(db, server, "products")
        assert {p["status"] for p in products} == {"ACTIVE", "DRAFT", "ARCHIVED"}
        # new orders (their customers change), redactions, renamed and deleted products
        changed = {
            code: server.shopify.change(code, new_orders=6, redacted_customers=3, edited_products=4,
                                        deleted_products=2)
            for code in SHOPS
        }  # fmt: skip
        next_second(db, server)
        assert db.execute("select bulk_sync.enqueue_incremental(null, '2025-09-01')").fetchone()[0] == 2 * len(SHOPS)
        db.execute("select bulk_sync.enqueue_backfill(current_date, current_date, '{products}')")
        _run(db, dsn, server, tmp_path / "changes.log")
        customers = {c["id"]: c for c in _equal(db, server, "customers")}
        redacted = [customers[i] for c in changed.values() for i in c["redacted_customers"]]
        assert len(redacted) == 3 * len(SHOPS)
        assert all(c["email"] is None and c["first_name"] is None and c["address1"] is None for c in redacted)
        products = {p["id"]: p for p in _equal(db, server, "products")}
        assert all(products[i]["title"].startswith("Renamed") for c in changed.values() for i in c["edited_products"])
        gone = [i for c in changed.values() for i in c["deleted_products"]]
        marked = db.execute("select id from shopify.products where deleted_at is not null order by id").fetchall()
        assert sorted(gone) == [i for (i,) in marked]
        # customers deleted without a webhook, and one the mirror lost: found by the reconciliation of customers
        deleted = {code: server.shopify.change(code, deleted_customers=2)["deleted_customers"] for code in SHOPS}
        lost = db.execute("""delete from shopify.customers where shop = 'DE' and deleted_at is null
                             and id = (select max(id) from shopify.customers where shop = 'DE')
                             returning id""").fetchone()[0]  # fmt: skip
        queued = db.execute("select bulk_sync.enqueue_reconcile('2025-09-01', '2025-09-03')").fetchone()[0]
        assert queued == len(SHOPS) * 3 + len(SHOPS)  # the orders of each day, and each shop's customers
        assert db.execute("select bulk_sync.enqueue_reconcile('2025-09-01', '2025-09-03')").fetchone()[0] == 0
        _run(db, dsn, server, tmp_path / "reconcile.log")
        customers = {c["id"] for c in _equal(db, server, "customers")}
        assert lost in customers
        marked = db.execute("""select id from shopify.customers where deleted_at is not null
                               order by id""").fetchall()  # fmt: skip
        assert sorted(i for ids in deleted.values() for i in ids) == [i for (i,) in marked]
        said = db.execute("""select a.message from bulk_sync.job_runs as a join bulk_sync.jobs as j on j.id = a.job_id
                             where j.entity = 'customer_ids' and a.phase = 'reconcile' and j.shop = 'DE'""").fetchone()
        assert said == ("2 customers no longer in Shopify marked deleted; 1 days queued for export again",), said
    finally:
        server.stop()
