"""The job row is the truth, a message only wakes a runner: a lost message is sent again by tick (and by a claim
that finds nothing), with an audit row; a stale duplicate changes nothing."""

import psycopg

from tests.jobs import claim, make_due, report

OPERATION = "gid://shopify/BulkOperation/5"


def _waiting(db: psycopg.Connection) -> dict:
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-01', '{orders}')")
    (start,) = claim(db)
    report(db, "report_operation_started", start["job_id"], start["fence"], OPERATION)
    return db.execute("select id, fence, task_msg_id from bulk_sync.jobs").fetchone()


def _restored(db: psycopg.Connection) -> list[str]:
    return [m for (m,) in db.execute("select message from bulk_sync.job_runs where phase = 'restore' order by id")]


def test_a_deleted_poll_message_is_sent_again_by_tick(db: psycopg.Connection) -> None:
    job_id, fence, msg_id = _waiting(db)
    assert db.execute("select count(*) from pgmq.q_bulk_sync where msg_id = %s", (msg_id,)).fetchone() == (1,)
    assert db.execute("select (bulk_sync.tick() ->> 'wake_ups_restored')::int").fetchone() == (0,)  # not lost
    db.execute("select pgmq.delete('bulk_sync', %s::bigint)", (msg_id,))
    make_due(db)  # the poll is due
    assert db.execute("select (bulk_sync.tick() ->> 'wake_ups_restored')::int").fetchone() == (1,)
    assert _restored(db) == ["poll message was gone: wake-up restored"]
    (poll,) = claim(db)
    assert (poll["job_id"], poll["task"], poll["fence"]) == (job_id, "poll", fence + 1)  # leased: the fence moves
    assert db.execute("select (bulk_sync.tick() ->> 'wake_ups_restored')::int").fetchone() == (0,)  # leased now


def test_a_purged_queue_is_restored_by_a_claim_that_finds_nothing(db: psycopg.Connection) -> None:
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-03', '{orders}')")
    assert db.execute("select count(*) from bulk_sync.jobs where status = 'starting'").fetchone() == (3,)
    db.execute("select pgmq.purge_queue('bulk_sync')")
    assert claim(db, qty=10) == []  # nothing to read: the starts' wake-ups are restored
    assert len(_restored(db)) == 3
    assert sorted(t["task"] for t in claim(db, qty=10)) == ["start", "start", "start"]


def test_a_cancel_is_a_row_until_taken_and_its_lost_message_is_restored(db: psycopg.Connection) -> None:
    job_id, fence, _ = _waiting(db)
    db.execute("select bulk_sync.cancel_jobs('DE')")
    assert db.execute("select job_id, attempt from bulk_sync.cancels").fetchall() == [(job_id, 0)]
    db.execute("select pgmq.purge_queue('bulk_sync')")
    assert db.execute("select bulk_sync.idle()").fetchone() == (False,)  # a cancel is still to send
    assert db.execute("select (bulk_sync.tick() ->> 'wake_ups_restored')::int").fetchone() == (1,)
    assert _restored(db) == [f"cancel of {OPERATION}: message was gone, wake-up restored"]
    db.execute("select bulk_sync.send(%s, 'cancel', 0, '0 s', %s)", (job_id, f'{{"operation_id": "{OPERATION}"}}'))
    tasks = claim(db, qty=10)  # the restored message and a duplicate: the cancel is handed out once
    assert [(t["task"], t["operation_id"]) for t in tasks] == [("cancel", OPERATION)]
    assert db.execute("select count(*) from bulk_sync.cancels").fetchone() == (0,)
    assert db.execute("select bulk_sync.idle()").fetchone() == (True,)
    # a cancel Shopify did not take is a row again, due after backoff
    assert report(db, "report_cancel_failed", job_id, OPERATION, 0, "HTTP 503")
    assert db.execute("select attempt, due_at > now() from bulk_sync.cancels").fetchone() == (1, True)
