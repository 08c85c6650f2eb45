"""bench/import: lines per second from staging into shopify.* (orders with line items and refunds, as the
simulator exports them), by batch size, on a private cluster with default durability.

    python -m bench.import [--orders-per-day 2000] [--days 5]"""

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

import psycopg

from bench.table import print_table
from runner import sqlapi
from runner.localpg import LocalCluster
from runner.simulator.data import Catalogue, Settings, ShopData
from runner.simulator.export import Export


def _lines(orders_per_day: int, days: int, query: str) -> list[str]:
    first = dt.date(2025, 9, 1)
    settings = Settings(first_day=first, last_day=first + dt.timedelta(days=days - 1), orders_per_day=orders_per_day)
    shop = ShopData("DE", 1, settings, Catalogue(settings))
    return [line for line, _ in Export.of(shop, query).lines()]


def _import(db: psycopg.Connection, lines: list[str], batch: int, run: int) -> float:
    """Stages the lines as a job of its own and imports it; returns seconds spent importing."""
    db.execute("update bulk_sync.settings set import_batch_size = %s", (batch,))
    day = dt.date(2025, 9, 1) + dt.timedelta(days=run)
    sqlapi.enqueue_backfill(db, day, day, ["orders"])
    (start,) = sqlapi.claim(db, "bench")
    jid = start["job_id"]
    size = sum(len(line.encode()) for line in lines)
    sqlapi.report_operation_started(db, jid, start["fence"], f"gid://shopify/BulkOperation/{jid}")
    db.execute("update pgmq.q_bulk_sync set vt = now()")
    (poll,) = sqlapi.claim(db, "bench")
    sqlapi.report_poll_result(db, jid, poll["fence"], "COMPLETED", None, len(lines), size, "https://x.example/e")
    (dl,) = sqlapi.claim(db, "bench")
    with db.transaction():
        with db.cursor().copy("copy bulk_sync.staging (job_id, line_no, line) from stdin") as copy:
            for number, line in enumerate(lines, 1):
                copy.write_row((jid, number, line.rstrip("\n")))
        sqlapi.report_download_finished(db, jid, dl["fence"], len(lines), size)
    (task,) = sqlapi.claim(db, "bench")
    started = time.perf_counter()
    sqlapi.import_job(db, jid, task["fence"])
    elapsed = time.perf_counter() - started
    status = db.execute("select status from bulk_sync.jobs where id = %s", (jid,)).fetchone()[0]
    assert status == "completed", status
    db.execute("truncate shopify.orders, shopify.order_line_items, shopify.refunds")
    return elapsed


def figures(argv: list[str] | None = None) -> list[tuple[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders-per-day", type=int, default=2000)
    parser.add_argument("--days", type=int, default=5)
    args = parser.parse_args(argv)
    out = []
    with tempfile.TemporaryDirectory(prefix="bulk-sync-bench-") as tmp, LocalCluster(Path(tmp)) as cluster:
        cluster.create_database("bench")
        with psycopg.connect(cluster.dsn("bench"), autocommit=True) as db:
            sqlapi.add_shop(db, "DE", "de.myshopify.com")
            # The fields bulk-sync's orders query selects, over every day of the data set.
            query = (
                "{ orders { edges { node { id name createdAt updatedAt processedAt cancelledAt cancelReason email "
                "note currencyCode displayFinancialStatus displayFulfillmentStatus customer { id } "
                "subtotalPriceSet { shopMoney { amount currencyCode } } totalPriceSet { shopMoney { amount "
                "currencyCode } } totalRefundedSet { shopMoney { amount currencyCode } } refunds { id createdAt note "
                "totalRefundedSet { shopMoney { amount currencyCode } } } lineItems { edges { node { id sku title "
                "name quantity currentQuantity variant { id } product { id } originalUnitPriceSet { shopMoney { "
                "amount currencyCode } } originalTotalSet { shopMoney { amount currencyCode } } } } } } } } }"
            )
            lines = _lines(args.orders_per_day, args.days, query)
            for run, batch in enumerate((1000, 5000, 20000)):
                seconds = _import(db, lines, batch, run)
                out.append(
                    (f"import lines/s, batches of {batch:,} ({len(lines):,} lines)", f"{len(lines) / seconds:.0f}")
                )
    return out


def main() -> None:
    print_table(figures())


if __name__ == "__main__":
    main()
