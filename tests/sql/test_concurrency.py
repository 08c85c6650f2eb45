"""Per-shop concurrency under contention: 8 sessions tick, claim and report at once while a sampler watches."""

import random
import threading
import time

import psycopg
import pytest

from tests.jobs import claim_task, download, export_job, import_job, job, order_lines, windows_tile

SESSIONS = 8


def _worker(dsn: str, seed: int, stop: threading.Event, errors: list[str]) -> None:
    rng = random.Random(seed)
    with psycopg.connect(dsn, autocommit=True) as db:
        while not stop.is_set():
            try:
                if rng.random() < 0.3:
                    db.execute("select bulk_sync.tick()")
                tasks = [r[0] for r in db.execute("select bulk_sync.claim(%s, 2)", (f"w{seed}",)).fetchall()]
                for t in tasks:
                    _respond(db, rng, t)
                if not tasks:
                    time.sleep(0.01)
            except psycopg.Error as exc:  # any error here is a bug in the core
                errors.append(f"{type(exc).__name__}: {exc}")
                return


def _respond(db: psycopg.Connection, rng: random.Random, t: dict) -> None:
    jid, fence = t["job_id"], t["fence"]
    roll = rng.random()
    if t["task"] == "start":
        if roll < 0.1:
            db.execute("select bulk_sync.report_operation_in_progress(%s, %s, 'busy')", (jid, fence))
        elif roll < 0.2:
            db.execute("select bulk_sync.report_throttled(%s, %s, 0.2)", (jid, fence))
        else:
            db.execute(
                "select bulk_sync.report_operation_started(%s, %s, %s)",
                (jid, fence, f"gid://shopify/BulkOperation/{jid}"),
            )
    elif t["task"] == "poll":
        if roll < 0.3:
            db.execute("select bulk_sync.report_poll_result(%s, %s, 'RUNNING', null, 1)", (jid, fence))
        elif roll < 0.4:
            db.execute("select bulk_sync.report_transient_error(%s, %s, 'HTTP 502')", (jid, fence))
        else:
            url = f"https://storage.example/{jid}.jsonl"
            size = sum(len(line.encode()) for line in order_lines(jid, 2))
            db.execute(
                "select bulk_sync.report_poll_result(%s, %s, 'COMPLETED', null, 2, %s, %s)", (jid, fence, size, url)
            )
    elif t["task"] == "download":
        download(db, t, order_lines(jid, 2))
    elif t["task"] == "import":
        import_job(db, t)


def _sample(dsn: str, stop: threading.Event, maxima: dict[str, int], samples: list[int]) -> None:
    with psycopg.connect(dsn, autocommit=True) as db:
        while not stop.is_set():
            rows = db.execute(
                "select shop, count(*) from bulk_sync.jobs where status in ('starting', 'waiting') group by shop"
            ).fetchall()
            for shop, n in rows:
                maxima[shop] = max(maxima.get(shop, 0), n)
            samples[0] += 1


def test_shop_slots_never_exceed_the_limit_and_everything_is_dispatched(db: psycopg.Connection, dsn: str) -> None:
    db.execute("select bulk_sync.add_shop('ONE', 'one.myshopify.com', '2025-10')")
    db.execute("select bulk_sync.add_shop('FIVE', 'five.myshopify.com', '2026-10')")
    db.execute(
        """update bulk_sync.settings set poll_interval_seconds = 1, backoff_base_seconds = 1,
           backoff_cap_seconds = 1, in_progress_retry_seconds = 1, max_attempts = 100"""
    )
    created = db.execute(
        """select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-15', '{orders,refunds}', '{FIVE}')
                + bulk_sync.enqueue_backfill('2025-09-01', '2025-09-04', '{orders,refunds}', '{ONE}')"""
    ).fetchone()[0]
    assert created == 38
    stop, errors, maxima, samples = threading.Event(), [], {}, [0]
    sampler = threading.Thread(target=_sample, args=(dsn, stop, maxima, samples))
    workers = [threading.Thread(target=_worker, args=(dsn, i, stop, errors)) for i in range(SESSIONS)]
    for t in [sampler, *workers]:
        t.start()
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and not errors:
            left = db.execute("select count(*) from bulk_sync.jobs where status <> 'completed'").fetchone()[0]
            if left == 0:
                break
            time.sleep(0.2)
    finally:
        stop.set()
        for t in [sampler, *workers]:
            t.join()
    assert errors == []
    # every job completed; merged or not, the windows tile each range exactly
    assert db.execute("select distinct status from bulk_sync.jobs").fetchall() == [("completed",)]
    assert windows_tile(db) == {
        ("FIVE", "orders"): ("2025-09-01", "2025-09-16", 15.0), ("FIVE", "refunds"): ("2025-09-01", "2025-09-16", 15.0),
        ("ONE", "orders"): ("2025-09-01", "2025-09-05", 4.0), ("ONE", "refunds"): ("2025-09-01", "2025-09-05", 4.0),
    }  # fmt: skip
    assert samples[0] > 100
    assert maxima["ONE"] == 1
    assert 1 < maxima["FIVE"] <= 5
    # the audit trail shows every job went through start, poll, download and import
    steps = db.execute(
        """select count(distinct job_id) from bulk_sync.job_runs
           where phase = 'import' and status = 'ok' and to_status = 'completed'"""
    ).fetchone()[0]
    assert steps == db.execute("select count(*) from bulk_sync.jobs").fetchone()[0]


def test_the_schema_refuses_a_second_job_in_a_taken_slot(db: psycopg.Connection) -> None:
    db.execute("select bulk_sync.add_shop('ONE', 'one.myshopify.com', '2025-10')")
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-02', '{orders}')")
    queued = db.execute("select id from bulk_sync.jobs where status = 'queued'").fetchone()[0]
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute("update bulk_sync.jobs set status = 'starting', slot = 1 where id = %s", (queued,))


def test_a_lowered_limit_is_respected_by_dispatch(db: psycopg.Connection) -> None:
    db.execute("select bulk_sync.add_shop('FIVE', 'five.myshopify.com')")
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-10', '{orders}')")
    assert db.execute("select count(*) from bulk_sync.jobs where status = 'starting'").fetchone() == (5,)
    db.execute("select bulk_sync.update_shop('FIVE', p_max_concurrent_ops => 2)")
    for jid, fence in db.execute("select id, fence from bulk_sync.jobs where slot in (1, 2, 3)").fetchall():
        db.execute("update bulk_sync.jobs set lease_expires_at = now() + interval '1 min' where id = %s", (jid,))
        db.execute("select bulk_sync.report_fatal_error(%s, %s, 'gone')", (jid, fence))
    # slots 4 and 5 are still held: with a limit of 2 nothing more may start
    assert db.execute("select bulk_sync.dispatch()").fetchone() == (0,)
    assert db.execute("select count(*) from bulk_sync.jobs where status = 'starting'").fetchone() == (2,)


def _holding(db: psycopg.Connection) -> dict[str, int]:
    rows = db.execute(
        """select entity, count(*) from bulk_sync.jobs
           where status = any(bulk_sync.states('holds_import_slot')) group by entity"""
    ).fetchall()
    return dict(rows)


def test_each_entity_imports_in_slots_of_its_own_within_the_global_cap(db: psycopg.Connection) -> None:
    orders = [export_job(db, order_lines(i, 2), f"2025-09-0{i}", take=False)["job_id"] for i in (1, 2, 3)]
    # orders have 2 slots: the third waits in copied, and says why it waits nowhere (waiting in line is progress)
    assert _holding(db) == {"orders": 2}
    assert job(db, orders[2])["status"] == "copied"
    # a SKU export imports at once, in a slot of its own, though the orders hold two imports
    skus = export_job(db, order_lines(9, 2), "2025-09-01", "skus", take=False)["job_id"]
    assert job(db, skus)["status"] == "ready_to_import"
    assert _holding(db) == {"orders": 2, "skus": 1}
    # an orders import done (claimed meanwhile by the claims above, or now): the waiting one takes the freed slot
    task = claim_task(db, orders[0], "import") or [job(db, orders[0])]
    assert task[0]["fence"] == job(db, orders[0])["fence"] and job(db, orders[0])["status"] == "importing"
    import_job(db, {"job_id": orders[0], "fence": task[0]["fence"]})
    assert job(db, orders[0])["status"] == "completed"
    assert job(db, orders[2])["status"] == "ready_to_import"
    # the global cap bounds them all: at 3, a refunds export waits though its own slot is free
    db.execute("update bulk_sync.settings set max_concurrent_imports = 3")
    refunds = export_job(db, order_lines(8, 2), "2025-09-01", "refunds", take=False)["job_id"]
    assert job(db, refunds)["status"] == "copied"
    assert db.execute("select bulk_sync.free_import_slots('refunds')").fetchone() == (0,)
    db.execute("update bulk_sync.settings set max_concurrent_imports = 5")
    db.execute("select bulk_sync.dispatch()")
    assert _holding(db) == {"orders": 2, "skus": 1, "refunds": 1}


def test_the_schema_refuses_a_second_import_in_an_entitys_taken_slot(db: psycopg.Connection) -> None:
    first = export_job(db, order_lines(1, 2), "2025-09-01", take=False)["job_id"]
    second = export_job(db, order_lines(2, 2), "2025-09-02", take=False)["job_id"]
    skus = export_job(db, order_lines(9, 2), "2025-09-01", "skus", take=False)["job_id"]
    slots = {jid: job(db, jid)["import_slot"] for jid in (first, second, skus)}
    assert slots == {first: 1, second: 2, skus: 1}  # slot 1 of orders and slot 1 of skus are different slots
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute("update bulk_sync.jobs set import_slot = 1 where id = %s", (second,))
