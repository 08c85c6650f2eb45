"""Least privilege: what each role may do, and what it must not."""

import psycopg
import pytest
from psycopg import sql

from tests.jobs import claim, download, login, order_lines, report


def _denied(conn: psycopg.Connection, sql: str, *args: object) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(sql, args or None)


@pytest.fixture
def backfill(db: psycopg.Connection) -> None:
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-02', '{orders}')")


def test_the_runner_does_its_job_and_nothing_else(db: psycopg.Connection, dsn: str, backfill: None) -> None:
    with login(db, dsn, "bulk_sync_runner") as runner:
        (task,) = claim(runner, qty=1)
        jid = task["job_id"]
        assert report(runner, "report_operation_started", jid, task["fence"], "gid://shopify/BulkOperation/9")
        db.execute("update pgmq.q_bulk_sync set vt = now()")  # the first poll comes due
        (poll,) = [t for t in claim(runner, qty=5) if t["job_id"] == jid]
        lines = order_lines(jid, 3)
        size = sum(len(line.encode()) for line in lines)
        assert report(runner, "report_poll_result", jid, poll["fence"], "COMPLETED", None, 3, size, "https://x/e")
        (dl,) = [t for t in claim(runner, qty=5) if t["job_id"] == jid and t["task"] == "download"]
        assert download(runner, dl, lines)  # COPY into staging and the report, as the runner role
        (imp,) = [t for t in claim(runner, qty=5) if t["job_id"] == jid and t["task"] == "import"]
        runner.execute("call bulk_sync.import(%s, %s)", (jid, imp["fence"]))
        assert db.execute("select status from bulk_sync.jobs where id = %s", (jid,)).fetchone() == ("completed",)
        assert runner.execute("select code, domain from bulk_sync.shops").fetchall() == [("DE", "de.myshopify.com")]
        _denied(runner, "update bulk_sync.jobs set status = 'completed'")
        _denied(runner, "select * from bulk_sync.jobs")
        _denied(runner, "select * from shopify.orders")
        _denied(runner, "select bulk_sync.enqueue_backfill('2025-09-03', '2025-09-03')")
        _denied(runner, "select bulk_sync.retry_failed()")
        _denied(runner, "select * from pgmq.q_bulk_sync")
        _denied(runner, "select bulk_sync.fail(j, 'x', 'y') from bulk_sync.jobs as j")
        _denied(runner, "delete from bulk_sync.staging")
        # the webhook receiver's one call; incremental sync is the operator's
        assert runner.execute("select bulk_sync.webhook_finished('w1', 'de.myshopify.com', 'x')").fetchone() == (
            "ignored",
        )
        _denied(runner, "select bulk_sync.enqueue_incremental()")
        _denied(runner, "select * from bulk_sync.webhooks")


def test_the_operator_steers_but_cannot_report_or_edit(db: psycopg.Connection, dsn: str, backfill: None) -> None:
    with login(db, dsn, "bulk_sync_operator") as operator:
        assert operator.execute(
            "select bulk_sync.enqueue_backfill('2025-09-03', '2025-09-03', '{orders}')"
        ).fetchone() == (1,)
        assert operator.execute("select bulk_sync.cancel_jobs('DE')").fetchone()[0] == 3
        assert operator.execute("select bulk_sync.retry_failed()").fetchone() == (0,)
        operator.execute("select bulk_sync.tick()")
        assert operator.execute("select count(*) from bulk_sync.progress").fetchone() == (0,)  # all canceled
        assert operator.execute("select count(*) from bulk_sync.job_runs").fetchone()[0] > 0
        operator.execute("select * from bulk_sync.stuck")
        _denied(operator, "update bulk_sync.jobs set attempts = 0")
        _denied(operator, "select bulk_sync.report_fatal_error(1, 1, 'x')")
        _denied(operator, "select bulk_sync.claim('me', 1)")
        _denied(operator, "select * from shopify.orders")
        _denied(operator, "insert into bulk_sync.staging values (1, 1, 'x')")
        assert operator.execute("select bulk_sync.enqueue_incremental(null, now() - interval '1 hour')").fetchone() == (
            2,
        )  # orders and customers
        assert operator.execute("select shop from bulk_sync.freshness").fetchall() == [("DE",)] * 2
        _denied(operator, "select bulk_sync.webhook_finished('w1', 'de.myshopify.com', 'x')")
        _denied(operator, "update bulk_sync.watermarks set watermark = now()")
        failed = operator.execute("select id, kind, last_error from bulk_sync.jobs where status = 'failed'").fetchall()
        assert failed == [], failed


def test_the_reader_reads(db: psycopg.Connection, dsn: str, backfill: None) -> None:
    with login(db, dsn, "bulk_sync_reader") as reader:
        for table in ("orders", "order_line_items", "refunds", "skus", "customers", "products"):
            count = sql.SQL("select count(*) from {}").format(sql.Identifier("shopify", table))
            assert reader.execute(count).fetchone() == (0,)
        assert reader.execute("select count(*) from bulk_sync.progress").fetchone() == (1,)
        _denied(reader, "select bulk_sync.enqueue_backfill('2025-09-03', '2025-09-03')")
        _denied(reader, "select * from bulk_sync.jobs")
        _denied(reader, "delete from shopify.orders")


# Personal data, by name (this list, not the database's own marks): raw holds every field of the exported line.
PERSONAL = {
    "orders": {"email", "note", "shipping_zip"},
    "refunds": {"note"},
    "customers": {"email", "phone", "first_name", "last_name", "address1", "address2", "city", "zip"},
}


def test_personal_data_is_read_only_by_the_pii_reader(db: psycopg.Connection, dsn: str) -> None:
    relations = db.execute(
        """select c.relname, a.attname from pg_class as c join pg_attribute as a on a.attrelid = c.oid
           where c.relnamespace = 'shopify'::regnamespace and c.relkind in ('r', 'v') and a.attnum > 0
             and not a.attisdropped order by 1, 2"""
    ).fetchall()
    assert len({r for r, _ in relations}) == 2 * 12 + 1  # the tables, their live views, daily_sales
    with login(db, dsn, "bulk_sync_reader") as reader, login(db, dsn, "bulk_sync_reader_pii") as pii:
        readable = set()
        for relation, column in relations:
            query = sql.SQL("select {} from {} limit 0").format(
                sql.Identifier(column), sql.Identifier("shopify", relation)
            )
            pii.execute(query)  # the reader of personal data reads every column
            try:
                reader.execute(query)
                readable.add((relation, column))
            except psycopg.errors.InsufficientPrivilege:
                pass
        personal = {
            (r, c) for r, c in relations if c == "raw" or c in PERSONAL.get(r.removeprefix("live_"), set())
        }  # fmt: skip
        assert readable == set(relations) - personal
        assert len(personal) == 2 * (12 + 12)  # raw of every table and view, and the 12 personal columns of both
        _denied(reader, "select * from shopify.customers")
        assert reader.execute("select id, amount_spent, country from shopify.live_customers").fetchall() == []


def test_entry_points_cannot_be_redirected_by_search_path(db: psycopg.Connection) -> None:
    definers = db.execute(
        """select p.oid::regprocedure::text, p.proconfig from pg_proc as p
           where p.prosecdef and p.pronamespace = 'bulk_sync'::regnamespace"""
    ).fetchall()
    # the API, the claim, heartbeat, release, idle, the lease length, the reports (a failed cancel's and a fetched
    # page's too), import batches and outcomes, webhooks, the staging check trigger, the hand-out at commit; update,
    # pause, resume and remove a shop, cancel by ids and by days
    assert len(definers) == 34
    assert all(config == ["search_path=pg_catalog, pg_temp"] for _, config in definers), definers
    public = db.execute(
        """select count(*) from pg_proc as p where p.pronamespace = 'bulk_sync'::regnamespace
             and has_function_privilege('public', p.oid, 'execute')"""
    ).fetchone()[0]
    assert public == 0
