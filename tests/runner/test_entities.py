"""Entities as data: a mirrored column is a row of bulk_sync.mirror_columns and a migration adding the column; the
bulk query selects it and the import writes it with no function changed."""

import psycopg

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
