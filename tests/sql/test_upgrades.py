"""Upgrades keep what users made: their views over bulk-sync's, and the data of a database of release 0.2."""

from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from runner.migrate import migrate, sql_dir
from runner.shared import ConfigError
from tests.catalog import columns, differences, rows, snapshot
from tests.jobs import login
from tests.releases import copy_sql

# A user's reporting objects: a view over bulk-sync's view, a view over that one, a populated materialized view with
# an index, and a view in public over a bulk_sync view; owners, grants and comments of their own.
USER_OBJECTS = """
create view shopify.daily_revenue with (security_invoker = true) as
select shop, created_at::date as day, sum(total_price) as revenue from shopify.live_orders group by 1, 2;
create view shopify.best_days (shop, best_day) as
select distinct on (shop) shop, day from shopify.daily_revenue order by shop, revenue desc;
create materialized view shopify.revenue_by_shop as select shop, sum(revenue) as revenue
from shopify.daily_revenue group by shop;
create unique index revenue_by_shop_shop on shopify.revenue_by_shop (shop);
create view public.my_progress as select shop, percent from bulk_sync.progress;
alter view shopify.best_days owner to bulk_sync_operator;
grant select on shopify.daily_revenue to bulk_sync_reader;
grant select (shop) on shopify.best_days to bulk_sync_runner;
revoke all on shopify.revenue_by_shop from postgres;
grant select on shopify.revenue_by_shop to postgres, bulk_sync_reader with grant option;
comment on view shopify.daily_revenue is 'revenue per shop and day';
comment on column shopify.daily_revenue.revenue is 'in the shop''s currency';
comment on materialized view shopify.revenue_by_shop is 'refreshed nightly';
"""

# What the users' objects are, as data: kind, owner, privileges, options, populated, definition, comments, indexes.
USERS = """
select c.oid::regclass::text, c.relkind, c.relowner::regrole::text, coalesce(c.relacl::text, ''),
       coalesce(c.reloptions::text, ''), c.relispopulated, pg_get_viewdef(c.oid),
       coalesce(obj_description(c.oid, 'pg_class'), ''),
       array(select coalesce(a.attacl::text, '') || coalesce(col_description(c.oid, a.attnum), '')
             from pg_attribute as a where a.attrelid = c.oid and a.attnum > 0 order by a.attnum)::text,
       array(select pg_get_indexdef(indexrelid) from pg_index where indrelid = c.oid)::text
from pg_class as c
where c.oid::regclass::text in ('shopify.daily_revenue', 'shopify.best_days', 'shopify.revenue_by_shop',
                                'my_progress', 'shopify.my_orders')
order by 1"""


def _changed_views(tmp_path: Path, edit=lambda text: text + "\n-- changed\n") -> Path:
    """A copy of sql/ whose 80_views.sql changed (by default a comment: the definitions are applied again)."""
    root = copy_sql(tmp_path)
    views = root / "80_views.sql"
    views.write_text(edit(views.read_text()))
    return root


def _orders(db: psycopg.Connection) -> None:
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
    db.execute(
        """insert into shopify.orders (id, shop, created_at, total_price, raw, import_job)
           select 'gid://shopify/Order/' || n, 'DE', '2025-09-01'::timestamptz + n * interval '7 hours', n, '{}', 1
           from generate_series(1, 20) as n"""
    )


def test_users_views_over_bulk_sync_views_survive_a_migrate_with_their_grants_indexes_and_data(
    db: psycopg.Connection, tmp_path: Path
) -> None:
    _orders(db)
    db.execute(USER_OBJECTS)
    before = db.execute(USERS).fetchall()
    data = db.execute("select * from shopify.revenue_by_shop order by shop").fetchall()
    assert len(before) == 4 and data == [("DE", 210)]
    done = migrate(db, _changed_views(tmp_path))
    assert done[0] == "definitions (80_views.sql)" and len(done) == 2
    kept = done[1].removeprefix("kept ").removesuffix(" (re-created over the new definitions)").split(", ")
    assert sorted(kept) == [
        "public.my_progress",
        "shopify.best_days",
        "shopify.daily_revenue",
        "shopify.revenue_by_shop",
    ]
    assert db.execute(USERS).fetchall() == before
    # the materialized view holds its data, and reads the new definitions' rows
    assert db.execute("select * from shopify.revenue_by_shop order by shop").fetchall() == data
    db.execute("update shopify.orders set deleted_at = now() where id = 'gid://shopify/Order/20'")
    db.execute("refresh materialized view concurrently shopify.revenue_by_shop")
    assert db.execute("select revenue from shopify.revenue_by_shop").fetchone() == (190,)
    # kept objects are the user's: the next migrate that applies the definitions keeps them again
    done = migrate(db, _changed_views(tmp_path / "again", lambda text: text + "\n-- changed twice\n"))
    assert done[0] == "definitions (80_views.sql)" and "shopify.revenue_by_shop" in done[1]
    assert db.execute(USERS).fetchall() == before


def test_an_unpopulated_materialized_view_stays_unpopulated(db: psycopg.Connection, tmp_path: Path) -> None:
    db.execute("create materialized view shopify.later as select id from shopify.live_orders with no data")
    migrate(db, _changed_views(tmp_path))
    assert db.execute("select relispopulated from pg_class where oid = 'shopify.later'::regclass").fetchone() == (
        False,
    )


def test_a_users_view_on_bulk_sync_tables_keeps_its_privileges(db: psycopg.Connection, tmp_path: Path) -> None:
    db.execute("create view shopify.my_orders as select id, shop from shopify.orders")
    db.execute("grant select on shopify.my_orders to bulk_sync_operator")
    before = db.execute(USERS).fetchall()
    migrate(db, _changed_views(tmp_path))
    assert db.execute(USERS).fetchall() == before
    assert db.execute("select has_table_privilege('bulk_sync_reader', 'shopify.my_orders', 'select')").fetchone() == (
        False,
    )


@pytest.mark.parametrize(
    ("objects", "edit", "message"),
    [
        (
            """create view shopify.editable as select id, shop from shopify.live_orders;
               create function public.no_edit() returns trigger language plpgsql as 'begin return null; end';
               create trigger no_edit instead of update on shopify.editable
               for each row execute function public.no_edit()""",
            None,
            "view shopify.editable depends on bulk-sync's objects and has triggers (no_edit) that migrate does not "
            "re-create; drop it, run migrate, then create it again (nothing was changed)",
        ),
        (
            """create function public.percent_done() returns numeric language sql
               begin atomic; select avg(percent) from bulk_sync.progress; end""",
            None,
            "function public.percent_done() depends on bulk-sync's objects and is not a view",
        ),
        (
            "create view public.behind as select shop, behind from bulk_sync.progress",
            lambda text: text.replace("as behind", "as lag"),
            "view public.behind could not be re-created (column progress.behind does not exist)",
        ),
    ],
    ids=["trigger-on-view", "function", "column-gone"],
)
def test_what_cannot_be_kept_stops_migrate_and_changes_nothing(
    db: psycopg.Connection, tmp_path: Path, objects: str, edit, message: str
) -> None:
    db.execute(objects)
    root = _changed_views(tmp_path, edit) if edit else _changed_views(tmp_path)
    if edit:
        assert (root / "80_views.sql").read_text() != (sql_dir() / "80_views.sql").read_text()
    before = snapshot(db)
    users = db.execute("select count(*) from pg_class where relnamespace = 'public'::regnamespace").fetchone()
    with pytest.raises(ConfigError) as raised:
        migrate(db, root)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert differences(snapshot(db), before) == {}
    assert db.execute("select count(*) from pg_class where relnamespace = 'public'::regnamespace").fetchone() == users


def test_what_migrate_records_as_bulk_syncs_is_what_its_files_define(db: psycopg.Connection) -> None:
    from runner.definitions import defined, existing

    recorded = defined(db)
    assert len(recorded) > 100 and recorded == existing(db)
    assert ("view", "shopify.live_orders") in recorded and ("trigger", "jobs_guard on bulk_sync.jobs") in recorded
    # every table of the mirror is bulk-sync's, readable by its reader (personal data by its own reader only)
    tables = db.execute(
        """select count(*) filter (where not c.oid = any(bulk_sync.mirror_relations())),
                  count(*) filter (where not has_any_column_privilege('bulk_sync_reader', c.oid, 'select')),
                  count(*) filter (where not has_table_privilege('bulk_sync_reader_pii', c.oid, 'select'))
           from pg_class as c where c.relnamespace = 'shopify'::regnamespace and c.relkind in ('r', 'v')"""
    ).fetchone()
    assert tables == (0, 0, 0)


def _tables(conn: psycopg.Connection) -> dict[str, str]:
    """Every table of bulk-sync, with its columns (quoted, in order)."""
    names = conn.execute(
        """select c.oid::regclass::text from pg_class as c
           where c.relnamespace in ('bulk_sync'::regnamespace, 'shopify'::regnamespace) and c.relkind = 'r'
             and c.oid <> 'bulk_sync.migrations'::regclass"""
    ).fetchall()
    return {name: columns(conn, name) for (name,) in names}


def fill_release_0_2(old: psycopg.Connection) -> None:
    """Rows in every table of a release-0.2 database: shops, jobs in several states with their audit trail and
    messages, a runner, staged, quarantined and imported lines, a watermark, a webhook and the mirror."""
    old.execute("update bulk_sync.settings set lease_seconds = 300")
    for code in ("DE", "NL"):
        old.execute("select bulk_sync.add_shop(%s, %s, '2025-10')", (code, f"{code.lower()}.myshopify.com"))
    old.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-03', '{orders,skus}')")
    first, second = [t for (t,) in old.execute("select bulk_sync.claim('old-runner', 10)").fetchall()][:2]
    old.execute(
        "select bulk_sync.report_operation_started(%s, %s, 'gid://shopify/BulkOperation/7')",
        (first["job_id"], first["fence"]),
    )
    old.execute("select bulk_sync.report_fatal_error(%s, %s, 'ACCESS_DENIED')", (second["job_id"], second["fence"]))
    job = first["job_id"]
    old.execute("""insert into bulk_sync.staging values (%s, 1, '{"id": "x"}')""", (job,))
    old.execute("insert into bulk_sync.import_roots values (%s, 'gid://shopify/Order/1', true, now())", (job,))
    old.execute("insert into bulk_sync.rejects (job_id, line_no, reason, line) values (%s, 2, 'not JSON', 'x')", (job,))
    old.execute("insert into bulk_sync.watermarks (shop, entity, watermark) values ('DE', 'orders', now())")
    old.execute("insert into bulk_sync.webhooks (webhook_id, shop, outcome) values ('w1', 'DE', 'polled')")
    old.execute(
        "insert into shopify.orders (id, shop, raw, import_job) values ('gid://shopify/Order/1', 'DE', '{}', 1)"
    )
    old.execute(
        "insert into shopify.skus (id, shop, raw, import_job) values ('gid://shopify/ProductVariant/1', 'DE', '{}', 1)"
    )
    old.execute(
        """insert into shopify.order_line_items (id, shop, order_id, raw, import_job)
           values ('gid://shopify/LineItem/1', 'DE', 'gid://shopify/Order/1', '{}', 1)"""
    )
    old.execute(
        """insert into shopify.refunds (id, shop, order_id, raw, import_job)
           values ('gid://shopify/Refund/1', 'DE', 'gid://shopify/Order/1', '{}', 1)"""
    )


def test_a_release_0_2_database_is_upgraded_identical_to_a_fresh_one_with_every_row_kept(new_database) -> None:
    from tests.releases import install_release_0_2

    # tables whose rows the migrations define (the job states and their legal moves, the entities' import slots): as
    # a fresh database's
    defined = ("bulk_sync.job_states", "bulk_sync.transitions", "bulk_sync.import_limits")
    with psycopg.connect(new_database("fresh_db"), autocommit=True) as fresh:
        migrate(fresh)
        fresh_catalog = snapshot(fresh)
        fresh_defined = {t: rows(fresh, t, columns(fresh, t)) for t in defined}
    old_dsn = new_database("release_0_2")
    with psycopg.connect(old_dsn, autocommit=True) as old:
        install_release_0_2(old)
        fill_release_0_2(old)
        with login(old, old_dsn, "bulk_sync_reader") as reader:  # a reader of 0.2 reads every column, personal too
            assert reader.execute("select id, email, raw from shopify.orders").fetchall()
        tables = _tables(old)
        # every setting kept but the import cap, checked below
        tables["bulk_sync.settings"] = tables["bulk_sync.settings"].replace(", max_concurrent_imports", "")
        before = {t: rows(old, t, names) for t, names in tables.items()}
        assert [t for t, rows in before.items() if not rows] == []  # data in every table
        queued = old.execute("select count(*) from pgmq.q_bulk_sync").fetchone()[0]
        done = migrate(old)
        assert done[0].startswith("migrations/0008") and "definitions (unchanged files, re-applied)" not in done
        assert differences(snapshot(old), fresh_catalog) == {}
        after = {t: rows(old, t, names) for t, names in tables.items()}
        assert {t: after.pop(t) for t in defined} == fresh_defined
        assert after == {t: r for t, r in before.items() if t not in defined}
        # the overall import cap, at its default, grows with the entities' slots (migrations 0019, 0021)
        assert old.execute("select max_concurrent_imports from bulk_sync.settings").fetchone() == (8,)
        assert old.execute("select count(*) from pgmq.q_bulk_sync").fetchone()[0] == queued
        # every unleased job of a state with a task knows its wake-up, the message release 0.2 queued for it
        unknown = old.execute(
            """select count(*) from bulk_sync.jobs as j join bulk_sync.job_states as s on s.state = j.status
               where s.task is not null and j.lease_expires_at is null
                 and not exists (select from pgmq.q_bulk_sync as q where q.msg_id = j.task_msg_id)"""
        ).fetchone()
        assert unknown == (0,)
        assert migrate(old) == []
        # the same reader, upgraded: everything but personal data, which needs bulk_sync_reader_pii
        with login(old, old_dsn, "bulk_sync_reader") as reader:
            assert reader.execute("select id, shop, created_at from shopify.orders").fetchall()
            for column in ("email", "raw"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    reader.execute(sql.SQL("select {} from shopify.orders").format(sql.Identifier(column)))
        with login(old, old_dsn, "bulk_sync_reader_pii") as pii:
            assert pii.execute("select id, email, raw from shopify.orders").fetchall()


def test_a_release_0_2_database_with_a_domain_under_two_codes_stops_migrate_and_changes_nothing(new_database) -> None:
    import os

    from tests.processes import cli
    from tests.releases import install_release_0_2

    url = new_database("two_codes")
    with psycopg.connect(url, autocommit=True) as old:
        install_release_0_2(old)
        for code in ("DE", "DE2", "NL"):
            old.execute(
                "select bulk_sync.add_shop(%s, %s)", (code, "nl.myshopify.com" if code == "NL" else "de.myshopify.com")
            )
        before = snapshot(old)
        recorded = old.execute("select name, checksum from bulk_sync.migrations order by 1").fetchall()
        result = cli("migrate", env={**os.environ, "DATABASE_URL": url})
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr == (
            "bulk-sync: migration migrations/0009_shops_on_purpose.sql stopped, nothing changed: shops DE and DE2 "
            "share domain de.myshopify.com: a domain is one shop; point each code at its own shop's domain "
            "(select bulk_sync.add_shop(code, domain) in the release you run now) and migrate again\n"
        )
        assert differences(snapshot(old), before) == {}
        assert old.execute("select name, checksum from bulk_sync.migrations order by 1").fetchall() == recorded
        old.execute("select bulk_sync.add_shop('DE2', 'de-outlet.myshopify.com')")  # release 0.2's add_shop re-points
        assert migrate(old)[:2] == ["migrations/0008_defined_objects.sql", "migrations/0009_shops_on_purpose.sql"]
