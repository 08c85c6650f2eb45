"""Incremental sync in SQL: watermarks, enqueue_incremental, the webhook's immediate poll, freshness."""

import datetime as dt

import psycopg
import pytest

from tests.jobs import claim, claim_task, job, operation_running, report, run_to_completion

UTC = dt.UTC


@pytest.fixture(autouse=True)
def _orders_alone(db: psycopg.Connection) -> None:
    """Watermarks are per shop and entity; these tests follow orders alone (the last one, every entity)."""
    db.execute("update bulk_sync.entities set incremental = (entity = 'orders')")


def test_each_entity_kept_current_has_its_own_watermark_and_window(db: psycopg.Connection) -> None:
    db.execute("update bulk_sync.entities set incremental = entity in ('orders', 'customers')")
    _shop(db)
    since = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    assert db.execute("select bulk_sync.enqueue_incremental(null, %s)", (since,)).fetchone()[0] == 2
    assert sorted((j["entity"], j["filter_field"]) for j in _incremental(db)) == [
        ("customers", "updated_at"), ("orders", "updated_at")
    ]  # fmt: skip
    marks = db.execute("select entity, watermark from bulk_sync.watermarks order by 1").fetchall()
    assert marks == [("customers", since), ("orders", since)]
    assert db.execute("select bulk_sync.enqueue_incremental()").fetchone()[0] == 0  # both still working


def _shop(db: psycopg.Connection, code: str = "DE") -> None:
    db.execute("select bulk_sync.add_shop(%s, %s)", (code, f"{code.lower()}.myshopify.com"))


def _mark(db: psycopg.Connection, shop: str = "DE") -> dt.datetime | None:
    row = db.execute("select watermark from bulk_sync.watermarks where shop = %s", (shop,)).fetchone()
    return row[0] if row else None


def _incremental(db: psycopg.Connection) -> list[dict]:
    cur = db.execute("select * from bulk_sync.jobs where kind = 'incremental' order by id")
    names = [c.name for c in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _now(db: psycopg.Connection) -> dt.datetime:
    return db.execute("select clock_timestamp()").fetchone()[0]


def _start(db: psycopg.Connection, job_id: int) -> dict:
    (task,) = [t for t in claim(db, qty=100) if t["job_id"] == job_id and t["task"] == "start"]
    return task


def test_the_window_runs_from_the_watermark_less_the_overlap_to_now(db: psycopg.Connection) -> None:
    _shop(db)
    since = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(hours=2)
    before = _now(db)
    assert db.execute("select bulk_sync.enqueue_incremental(null, %s)", (since,)).fetchone()[0] == 1
    after = _now(db)
    (inc,) = _incremental(db)
    assert (inc["entity"], inc["filter_field"]) == ("orders", "updated_at")
    assert inc["window_start"] == since - dt.timedelta(seconds=300)
    assert before.replace(microsecond=0) <= inc["window_end"] <= after  # now, in whole seconds
    assert _mark(db) == since
    task = _start(db, inc["id"])
    assert "updated_at:>=" in task["query"]
    # one at a time per shop: nothing new while it works
    assert db.execute("select bulk_sync.enqueue_incremental()").fetchone()[0] == 0


def test_the_watermark_moves_only_when_the_window_is_imported(db: psycopg.Connection) -> None:
    _shop(db)
    since = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    db.execute("select bulk_sync.enqueue_incremental(null, %s)", (since,))
    (inc,) = _incremental(db)
    poll = operation_running(db, _start(db, inc["id"]))
    url = "https://storage.example/bulk.jsonl"
    report(db, "report_poll_result", inc["id"], poll["fence"], "COMPLETED", None, 3, 300, url)
    assert _mark(db) == since  # exported, not imported: the watermark stays
    (dl,) = claim_task(db, inc["id"], "download")
    report(db, "report_download_failed", inc["id"], dl["fence"], "connection reset", False)
    assert _mark(db) == since
    db.execute("update bulk_sync.jobs set status = 'failed' where id = %s", (inc["id"],))
    assert _mark(db) == since  # a failed window never moves it
    # the next window starts from the same watermark: the failed range is exported again
    assert db.execute("select bulk_sync.enqueue_incremental()").fetchone()[0] == 1
    second = _incremental(db)[1]
    assert second["window_start"] == since - dt.timedelta(seconds=300)
    run_to_completion(db, _start(db, second["id"]), lines=3)
    assert _mark(db) == second["window_end"]


def test_halves_of_a_split_window_move_the_watermark_in_order(db: psycopg.Connection) -> None:
    _shop(db)
    since = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(hours=6)
    db.execute("select bulk_sync.enqueue_incremental(null, %s)", (since,))
    (inc,) = _incremental(db)
    poll = operation_running(db, _start(db, inc["id"]))
    report(db, "report_poll_result", inc["id"], poll["fence"], "FAILED", "TIMEOUT", 10)
    first, second = (j for j in _incremental(db) if j["parent_id"] == inc["id"])
    assert first["window_end"] == second["window_start"]  # the halves are incremental too
    tasks = {t["job_id"]: t for t in claim(db, qty=100) if t["task"] == "start"}
    run_to_completion(db, tasks[second["id"]], lines=2)
    assert _mark(db) == since  # the later half alone does not touch the watermark
    run_to_completion(db, tasks[first["id"]], lines=2)
    assert _mark(db) == second["window_end"]  # the earlier half carries it across both


def test_the_first_watermark_is_the_end_of_the_backfill(db: psycopg.Connection) -> None:
    _shop(db, "DE")
    _shop(db, "NL")
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-30', '{orders}', '{DE}')")
    before = _now(db)
    db.execute("select bulk_sync.enqueue_incremental()")
    after = _now(db)
    assert _mark(db, "DE") == dt.datetime(2025, 10, 1, tzinfo=UTC)
    nl = _mark(db, "NL")  # no backfill: from now on
    assert nl is not None and before.replace(microsecond=0) <= nl <= after
    assert [j["shop"] for j in _incremental(db)] == ["DE"]  # NL: less than incremental_min_seconds so far


def test_bad_input_changes_nothing(db: psycopg.Connection) -> None:
    _shop(db)
    future = dt.datetime.now(UTC) + dt.timedelta(days=1)
    for args, code in (((None, future), "BS001"), ((["XX"], None), "BS002"), (([], None), "BS005")):
        with pytest.raises(psycopg.Error) as raised:
            db.execute("select bulk_sync.enqueue_incremental(%s, %s)", args)
        assert raised.value.sqlstate == code
    assert db.execute("select count(*) from bulk_sync.watermarks").fetchone()[0] == 0
    assert _incremental(db) == []


def test_a_finish_webhook_polls_at_once_and_only_once(db: psycopg.Connection) -> None:
    _shop(db)
    db.execute("update bulk_sync.settings set poll_interval_seconds = 600, poll_interval_max_seconds = 600")
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-01', '{orders}')")
    (jid,) = db.execute("select id from bulk_sync.jobs").fetchone()
    task = _start(db, jid)
    operation = "gid://shopify/BulkOperation/77"
    report(db, "report_operation_started", jid, task["fence"], operation)
    assert [t for t in claim(db, qty=100) if t["job_id"] == jid] == []  # the next poll is 10 minutes away

    def finished(webhook_id: str, domain: str = "de.myshopify.com", op: str = operation) -> str:
        return db.execute("select bulk_sync.webhook_finished(%s, %s, %s)", (webhook_id, domain, op)).fetchone()[0]

    assert finished("w-1") == "polled"
    due, msg = db.execute(
        "select task_due_at <= now(), task_msg_id from bulk_sync.jobs where id = %s", (jid,)
    ).fetchone()
    assert due and db.execute("select message ->> 'task' from pgmq.q_bulk_sync where msg_id = %s", (msg,)).fetchone()
    assert finished("w-1") == "duplicate"  # Shopify delivers again: nothing more happens
    polls = [t for t in claim(db, qty=100) if t["job_id"] == jid]
    assert [t["task"] for t in polls] == ["poll"]
    assert finished("w-2", op="gid://shopify/BulkOperation/78") == "ignored"  # not an operation we wait for
    assert finished("w-3", domain="other.myshopify.com") == "ignored"
    assert job(db, jid)["status"] == "waiting"
    outcomes = db.execute("select webhook_id, outcome from bulk_sync.webhooks order by webhook_id").fetchall()
    assert outcomes == [("w-1", "polled"), ("w-2", "ignored"), ("w-3", "ignored")]


def test_freshness_shows_how_far_behind_each_shop_is(db: psycopg.Connection) -> None:
    _shop(db)
    since = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(hours=3)
    db.execute("select bulk_sync.enqueue_incremental(null, %s)", (since,))
    shop, entity, through, behind = db.execute(
        "select shop, entity, synced_through, behind from bulk_sync.freshness"
    ).fetchone()
    assert (shop, entity, through) == ("DE", "orders", since)
    assert dt.timedelta(hours=3) <= behind < dt.timedelta(hours=3, seconds=10)
    (inc,) = _incremental(db)
    run_to_completion(db, _start(db, inc["id"]), lines=2)
    progress = db.execute(
        "select synced_through, behind from bulk_sync.progress where shop = 'DE' and entity = 'orders'"
    ).fetchone()
    assert progress[0] == inc["window_end"] and progress[1] < dt.timedelta(seconds=10)


def test_status_shows_each_shops_freshness(db: psycopg.Connection, dsn: str) -> None:
    from tests.processes import cli

    _shop(db, "DE")
    _shop(db, "NL")
    since = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    db.execute("select bulk_sync.enqueue_incremental('{DE}', %s)", (since,))
    out = cli("status", dsn=dsn)
    assert out.returncode == 0, out.stderr
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("freshness")]
    behind = db.execute("select behind from bulk_sync.freshness").fetchone()[0]
    assert "DE orders through 2026-01-02 03:04:05 UTC" in line and "NL" not in line
    assert f"({str(behind).split(',')[0]}" in line  # e.g. "(331 days, 12:56:00 behind)"


def test_old_completed_incremental_jobs_are_pruned_and_the_watermark_stays(db: psycopg.Connection) -> None:
    _shop(db)
    since = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    db.execute("select bulk_sync.enqueue_incremental(null, %s)", (since,))
    (inc,) = _incremental(db)
    run_to_completion(db, _start(db, inc["id"]), lines=2)
    mark = _mark(db)
    assert mark == inc["window_end"]
    db.execute("update bulk_sync.settings set audit_retention_days = 1, incremental_min_seconds = 0")
    db.execute("update bulk_sync.jobs set finished_at = now() - interval '2 days' where id = %s", (inc["id"],))
    assert db.execute("select bulk_sync.enqueue_incremental()").fetchone()[0] == 1
    (new,) = _incremental(db)  # the old one is gone, with its audit trail
    assert new["id"] != inc["id"]
    assert db.execute("select count(*) from bulk_sync.job_runs where job_id = %s", (inc["id"],)).fetchone()[0] == 0
    assert _mark(db) == mark
    assert new["window_start"] == mark - dt.timedelta(seconds=300)
