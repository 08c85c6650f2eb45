"""Right-sized operations: queued days merge at dispatch into windows sized from what the shop's exports held."""

import datetime as dt

import psycopg
from psycopg import sql

from tests.jobs import claim, claim_task, job, operation_running, report, run_to_completion

UTC = dt.UTC


def _setup(db: psycopg.Connection, days: int, entities: str = "{orders}", **settings: object) -> None:
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com', '2026-10')")
    db.execute("update bulk_sync.settings set min_operation_objects = 0, max_operation_objects = 1000000")
    for name, value in settings.items():
        db.execute(sql.SQL("update bulk_sync.settings set {} = %s").format(sql.Identifier(name)), (value,))
    last = dt.date(2025, 9, 1) + dt.timedelta(days=days - 1)
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', %s, %s)", (last, entities))


def _starts(db: psycopg.Connection) -> list[dict]:
    """The jobs dispatched since the last call, as start tasks (claimed here, or by a helper's claim on the way)."""
    db.execute("select bulk_sync.dispatch()")
    claim(db, qty=100)
    rows = db.execute(
        """select id, entity, fence, window_start, window_end, bulk_sync.bulk_query(j) from bulk_sync.jobs as j
           where status = 'starting' and not exists (
               select from bulk_sync.job_runs as r where r.job_id = j.id and r.phase = 'test')
           order by id"""
    ).fetchall()
    for row in rows:
        db.execute("insert into bulk_sync.job_runs (job_id, phase, status) values (%s, 'test', 'seen')", (row[0],))
    names = ("job_id", "entity", "fence", "window_start", "window_end", "query")
    return [dict(zip(names, row, strict=True)) for row in rows]


def _days(task: dict) -> float:
    if task["window_start"] is None:
        return 0.0
    return (task["window_end"] - task["window_start"]) / dt.timedelta(days=1)


def _windows(db: psycopg.Connection) -> list[tuple[dt.datetime, dt.datetime]]:
    return db.execute(
        "select window_start, window_end from bulk_sync.jobs where window_start is not null order by window_start"
    ).fetchall()


def test_days_merge_into_windows_sized_from_what_the_shop_exported(db: psycopg.Connection) -> None:
    _setup(db, 30)
    probes = _starts(db)
    assert [_days(t) for t in probes] == [1.0] * 5  # nothing known yet: one day each, the shop's 5 slots
    run_to_completion(db, probes[0], lines=1000)  # 1,000 objects in a day
    # 25 days queued and 4 being exported ~ 29,000 objects over 5 slots: ~5,800 objects a window, so 6 whole days
    merged = _starts(db)
    assert [_days(t) for t in merged] == [6.0]
    assert "created_at:>='2025-09-06T00:00:00Z' created_at:<'2025-09-12T00:00:00Z'" in merged[0]["query"]
    took = db.execute(
        "select message from bulk_sync.job_runs where job_id = %s and status = 'merged'", (merged[0]["job_id"],)
    ).fetchone()[0]
    assert took.startswith("took over 5 queued jobs")
    # the windows still tile the range: no day lost, none twice
    windows = _windows(db)
    assert windows[0][0] == dt.datetime(2025, 9, 1, tzinfo=UTC) and windows[-1][1] == dt.datetime(
        2025, 10, 1, tzinfo=UTC
    )
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:], strict=False))
    assert db.execute("select count(*) from bulk_sync.jobs").fetchone()[0] == 30 - 5


def test_max_operation_objects_caps_a_merged_window(db: psycopg.Connection) -> None:
    _setup(db, 30, max_operation_objects=2000)
    probes = _starts(db)
    for task in probes:
        run_to_completion(db, task, lines=1000)
    assert [_days(t) for t in _starts(db)] == [2.0] * 5


def test_min_operation_objects_merges_small_days_even_when_slots_are_free(db: psycopg.Connection) -> None:
    _setup(db, 30)
    db.execute("update bulk_sync.settings set min_operation_objects = 10000")
    run_to_completion(db, _starts(db)[0], lines=100)  # 100 objects a day: 25 days hold 2,500, under the minimum
    assert [_days(t) for t in _starts(db)] == [25.0]


def test_without_window_sizing_every_day_is_an_operation(db: psycopg.Connection) -> None:
    _setup(db, 30, window_sizing=False)
    run_to_completion(db, _starts(db)[0], lines=1000)
    assert [_days(t) for t in _starts(db)] == [1.0]
    assert db.execute("select count(*) from bulk_sync.jobs").fetchone()[0] == 30


def test_split_halves_never_merge(db: psycopg.Connection) -> None:
    _setup(db, 10, min_operation_objects=10000)  # as large as possible: whatever may merge, merges
    probes = _starts(db)
    run_to_completion(db, probes[0], lines=1000)
    # a TIMEOUT on day 2: its halves are queued and due, beside the untouched days 6..10
    jid = probes[1]["job_id"]
    poll = operation_running(db, probes[1])
    report(db, "report_poll_result", jid, poll["fence"], "FAILED", "TIMEOUT", 10)
    assert job(db, jid)["status"] == "split"
    halves = {h[0] for h in db.execute("select id from bulk_sync.jobs where parent_id = %s", (jid,)).fetchall()}
    starts = _starts(db)
    # two free slots: days 6..10 as one window, and a half that stays a half
    assert sorted((t["job_id"] in halves, _days(t)) for t in starts) == [(False, 5.0), (True, 0.5)]
    assert db.execute("select count(*) from bulk_sync.jobs where parent_id = %s", (jid,)).fetchone()[0] == 2


def test_days_that_have_not_ended_are_not_merged(db: psycopg.Connection) -> None:
    # The shop's day is whole days in its time zone: one where it is about noon now, so that today ends hours after
    # the test, whatever the time of day it runs (with UTC a run across midnight saw today end midway).
    hour = int(db.execute("select extract(hour from now() at time zone 'UTC')").fetchone()[0])
    offset = 12 - hour  # Etc/GMT-N is UTC+N
    zone = "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com', '2026-10', null, %s)", (zone,))
    db.execute("update bulk_sync.settings set min_operation_objects = 10000, poll_interval_seconds = 0")
    (today,) = db.execute("select (now() at time zone %s)::date", (zone,)).fetchone()
    db.execute(
        "select bulk_sync.enqueue_backfill(%s, %s, '{orders}')",
        (today - dt.timedelta(days=8), today + dt.timedelta(days=1)),
    )
    (first, *_) = _starts(db)
    # its operation COMPLETED with 1,000 objects (no helper that makes everything due on the way)
    jid = first["job_id"]
    report(db, "report_operation_started", jid, first["fence"], f"gid://shopify/BulkOperation/{jid}")
    url = "https://storage.example/bulk.jsonl"
    (poll,) = [t for t in claim(db, qty=100) if t["job_id"] == jid and t["task"] == "poll"]
    report(db, "report_poll_result", jid, poll["fence"], "COMPLETED", None, 1000, 10_000, url)
    assert job(db, jid)["status"] == "exporting"  # the slot is free, the objectCount known
    # the 3 past days left merge; today and tomorrow wait for their end, untouched
    assert [_days(t) for t in _starts(db)] == [3.0]
    waiting = db.execute(
        "select count(*) from bulk_sync.jobs where status = 'queued' and next_attempt_at > now()"
    ).fetchone()[0]
    assert waiting == 2


def test_windows_keep_their_size_as_slots_fill_and_a_snapshot_keeps_a_slot(db: psycopg.Connection) -> None:
    _setup(db, 31, entities="{orders,skus}")
    probes = _starts(db)  # 4 orders days and the skus snapshot
    assert sorted(t["entity"] for t in probes) == ["orders"] * 4 + ["skus"]
    for task in probes:
        if task["entity"] == "orders":
            run_to_completion(db, task, lines=1000)
    # 27 days left, one slot kept by the snapshot, so 4 windows, filled one slot at a time as the probes finish.
    # What is being exported counts as left, so they stay near 27,000 / 4 instead of shrinking by a fifth each time:
    # 30 days / 4 -> 8 (7.5 rounds up), then 29 / 4 -> 7, 28 / 4 -> 7, and the last 5
    assert sorted(_days(t) for t in _starts(db)) == [5.0, 7.0, 7.0, 8.0]


def test_entities_share_a_shops_slots(db: psycopg.Connection) -> None:
    _setup(db, 30, entities="{orders,refunds,skus}")
    first = [t["entity"] for t in _starts(db)]
    assert sorted(first) == ["orders", "orders", "refunds", "refunds", "skus"]
    assert len(first) == 5


def test_an_operation_far_larger_than_planned_is_canceled_and_split(db: psycopg.Connection) -> None:
    _setup(db, 2, split_operation_objects=5000)
    (task, _) = _starts(db)
    jid = task["job_id"]
    operation = f"gid://shopify/BulkOperation/{jid}"
    poll = operation_running(db, task)
    report(db, "report_poll_result", jid, poll["fence"], "RUNNING", None, 4000)
    assert job(db, jid)["status"] == "waiting"  # under the threshold: it runs on
    (poll,) = claim_task(db, jid, "poll")
    report(db, "report_poll_result", jid, poll["fence"], "RUNNING", None, 6000)
    assert job(db, jid)["status"] == "split"
    halves = db.execute("select count(*) from bulk_sync.jobs where parent_id = %s", (jid,)).fetchone()[0]
    assert halves == 2
    tasks = claim(db, qty=100)
    assert any(t["task"] == "cancel" and t["operation_id"] == operation for t in tasks)
