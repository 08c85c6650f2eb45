"""Shops are changed on purpose, backfills cover every instant, and operators re-sync and cancel by range."""

import datetime as dt

import psycopg
import pytest

from tests.jobs import claim, report

SHOP = "select bulk_sync.add_shop('DE', 'de.myshopify.com')"


def _shop(db: psycopg.Connection, code: str = "DE") -> tuple:
    return db.execute(
        "select domain, api_version, max_concurrent_ops, timezone, active from bulk_sync.shops where code = %s", (code,)
    ).fetchone()


def _refused(db: psycopg.Connection, statement: str, sqlstate: str, message: str, params: tuple = ()) -> None:
    """The statement fails with `sqlstate` and a one-line message containing `message`, and changes nothing."""
    before = db.execute("select row(s.*)::text from bulk_sync.shops as s order by code").fetchall()
    jobs = db.execute("select count(*), coalesce(max(fence), 0) from bulk_sync.jobs").fetchone()
    with pytest.raises(psycopg.Error) as raised:
        db.execute(statement, params)
    assert raised.value.sqlstate == sqlstate, raised.value
    assert message in raised.value.diag.message_primary and "\n" not in raised.value.diag.message_primary
    assert db.execute("select row(s.*)::text from bulk_sync.shops as s order by code").fetchall() == before
    assert db.execute("select count(*), coalesce(max(fence), 0) from bulk_sync.jobs").fetchone() == jobs


def test_add_shop_creates_and_never_changes_a_registered_shop(db: psycopg.Connection) -> None:
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com', '2026-10', 3, 'Europe/Berlin')")
    db.execute("select bulk_sync.pause_shop('DE')")
    stored = _shop(db)
    assert stored == ("de.myshopify.com", "2026-10", 3, "Europe/Berlin", False)
    # the README's two-argument form, or every value as stored: nothing changes, and no error
    assert db.execute(SHOP).fetchone() == ("DE",)
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com', '2026-10', 3, 'Europe/Berlin')")
    assert _shop(db) == stored
    _refused(
        db, "select bulk_sync.add_shop('DE', 'other.myshopify.com', '2025-10', null, 'UTC')", "BS012",
        "shop DE exists with domain de.myshopify.com (given other.myshopify.com), api_version 2026-10 (given "
        "2025-10), time zone Europe/Berlin (given UTC): add_shop changes nothing; bulk_sync.update_shop('DE', ...)",
    )  # fmt: skip


def test_a_domain_is_one_shop(db: psycopg.Connection) -> None:
    db.execute(SHOP)
    _refused(db, "select bulk_sync.add_shop('DE2', 'de.myshopify.com')", "BS012",
             "domain de.myshopify.com is shop DE's: a domain is one shop")  # fmt: skip
    db.execute("select bulk_sync.add_shop('NL', 'nl.myshopify.com')")
    _refused(db, "select bulk_sync.update_shop('NL', 'de.myshopify.com')", "BS012", "is shop DE's")
    with pytest.raises(psycopg.errors.UniqueViolation):  # the table itself refuses it too
        db.execute("update bulk_sync.shops set domain = 'de.myshopify.com' where code = 'NL'")


def test_update_shop_changes_only_what_is_given(db: psycopg.Connection) -> None:
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com', '2026-10', 4, 'UTC')")
    assert db.execute("select bulk_sync.update_shop('DE', p_timezone => 'Europe/Berlin')").fetchone() == (
        "shop DE: time zone UTC -> Europe/Berlin",
    )
    assert _shop(db) == ("de.myshopify.com", "2026-10", 4, "Europe/Berlin", True)
    # an older API version allows one operation at a time: the concurrency follows, and says so
    assert db.execute("select bulk_sync.update_shop('DE', p_api_version => '2025-10')").fetchone() == (
        "shop DE: api_version 2026-10 -> 2025-10, max_concurrent_ops 4 -> 1",
    )
    assert db.execute("select bulk_sync.update_shop('DE')").fetchone() == ("shop DE unchanged",)
    _refused(db, "select bulk_sync.update_shop('DE', p_max_concurrent_ops => 5)", "BS006", "allows 1 to 1")
    _refused(db, "select bulk_sync.update_shop('XX', p_timezone => 'UTC')", "BS002", "unknown shop: XX")


def test_a_new_domain_is_refused_while_the_shop_has_data_unless_forced(db: psycopg.Connection) -> None:
    db.execute(SHOP)
    # no data yet: a typo in the domain is fixed freely
    assert (
        "domain de.myshopify.com -> de-shop.myshopify.com"
        in db.execute("select bulk_sync.update_shop('DE', 'de-shop.myshopify.com')").fetchone()[0]
    )
    db.execute(
        "insert into shopify.skus (id, shop, raw, import_job) values ('gid://shopify/ProductVariant/1', 'DE', '{}', 1)"
    )
    _refused(
        db, "select bulk_sync.update_shop('DE', 'nl.myshopify.com')", "BS012",
        "shop DE has data from de-shop.myshopify.com: a new domain is almost always another shop; register "
        "nl.myshopify.com under a code of its own, or pass p_force => true",
    )  # fmt: skip
    db.execute("select bulk_sync.update_shop('DE', 'de.myshopify.com', p_force => true)")
    assert _shop(db)[0] == "de.myshopify.com"


def test_a_start_dispatched_before_a_pause_does_not_start(db: psycopg.Connection) -> None:
    db.execute(SHOP)
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-10', '{orders}')")
    starting = db.execute("select count(*) from bulk_sync.jobs where status = 'starting'").fetchone()[0]
    assert starting == 5
    assert db.execute("select bulk_sync.pause_shop('DE')").fetchone() == (
        "shop DE paused (10 live jobs: no export starts until resume_shop)",
    )
    assert claim(db, qty=100) == []  # the five start messages are put back, no operation starts
    assert db.execute("select status, count(*) from bulk_sync.jobs group by 1").fetchall() == [("queued", 10)]
    paused = db.execute("select count(*) from bulk_sync.job_runs where status = 'paused'").fetchone()
    assert paused == (5,)
    assert db.execute("select bulk_sync.pause_shop('DE')").fetchone()[0].startswith("shop DE was already paused")
    assert db.execute("select bulk_sync.resume_shop('DE')").fetchone() == ("shop DE active",)
    assert {t["task"] for t in claim(db, qty=100)} == {"start"}


@pytest.mark.parametrize("delete_data", [False, True])
def test_remove_shop_cancels_its_operations_first_then_goes(db: psycopg.Connection, delete_data: bool) -> None:
    for code in ("DE", "NL"):
        db.execute("select bulk_sync.add_shop(%s, %s)", (code, f"{code.lower()}.myshopify.com"))
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-01', '{orders}')")
    db.execute("insert into bulk_sync.watermarks (shop, entity, watermark) values ('DE', 'orders', now())")
    for code in ("DE", "NL"):  # refunds whose lines were fetched: a shop added again fetches its own
        db.execute(
            """insert into bulk_sync.fetched (table_name, parent_id, shop, version)
               values ('refund_line_items', %s, %s, now())""",
            (f"gid://shopify/Refund/{code}", code),
        )
        db.execute(
            "insert into shopify.orders (id, shop, raw, import_job) values (%s, %s, '{}', 1)",
            (f"gid://shopify/Order/{code}", code),
        )
        db.execute(
            "insert into shopify.skus (id, shop, raw, import_job) values (%s, %s, '{}', 1)",
            (f"gid://shopify/ProductVariant/{code}", code),
        )
    de = next(t for t in claim(db, qty=10) if t["shop"] == "DE")
    report(db, "report_operation_started", de["job_id"], de["fence"], "gid://shopify/BulkOperation/9")  # waiting
    answer = db.execute("select bulk_sync.remove_shop('DE', %s)", (delete_data,)).fetchone()[0]
    assert answer.startswith("shop DE is being removed: 1 jobs canceled; removed once a runner has asked Shopify")
    assert _shop(db)[4] is False  # paused meanwhile: nothing new starts
    _refused(db, "select bulk_sync.resume_shop('DE')", "BS012", "shop DE is being removed")
    assert db.execute("select bulk_sync.tick() ->> 'shops_removed'").fetchone() == ("0",)
    (cancel,) = [t for t in claim(db, qty=10) if t["shop"] == "DE"]
    assert cancel["task"] == "cancel" and cancel["operation_id"] == "gid://shopify/BulkOperation/9"
    assert db.execute("select bulk_sync.tick() ->> 'shops_removed'").fetchone() == ("1",)
    assert _shop(db) is None
    left = db.execute(
        """select (select count(*) from bulk_sync.jobs where shop = 'DE'),
                  (select count(*) from bulk_sync.watermarks where shop = 'DE')
                  + (select count(*) from bulk_sync.fetched where shop = 'DE'),
                  (select count(*) from shopify.orders where shop = 'DE'),
                  (select count(*) from shopify.skus where shop = 'NL'),
                  (select count(*) from bulk_sync.jobs where shop = 'NL')"""
    ).fetchone()
    assert left == (0, 0, 0 if delete_data else 1, 1, 1)
    # a shop without running operations goes at once
    assert db.execute("select bulk_sync.remove_shop('NL', true)").fetchone() == (
        "shop NL removed (1 jobs canceled, its data deleted)",
    )
    assert db.execute("select count(*) from shopify.orders where shop = 'NL'").fetchone() == (0,)


def test_a_backfill_covers_every_instant_after_a_time_zone_change(db: psycopg.Connection) -> None:
    db.execute(SHOP)
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-03', '{orders}')")
    db.execute("select bulk_sync.update_shop('DE', p_timezone => 'Pacific/Kiritimati')")  # UTC+14
    created = db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-03', '{orders}')").fetchone()[0]
    windows = db.execute(
        "select window_start, window_end from bulk_sync.jobs where entity = 'orders' order by window_start"
    ).fetchall()
    utc = dt.UTC
    # the earlier jobs cover the UTC days; the new one only the 14 hours before them
    assert created == 1 and windows[0] == (
        dt.datetime(2025, 8, 31, 10, tzinfo=utc),
        dt.datetime(2025, 9, 1, tzinfo=utc),
    )
    covered = db.execute(
        """select range_agg(tstzrange(window_start, window_end))
                  @> tstzrange('2025-09-01 00:00+14', '2025-09-04 00:00+14')
           from bulk_sync.jobs"""
    ).fetchone()  # fmt: skip
    assert covered == (True,)
    assert db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-03', '{orders}')").fetchone() == (0,)


def test_resync_queues_completed_days_again_but_never_beside_live_jobs(db: psycopg.Connection) -> None:
    db.execute(SHOP)
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-02', '{orders,skus}')")
    db.execute("alter table bulk_sync.jobs disable trigger jobs_guard")  # as if every job had completed
    db.execute("update bulk_sync.jobs set status = 'completed', slot = null")
    db.execute("alter table bulk_sync.jobs enable trigger jobs_guard")
    assert db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-02', '{orders,skus}')").fetchone() == (
        0,
    )
    again = "select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-02', '{orders,skus}', p_resync => true)"
    assert db.execute(again).fetchone() == (3,)  # two days of orders, one snapshot
    assert db.execute(again).fetchone() == (0,)  # those are live now
    audit = db.execute("select count(*) from bulk_sync.job_runs where message = 'backfill job created (re-sync)'")
    assert audit.fetchone() == (3,)


def test_cancel_by_ids_and_by_days(db: psycopg.Connection) -> None:
    for code in ("DE", "NL"):
        db.execute("select bulk_sync.add_shop(%s, %s)", (code, f"{code.lower()}.myshopify.com"))
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-05')")
    ids = [i for (i,) in db.execute("select id from bulk_sync.jobs where shop = 'NL' order by id limit 2").fetchall()]
    assert db.execute("select bulk_sync.cancel_jobs(%s::bigint[])", (ids,)).fetchone() == (2,)
    assert db.execute("select bulk_sync.cancel_jobs(%s::bigint[])", (ids,)).fetchone() == (0,)  # already canceled
    _refused(db, "select bulk_sync.cancel_jobs(array[1, 999999])", "BS008", "unknown job: 999999")
    canceled = db.execute("select bulk_sync.cancel_jobs('2025-09-02', '2025-09-03', '{orders}', '{DE}')").fetchone()[0]
    assert canceled == 2
    rows = db.execute(
        "select shop, entity, start_date::text from bulk_sync.jobs where status = 'canceled' and shop = 'DE'"
    ).fetchall()
    assert sorted(rows) == [("DE", "orders", "2025-09-02"), ("DE", "orders", "2025-09-03")]
    # every entity of every shop on a day; snapshots by their backfill's days
    assert db.execute("select bulk_sync.cancel_jobs('2025-09-05', '2025-09-05')").fetchone() == (10,)
    _refused(db, "select bulk_sync.cancel_jobs('2025-09-01', '2025-09-02', p_shops => '{XX}')", "BS002", "unknown shop")
    _refused(db, "select bulk_sync.cancel_jobs('2025-09-01', '2025-09-02', '{nope}')", "BS003", "unknown entity: nope")


def test_a_backfill_of_days_to_come_is_refused(db: psycopg.Connection) -> None:
    db.execute(SHOP)
    _refused(db, "select bulk_sync.enqueue_backfill('2030-09-01', '2030-09-02')", "BS011",
             "backfill from 2030-09-01 starts after tomorrow")  # fmt: skip
    tomorrow = db.execute("select (now() at time zone 'UTC')::date + 1").fetchone()[0]
    assert db.execute("select bulk_sync.enqueue_backfill(%s, %s, '{orders}')", (tomorrow, tomorrow)).fetchone() == (1,)
