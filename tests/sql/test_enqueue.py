import datetime as dt

import psycopg
import pytest
from psycopg import sql

ALL = ("orders", "refunds", "skus")


def _jobs(db: psycopg.Connection) -> int:
    return db.execute("select count(*) from bulk_sync.jobs").fetchone()[0]


def test_backfill_covers_every_day_once_and_is_idempotent(db: psycopg.Connection, five_shops: list[str]) -> None:
    created = db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-10-31')").fetchone()[0]
    assert created == 5 * 61 * 3 + 5 * 2
    windows = db.execute(
        """select shop, entity, filter_field, window_start, window_end
           from bulk_sync.jobs where window_start is not null order by shop, entity, window_start"""
    ).fetchall()
    by_key: dict[tuple[str, str], list[tuple[dt.datetime, dt.datetime]]] = {}
    for shop, entity, field, start, end in windows:
        assert field == {"orders": "created_at", "refunds": "updated_at", "customers": "updated_at"}[entity]
        by_key.setdefault((shop, entity), []).append((start, end))
    assert set(by_key) == {(s, e) for s in five_shops for e in ("orders", "refunds", "customers")}
    utc = dt.UTC
    for spans in by_key.values():
        assert spans[0][0] == dt.datetime(2025, 9, 1, tzinfo=utc)
        assert spans[-1][1] == dt.datetime(2025, 11, 1, tzinfo=utc)
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert end == start  # no gap, no overlap
        assert len(spans) == 61
    snapshots = db.execute(
        "select shop, entity, start_date, end_date from bulk_sync.jobs where window_start is null"
    ).fetchall()
    assert sorted(snapshots) == sorted(
        (s, e, dt.date(2025, 9, 1), dt.date(2025, 10, 31)) for s in five_shops for e in ("products", "skus")
    )
    assert db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-10-31')").fetchone()[0] == 0
    assert _jobs(db) == created
    # every job has its audit row
    assert db.execute("select count(distinct job_id) from bulk_sync.job_runs where phase = 'enqueue'").fetchone() == (
        created,
    )


def test_overlapping_backfill_adds_only_the_new_days(db: psycopg.Connection, five_shops: list[str]) -> None:
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-10', '{orders}', '{DE}')")
    assert (
        db.execute("select bulk_sync.enqueue_backfill('2025-09-05', '2025-09-15', '{orders}', '{DE}')").fetchone()[0]
        == 5
    )


def test_days_follow_the_shop_time_zone(db: psycopg.Connection) -> None:
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com', '2026-10', null, 'Europe/Berlin')")
    db.execute("select bulk_sync.enqueue_backfill('2025-10-25', '2025-10-27', '{orders}')")
    rows = db.execute(
        "select start_date, window_end - window_start from bulk_sync.jobs order by window_start"
    ).fetchall()
    hours = [(d, span.total_seconds() / 3600) for d, span in rows]
    # 2025-10-26 is the end of daylight saving time in Berlin: a 25-hour day.
    assert hours == [(dt.date(2025, 10, 25), 24), (dt.date(2025, 10, 26), 25), (dt.date(2025, 10, 27), 24)]
    first = db.execute("select min(window_start) from bulk_sync.jobs").fetchone()[0]
    assert first == dt.datetime(2025, 10, 24, 22, tzinfo=dt.UTC)


def test_enqueue_dispatches_at_once_within_the_shop_limit(db: psycopg.Connection) -> None:
    db.execute("select bulk_sync.add_shop('DA', 'da.myshopify.com', '2025-10')")
    db.execute("select bulk_sync.add_shop('NL', 'nl.myshopify.com', '2026-10')")
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-30')")
    starting = dict(
        db.execute("select shop, count(*) from bulk_sync.jobs where status = 'starting' group by shop").fetchall()
    )
    assert starting == {"DA": 1, "NL": 5}
    queued = db.execute("select count(*) from pgmq.q_bulk_sync where message ->> 'task' = 'start'").fetchone()[0]
    assert queued == 6


def test_future_days_wait_until_they_are_over(db: psycopg.Connection) -> None:
    db.execute("select bulk_sync.add_shop('DA', 'da.myshopify.com')")
    db.execute("select bulk_sync.enqueue_backfill(current_date, current_date + 1, '{orders}')")
    rows = db.execute("select status, next_attempt_at >= window_end from bulk_sync.jobs").fetchall()
    assert rows == [("queued", True), ("queued", True)]


BAD = [
    ("'2025-10-31', '2025-09-01'", "BS001", "after"),
    ("'2025-09-01', '2025-09-02', '{orders}', '{XX}'", "BS002", "unknown shop: XX"),
    ("'2025-09-01', '2025-09-02', '{orders,invoices}'", "BS003", "unknown entity: invoices"),
    ("'2000-01-01', '2019-12-31'", "BS004", "too large"),
    ("null, '2025-09-02'", "BS005", "required"),
    ("'2025-09-01', null", "BS005", "required"),
    ("'2025-09-01', '2025-09-02', null", "BS005", "p_entities"),
    ("'2025-09-01', '2025-09-02', '{orders,null}'", "BS005", "without NULLs"),
    ("'2025-09-01', '2025-09-02', '{}'", "BS005", "p_entities"),
    ("'2025-09-01', '2025-09-02', '{orders}', '{DA,null}'", "BS005", "p_shops"),
    ("'2025-09-01', '2025-09-02', '{orders}', '{OFF}'", "BS007", "inactive shop: OFF"),
]


@pytest.mark.parametrize(("args", "sqlstate", "text"), BAD)
def test_bad_input_raises_clearly_and_creates_nothing(
    db: psycopg.Connection, five_shops: list[str], args: str, sqlstate: str, text: str
) -> None:
    db.execute("select bulk_sync.add_shop('OFF', 'off.myshopify.com')")
    db.execute("update bulk_sync.shops set active = false where code = 'OFF'")
    with pytest.raises(psycopg.Error) as err:
        db.execute(sql.SQL("select bulk_sync.enqueue_backfill({})").format(sql.SQL(args)))
    assert err.value.sqlstate == sqlstate
    assert text in str(err.value)
    assert _jobs(db) == 0
    assert db.execute("select count(*) from pgmq.q_bulk_sync").fetchone() == (0,)


def test_no_shop_registered_is_a_clear_error(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.Error, match="no active shop") as err:
        db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-02')")
    assert err.value.sqlstate == "BS002"


@pytest.mark.parametrize(
    ("args", "text"),
    [
        ("'de', 'de.myshopify.com'", "invalid shop code"),
        ("'DE', 'https://de.myshopify.com'", "invalid shop domain"),
        ("'DE', 'de.myshopify.com', '2026-13'", "invalid API version"),
        ("'DE', 'de.myshopify.com', '2026-10', 6", "out of range"),
        ("'DE', 'de.myshopify.com', '2025-10', 2", "allows 1 to 1"),
        ("'DE', 'de.myshopify.com', '2026-10', null, 'Mars/Olympus'", "unknown time zone"),
    ],
)
def test_add_shop_rejects_bad_definitions(db: psycopg.Connection, args: str, text: str) -> None:
    with pytest.raises(psycopg.Error, match=text) as err:
        db.execute(sql.SQL("select bulk_sync.add_shop({})").format(sql.SQL(args)))
    assert err.value.sqlstate == "BS006"
    assert db.execute("select count(*) from bulk_sync.shops").fetchone() == (0,)


def test_add_shop_defaults_concurrency_from_the_api_version(db: psycopg.Connection) -> None:
    db.execute("select bulk_sync.add_shop('OLD', 'old.myshopify.com', '2025-10')")
    db.execute("select bulk_sync.add_shop('NEW', 'new.myshopify.com', '2026-01')")
    limits = dict(db.execute("select code, max_concurrent_ops from bulk_sync.shops").fetchall())
    assert limits == {"OLD": 1, "NEW": 5}


def test_what_a_backfill_queues_of_each_entity_is_a_row_of_the_entities_table(db: psycopg.Connection) -> None:
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
    # orders windowed by update instead of creation, refunds not backfilled, order ids as a snapshot: data only
    db.execute("update bulk_sync.entities set backfill_field = 'updated_at' where entity = 'orders'")
    db.execute("update bulk_sync.entities set backfill_field = null where entity = 'refunds'")
    with pytest.raises(psycopg.DatabaseError, match="unknown entity: refunds") as raised:
        db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-02', '{orders,refunds}')")
    assert raised.value.sqlstate == "BS003"
    assert db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-02', '{orders,skus}')").fetchone() == (
        3,
    )
    jobs = db.execute("select entity, filter_field, window_start is null from bulk_sync.jobs order by id").fetchall()
    assert sorted(jobs) == [("orders", "updated_at", False), ("orders", "updated_at", False), ("skus", None, True)]
