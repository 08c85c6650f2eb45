"""Entities as data: a mirrored column is a row of bulk_sync.mirror_columns and a migration adding the column; the
bulk query selects it and the import writes it with no function changed."""

import datetime as dt
import re
from pathlib import Path

import psycopg
import pytest

from runner.migrate import migrate
from tests.processes import runner_env, start_runner
from tests.releases import copy_sql
from tests.sim import start

COLUMNS = """
alter table shopify.skus add column display_name text;
alter table shopify.order_line_items add column variant_sku text;
insert into bulk_sync.mirror_columns (table_name, column_name, position, paths, type) values
('skus', 'display_name', 100, '{displayName}', 'text'),
('order_line_items', 'variant_sku', 100, '{variant.sku}', 'text');
"""


def _functions(db: psycopg.Connection) -> list[tuple[str, str]]:
    return db.execute(
        """select p.oid::regprocedure::text, p.prosrc from pg_proc as p
           where p.pronamespace = 'bulk_sync'::regnamespace order by 1"""
    ).fetchall()


def test_a_column_added_as_data_is_exported_and_imported_with_no_function_changed(db, dsn, tmp_path) -> None:
    root = copy_sql(tmp_path)
    (root / "migrations" / "0999_more_columns.sql").write_text(COLUMNS)
    before = _functions(db)
    assert migrate(db, root)[0] == "migrations/0999_more_columns.sql"
    assert _functions(db) == before
    server = start(("DE",), days=2, orders_per_day=15, start_latency=0.2, objects_per_second=20_000)
    try:
        db.execute("update bulk_sync.settings set poll_interval_seconds = 1, lease_seconds = 10")
        db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
        db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-02', '{orders,skus}')")
        log = tmp_path / "runner.log"
        runner = start_runner(runner_env(dsn, server), "--until-idle", log=log)
        assert runner.wait(timeout=300) == 0, log.read_text()[-3000:]
        shop = server.shopify.shops["DE"]
        variants = {v["id"]: v["displayName"] for v in shop.variants()}
        assert dict(db.execute("select id, display_name from shopify.skus").fetchall()) == variants
        lines = {li["id"]: li["variant"]["sku"] for o in shop.orders() for li in o["_lines"]}
        stored = db.execute("select id, variant_sku from shopify.order_line_items").fetchall()
        assert len(lines) > 20 and dict(stored) == lines
    finally:
        server.stop()


NAMES = re.compile(
    r"'(orders|refunds|skus|order_ids|customers|products|customer_ids)'"
    r"|shopify\.(orders|refunds|skus|customers|products)\b|'(Order|ProductVariant|Refund|Customer|Product)'"
)


def test_only_deletion_webhooks_and_a_default_name_an_entity(db) -> None:
    """Entity knowledge is data: the definitions that still name one are these (before entities became rows, 20
    definitions and 4 check constraints did). The webhooks are about Shopify's topics (and products/update's REST
    names) by nature; a parameter's default cannot be a query."""
    root = Path(__file__).resolve().parents[2] / "sql"
    naming = {}
    for path in sorted(root.glob("[0-9]*.sql")):
        for chunk in re.split(r"^create or replace (?:function|view|trigger) ", path.read_text(), flags=re.M)[1:]:
            body = "\n".join(line.split("--")[0] for line in chunk.splitlines())
            if NAMES.search(body) or "{orders,refunds,skus," in body:
                naming[chunk.split("(", 1)[0].split()[0]] = path.name
    assert naming == {
        "bulk_sync.webhook_deleted": "65_deletions.sql", "bulk_sync.refresh_product": "65_deletions.sql",
        "bulk_sync.enqueue_backfill": "70_api.sql",
    }  # fmt: skip
    checks = db.execute(
        """select conname, pg_get_constraintdef(oid) from pg_constraint
           where connamespace = 'bulk_sync'::regnamespace and contype = 'c'"""
    ).fetchall()
    assert [name for name, definition in checks if NAMES.search(definition)] == []
    # what the dropped check said, a trigger reading the entities says: a snapshot has no window, the rest one
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
    day = ("updated_at", dt.datetime(2025, 9, 1, tzinfo=dt.UTC), dt.datetime(2025, 9, 2, tzinfo=dt.UTC))
    for entity, window in (("skus", day), ("orders", (None, None, None))):
        with pytest.raises(psycopg.errors.CheckViolation), db.transaction():
            db.execute(
                """insert into bulk_sync.jobs (shop, entity, filter_field, window_start, window_end)
                   values ('DE', %s, %s, %s, %s)""",
                (entity, *window),
            )
