"""Small helpers for driving jobs through the SQL API the way a runner does."""

import psycopg


def claim(db: psycopg.Connection, worker: str = "w1", qty: int = 10) -> list[dict]:
    return [row[0] for row in db.execute("select bulk_sync_claim(%s, %s)", (worker, qty)).fetchall()]


def report(db: psycopg.Connection, function: str, *args: object) -> bool:
    marks = ", ".join(["%s"] * len(args))
    return db.execute(f"select {function}({marks})", args).fetchone()[0]


def job(db: psycopg.Connection, job_id: int) -> dict:
    cur = db.execute("select * from bulk_sync_jobs where id = %s", (job_id,))
    names = [c.name for c in cur.description]
    return dict(zip(names, cur.fetchone(), strict=True))


def make_due(db: psycopg.Connection) -> None:
    """Makes every delayed message and backoff due now (what waiting would do)."""
    db.execute("update pgmq.q_bulk_sync set vt = now()")
    db.execute("update bulk_sync_jobs set next_attempt_at = now() where status in ('queued', 'copied')")


def run_to_completion(db: psycopg.Connection, task: dict, lines: int = 3) -> None:
    """Simulates a runner doing every step of a job successfully from a claimed start task."""
    jid = task["job_id"]
    assert report(db, "report_operation_started", jid, task["fence"], f"gid://shopify/BulkOperation/{jid}")
    (poll,) = claim_task(db, jid, "poll")
    url = f"https://storage.example/bulk-{jid}.jsonl?Signature=abc"
    assert report(db, "report_poll_result", jid, poll["fence"], "COMPLETED", None, lines, 100 * lines, url)
    (download,) = claim_task(db, jid, "download")
    assert download["export_url"] == url
    assert report(db, "report_download_finished", jid, download["fence"], lines, 100 * lines)
    (imp,) = claim_task(db, jid, "import")
    assert report(db, "report_import_finished", jid, imp["fence"], lines)


def claim_task(db: psycopg.Connection, job_id: int, task: str) -> list[dict]:
    """Claims until the given job's task is handed out (other tasks claimed meanwhile are returned to the queue)."""
    make_due(db)
    found = [t for t in claim(db, qty=100) if t["job_id"] == job_id and t["task"] == task]
    return found
