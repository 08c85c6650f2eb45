import os
import re
from pathlib import Path

import psycopg
import pytest

from runner.migrate import definitions, migrate, migrations
from runner.shared import ConfigError
from tests.catalog import columns, differences, rows, snapshot
from tests.jobs import claim, report
from tests.processes import cli
from tests.releases import copy_sql, install_release_0_1


def test_recorded_once_and_a_second_run_changes_nothing(db: psycopg.Connection) -> None:
    recorded = [n for (n,) in db.execute("select name from bulk_sync.migrations order by name").fetchall()]
    assert recorded == sorted([m.name for m in migrations()] + [d.name for d in definitions()])
    before = snapshot(db)
    assert migrate(db) == []
    assert differences(snapshot(db), before) == {}


def test_nothing_of_bulk_sync_in_public(db: psycopg.Connection) -> None:
    public = db.execute(
        """select (select count(*) from pg_class where relnamespace = 'public'::regnamespace)
                + (select count(*) from pg_proc where pronamespace = 'public'::regnamespace)
                + (select count(*) from pg_extension where extnamespace = 'public'::regnamespace)"""
    ).fetchone()[0]
    assert public == 0
    assert db.execute("select count(*) from pgmq.meta where queue_name = 'bulk_sync'").fetchone() == (1,)
    for table in ("bulk_sync.shops", "bulk_sync.jobs", "bulk_sync.job_runs", "bulk_sync.settings", "shopify.orders"):
        assert db.execute("select to_regclass(%s) is not null", (table,)).fetchone() == (True,)


def test_edited_migration_is_refused(db: psycopg.Connection) -> None:
    db.execute("update bulk_sync.migrations set checksum = 'x' where name = 'migrations/0001_baseline.sql'")
    with pytest.raises(ConfigError, match="changed after it was applied"):
        migrate(db)


def test_a_changed_definition_file_is_applied_again_and_leaves_nothing_behind(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    root = copy_sql(tmp_path)
    api, shops = root / "70_api.sql", root / "68_shops.sql"
    text = api.read_text()
    assert "coalesce(p_api_version, '2026-10')" in shops.read_text()
    # A new default version, and require_shop gone: the database must follow the files exactly.
    start = text.index("-- Raises BS002 when p_shop is given but not registered.")
    end = text.index("$$;", start) + 3
    api.write_text(text[:start] + text[end:])
    shops.write_text(shops.read_text().replace("'2026-10')", "'2027-01')"))
    done = migrate(db, root)
    assert done == ["definitions (68_shops.sql, 70_api.sql)"]
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
    assert db.execute("select api_version from bulk_sync.shops").fetchone() == ("2027-01",)
    assert db.execute("select to_regprocedure('bulk_sync.require_shop(text)')").fetchone() == (None,)
    # Grants are re-applied with the rest: the operator may still call the API.
    assert db.execute(
        "select has_function_privilege('bulk_sync_operator', 'bulk_sync.add_shop(text,text,text,integer,text)', "
        "'execute')"
    ).fetchone() == (True,)
    assert migrate(db, root) == []


def test_cli_migrate_on_an_empty_database(new_database) -> None:
    env = {**os.environ, "DATABASE_URL": new_database("fresh_cli")}
    first = cli("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "migrations/0001_baseline.sql" in first.stdout and "pgmq" in first.stdout
    second = cli("migrate", env=env)
    assert second.returncode == 0 and "up to date" in second.stdout


def test_cli_configuration_mistakes_are_one_line(dsn: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    missing = cli("migrate", env=env)
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "DATABASE_URL" in missing.stderr
    unreachable = cli("status", env={**env, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert unreachable.returncode == 2
    assert "cannot connect" in unreachable.stderr and "Traceback" not in unreachable.stderr


# What a release-0.1 database holds, table by table (old name, new name).
TABLES = [
    ("bulk_sync_settings", "bulk_sync.settings"), ("bulk_sync_shops", "bulk_sync.shops"),
    ("bulk_sync_jobs", "bulk_sync.jobs"), ("bulk_sync_job_runs", "bulk_sync.job_runs"),
    ("bulk_sync_transitions", "bulk_sync.transitions"), ("bulk_sync_staging", "bulk_sync.staging"),
    ("bulk_sync_import_roots", "bulk_sync.import_roots"), ("bulk_sync_rejects", "bulk_sync.rejects"),
    ("bulk_sync_watermarks", "bulk_sync.watermarks"), ("bulk_sync_webhooks", "bulk_sync.webhooks"),
    ("shopify.orders", "shopify.orders"), ("shopify.order_line_items", "shopify.order_line_items"),
    ("shopify.refunds", "shopify.refunds"), ("shopify.skus", "shopify.skus"),
]  # fmt: skip


def _fill_release_0_1(old: psycopg.Connection) -> None:
    """Jobs in several states with their audit trail, staged and quarantined lines, data, a watermark, a webhook."""
    old.execute("update bulk_sync_settings set lease_seconds = 300, max_concurrent_imports = 3")
    for code in ("DE", "NL"):
        old.execute("select add_shop(%s, %s, '2025-10')", (code, f"{code.lower()}.myshopify.com"))
    old.execute("select enqueue_backfill('2025-09-01', '2025-09-03', '{orders,skus}')")
    first, second = [t for (t,) in old.execute("select bulk_sync_claim('old-runner', 10)").fetchall()]
    operation = "gid://shopify/BulkOperation/7"
    old.execute("select report_operation_started(%s, %s, %s)", (first["job_id"], first["fence"], operation))
    old.execute("select report_fatal_error(%s, %s, 'ACCESS_DENIED')", (second["job_id"], second["fence"]))
    job = old.execute("select min(id) from bulk_sync_jobs").fetchone()[0]
    old.execute('insert into bulk_sync_staging values (%s, 1, \'{"id": "x"}\')', (job,))
    old.execute("insert into bulk_sync_import_roots values (%s, 'gid://shopify/Order/1', true)", (job,))
    old.execute("insert into bulk_sync_rejects (job_id, line_no, reason, line) values (%s, 2, 'not JSON', 'x')", (job,))
    old.execute("insert into bulk_sync_watermarks (shop, entity, watermark) values ('DE', 'orders', now())")
    old.execute("insert into bulk_sync_webhooks (webhook_id, shop, outcome) values ('w1', 'DE', 'polled')")
    old.execute(
        """insert into shopify.orders (id, shop, total_price, raw, import_job)
           values ('gid://shopify/Order/1', 'DE', 12.30, '{}', %s)""", (job,)
    )  # fmt: skip
    old.execute(
        """insert into shopify.order_line_items (id, shop, order_id, raw, import_job)
           values ('gid://shopify/LineItem/1', 'DE', 'gid://shopify/Order/1', '{}', %s)""", (job,)
    )  # fmt: skip
    old.execute(
        """insert into shopify.refunds (id, shop, order_id, raw, import_job)
           values ('gid://shopify/Refund/1', 'DE', 'gid://shopify/Order/1', '{}', %s)""", (job,)
    )  # fmt: skip
    old.execute(
        "insert into shopify.skus (id, shop, raw, import_job) values ('gid://shopify/ProductVariant/1', 'DE', '{}', 1)"
    )


def test_a_release_0_1_database_is_upgraded_identical_to_a_fresh_one_with_its_data_kept(new_database) -> None:
    with psycopg.connect(new_database("fresh_db")) as fresh:
        migrate(fresh)
        fresh_catalog = snapshot(fresh)
    with psycopg.connect(new_database("release_0_1"), autocommit=True) as old:
        install_release_0_1(old)
        _fill_release_0_1(old)
        names = {new: columns(old, name) for name, new in TABLES}
        before = {new: rows(old, name, names[new]) for name, new in TABLES}
        statuses = dict(old.execute("select status, count(*) from bulk_sync_jobs group by 1").fetchall())
        assert {"failed", "queued", "waiting", "starting"} <= set(statuses)  # a varied release-0.1 database
        queued = old.execute("select count(*) from pgmq.q_bulk_sync").fetchone()[0]
        done = migrate(old)
        assert "upgraded from release 0.1" in done
        assert differences(snapshot(old), fresh_catalog) == {}
        after = {new: rows(old, new, names[new]) for new in before}
        # later migrations add legal changes of state (0007: a job whose staging was lost downloads again)
        assert set(before.pop("bulk_sync.transitions")) < set(after.pop("bulk_sync.transitions"))
        assert after == before
        assert old.execute("select count(*) from pgmq.q_bulk_sync").fetchone()[0] == queued
        assert old.execute("select to_regclass('public.bulk_sync_migrations')").fetchone() == (None,)
        # It goes on where it stopped: the messages of release 0.1 are claimed and reported as before.
        old.execute("update pgmq.q_bulk_sync set vt = now()")  # the poll, due in a few seconds, due now
        tasks = claim(old, "new-runner", qty=100)
        assert {t["task"] for t in tasks} >= {"start", "poll"}
        start = next(t for t in tasks if t["task"] == "start")
        assert report(old, "report_operation_started", start["job_id"], start["fence"], "gid://shopify/BulkOperation/8")
        assert migrate(old) == []


def test_a_partial_release_0_1_database_is_refused_with_what_to_do(new_database) -> None:
    with psycopg.connect(new_database("partial"), autocommit=True) as old:
        install_release_0_1(old)
        old.execute("delete from bulk_sync_migrations where version = 12")
        with pytest.raises(ConfigError, match="without migration 0012_incremental: run `bulk-sync migrate` of release"):
            migrate(old)
        assert old.execute("select to_regclass('public.bulk_sync_jobs') is not null").fetchone() == (True,)


def test_each_function_view_and_trigger_is_defined_once_and_only_in_a_definition_file(db: psycopg.Connection) -> None:
    pattern = re.compile(
        r"^create (?:or replace )?(function|procedure|view|trigger) ([\w.]+)(\([^)]*\))?", re.MULTILINE
    )
    found = [(name, args) for d in definitions() for _, name, args in pattern.findall(d.sql)]
    assert len(found) > 60 and len(found) == len(set(found)), sorted(found)  # once each (overloads differ in args)
    defined = sorted({name for name, _ in found})
    assert all(not pattern.search(m.sql) for m in migrations())
    # ...and the database holds exactly these.
    in_database = db.execute(
        """select pronamespace::regnamespace || '.' || proname from pg_proc
           where pronamespace = 'bulk_sync'::regnamespace
           union all select schemaname || '.' || viewname from pg_views where schemaname = 'bulk_sync'"""
    ).fetchall()
    assert sorted({n for (n,) in in_database}) == [n for n in defined if n.startswith("bulk_sync.")]
    assert len(in_database) == len([name for name, _ in found if name.startswith("bulk_sync.")])
