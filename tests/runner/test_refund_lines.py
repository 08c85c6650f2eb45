"""Refund line items, end to end: fetched after the import with regular nodes(ids:) queries, in pages, retried like
any Shopify call, and the job complete only when every refund's lines are in."""

import psycopg

from runner.simulator.truth import key
from tests.jobs import table
from tests.processes import runner_env, start_runner
from tests.sim import next_second, start


def _setup(db: psycopg.Connection) -> None:
    db.execute("""update bulk_sync.settings set poll_interval_seconds = 1, backoff_base_seconds = 1,
                  backoff_cap_seconds = 2, lease_seconds = 10, incremental_min_seconds = 0""")  # fmt: skip
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")


def _run(db: psycopg.Connection, dsn: str, server, log) -> None:
    runner = start_runner(runner_env(dsn, server), "--until-idle", log=log)
    assert runner.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert db.execute("select count(*) from bulk_sync.jobs where status <> 'completed'").fetchone()[0] == 0


def _equal(db: psycopg.Connection, server, name: str) -> int:
    truth = {key(name)(row): row for row in server.shopify.truth("DE", name)}
    stored = {key(name)(row): row for row in table(db, name)}
    assert stored == truth, (name, sorted(stored.keys() ^ truth.keys())[:5])
    return len(truth)


def test_refund_lines_are_fetched_in_pages_after_the_import(db, dsn, tmp_path) -> None:
    server = start(("DE",), days=3, orders_per_day=40)
    try:
        _setup(db)
        db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-03', '{orders}')")
        _run(db, dsn, server, tmp_path / "backfill.log")
        assert _equal(db, server, "refunds") >= 3
        assert _equal(db, server, "refund_line_items") >= 3
        # every job with refunds went through fetching, and completed from there
        fetched = db.execute("""select count(distinct job_id) from bulk_sync.job_runs
                                where from_status = 'fetching' and to_status = 'completed'""").fetchone()[0]
        assert fetched >= 1
        assert db.execute("select count(*) from bulk_sync.fetches").fetchone()[0] == 0

        # a refund of 300 lines, more refunds and an edit; the incremental round fetches only what changed
        before = db.execute("select parent_id, fetched_at from bulk_sync.fetched").fetchall()
        changed = server.shopify.change("DE", refunds=3, edits=2, refunded_lines=300)
        next_second(db, server)
        db.execute("select bulk_sync.enqueue_incremental(null, '2025-09-01')")
        _run(db, dsn, server, tmp_path / "incremental.log")
        (large,) = changed["large_refunds"]
        rows = db.execute("select position, quantity from shopify.refund_line_items where refund_id = %s order by 1",
                          (large,)).fetchall()  # fmt: skip
        assert [r[0] for r in rows] == list(range(1, 301)) and {r[1] for r in rows} == {1}
        assert _equal(db, server, "refund_line_items") >= 306
        assert _equal(db, server, "refunds") >= 6
        # the 300 lines came in three pages at least (5 first, then as many as 1,000 points allow: 124)
        pages = db.execute("""select count(*) from bulk_sync.job_runs
                              where from_status = 'fetching' and message like '%%rows of 1 parents fetched%%'""")
        assert pages.fetchone()[0] >= 2
        # refunds stored before and unchanged were not fetched again
        after = dict(db.execute("select parent_id, fetched_at from bulk_sync.fetched").fetchall())
        again = [p for p, at in before if after[p] != at]
        assert len(again) <= 3 + 2, again  # at most the refunded and edited orders' refunds
    finally:
        server.stop()


def test_throttled_and_failing_fetches_are_retried(db, dsn, tmp_path) -> None:
    server = start(("DE",), days=2, orders_per_day=40, faults={"DE": {"nodes_throttled": 2, "nodes_5xx": 2}})
    try:
        _setup(db)
        db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-02', '{orders}')")
        _run(db, dsn, server, tmp_path / "runner.log")
        assert _equal(db, server, "refund_line_items") >= 2
        faults = server.shopify.faults.counts
        assert faults[("DE", "nodes_throttled")] == 2 and faults[("DE", "nodes_5xx")] == 2
        outcomes = dict(db.execute("""select status, count(*) from bulk_sync.job_runs
                                      where from_status = 'fetching' group by 1""").fetchall())  # fmt: skip
        assert outcomes.get("wait", 0) >= 2 and outcomes.get("retry", 0) >= 2, outcomes
    finally:
        server.stop()


def test_each_fetch_query_is_valid_and_costs_what_it_says_within_shopifys_limit(db) -> None:
    from graphql import parse

    from runner.simulator.cost import MAX_COST, Cost
    from runner.simulator.schema import schema
    from runner.simulator.validation import check, operation, variables

    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-01', '{orders}')")
    (job_id,) = db.execute("select id from bulk_sync.jobs").fetchone()
    db.execute(
        """insert into bulk_sync.fetches (job_id, table_name, parent_id)
           select %s, 'refund_line_items', 'gid://shopify/Refund/' || n from generate_series(1, 100) as n""",
        (job_id,),
    )
    first_pages = db.execute("select bulk_sync.fetch_task(j) from bulk_sync.jobs as j").fetchone()[0]
    db.execute("update bulk_sync.fetches set cursor = 'abc' where parent_id = 'gid://shopify/Refund/7'")
    next_page = db.execute("select bulk_sync.fetch_task(j) from bulk_sync.jobs as j").fetchone()[0]
    assert next_page["variables"] == {"ids": ["gid://shopify/Refund/7"], "first": 124, "after": "abc"}
    assert 1 < len(first_pages["variables"]["ids"]) < 100 and first_pages["variables"]["after"] is None
    for task in (first_pages, next_page):
        document = parse(task["query"])
        for version in ("2025-10", "2026-01"):
            check(document, version)  # raises Shopify's errors when invalid
        op = operation(document, None)
        requested = Cost(schema(), op, {}, variables(op, task["variables"])).requested()
        assert requested == task["cost"] and MAX_COST - 50 < requested <= MAX_COST
