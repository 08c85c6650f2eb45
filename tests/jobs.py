"""Small helpers for driving jobs through the SQL API the way a runner does."""

import psycopg
from psycopg import sql

from runner import sqlapi
from runner.simulator.truth import database_rows


def claim(db: psycopg.Connection, worker: str = "w1", qty: int = 10, shops: list[str] | None = None) -> list[dict]:
    """Tasks for `worker` (which serves `shops`, None: every shop), without waiting."""
    return sqlapi.claim(db, worker, qty, 0, shops)


def report(db: psycopg.Connection, function: str, *args: object) -> bool:
    """A report through the typed SQL API (runner.sqlapi), by its name."""
    return getattr(sqlapi, function)(db, *args)


def job(db: psycopg.Connection, job_id: int) -> dict:
    cur = db.execute("select * from bulk_sync.jobs where id = %s", (job_id,))
    names = [c.name for c in cur.description]
    return dict(zip(names, cur.fetchone(), strict=True))


def make_due(db: psycopg.Connection) -> None:
    """Makes every delayed message and backoff due now (what waiting would do)."""
    db.execute("update pgmq.q_bulk_sync set vt = now()")
    db.execute("update bulk_sync.jobs set next_attempt_at = now() where status in ('queued', 'copied')")
    db.execute("update bulk_sync.jobs set task_due_at = now() where task_due_at > now()")
    db.execute("update bulk_sync.cancels set due_at = now() where due_at > now()")


def order_lines(job_id: int, count: int) -> list[str]:
    """Minimal order lines as an orders export writes them."""
    return [
        f'{{"id":"gid:\\/\\/shopify\\/Order\\/{job_id * 1000 + i}","updatedAt":"2025-09-01T00:00:00Z"}}\n'
        for i in range(count)
    ]


def stage(db: psycopg.Connection, job_id: int, lines: list[str]) -> int:
    """Copies export lines into staging as a runner does; returns their bytes."""
    with db.cursor().copy("copy bulk_sync.staging (job_id, line_no, line) from stdin") as copy:
        for number, line in enumerate(lines, 1):
            copy.write_row((job_id, number, line.rstrip("\n")))
    return sum(len(line.encode()) for line in lines)


def download(db: psycopg.Connection, task: dict, lines: list[str]) -> bool:
    """Stages the lines and reports the download in one transaction, as a runner must."""
    with db.transaction():
        size = stage(db, task["job_id"], lines)
        return report(db, "report_download_finished", task["job_id"], task["fence"], len(lines), size)


def import_job(db: psycopg.Connection, task: dict, answer=None) -> None:
    """The import of a claimed import task, and then the fetches it queued (fetch_all)."""
    sqlapi.import_job(db, task["job_id"], task["fence"])
    fetch_all(db, task["job_id"], answer)


def fetch_all(db: psycopg.Connection, job_id: int, answer=None) -> int:
    """Answers a fetching job's fetch tasks until it is done, as a runner does: answer(query, variables) gives the
    data of Shopify's answer (tests.sim.answer_from), None answers that Shopify knows none of the parents. Returns
    how many pages it answered."""
    pages = 0
    while job(db, job_id)["status"] == "fetching":
        (task,) = claim_task(db, job_id, "fetch")
        ids = task["variables"]["ids"]
        data = answer(task["query"], task["variables"]) if answer else {"nodes": [None] * len(ids)}
        assert report(db, "report_fetched", job_id, task["fence"], ids, data)
        pages += 1
    return pages


def operation_running(db: psycopg.Connection, task: dict) -> dict:
    """Reports the operation of a claimed start task (gid BulkOperation/<job id>); returns its first poll task."""
    jid = task["job_id"]
    assert report(db, "report_operation_started", jid, task["fence"], f"gid://shopify/BulkOperation/{jid}")
    (poll,) = claim_task(db, jid, "poll")
    return poll


def run_to_completion(db: psycopg.Connection, task: dict, lines: int = 3) -> None:
    """Simulates a runner doing every step of a job successfully from a claimed start task."""
    jid = task["job_id"]
    content = order_lines(jid, lines)
    size = sum(len(line.encode()) for line in content)
    poll = operation_running(db, task)
    url = f"https://storage.example/bulk-{jid}.jsonl?Signature=abc"
    assert report(db, "report_poll_result", jid, poll["fence"], "COMPLETED", None, lines, size, url)
    (dl,) = claim_task(db, jid, "download")
    assert dl["export_url"] == url
    assert download(db, dl, content)
    (imp,) = claim_task(db, jid, "import")
    import_job(db, imp)
    assert job(db, jid)["status"] == "completed"


def claim_task(db: psycopg.Connection, job_id: int, task: str) -> list[dict]:
    """Claims until the given job's task is handed out (other tasks claimed meanwhile are returned to the queue)."""
    make_due(db)
    return [t for t in claim(db, qty=100) if t["job_id"] == job_id and t["task"] == task]


def windows_tile(db: psycopg.Connection) -> dict[tuple[str, str], tuple[str, str, float]]:
    """Per shop and entity, the completed windows' first start, last end and total days: a window per day or merged
    ones, they must tile the range exactly (total days = end - start, overlaps being impossible)."""
    rows = db.execute(
        """select shop, entity, min(window_start)::date::text, max(window_end)::date::text,
                  extract(epoch from sum(window_end - window_start)) / 86400
           from bulk_sync.jobs where status = 'completed' and window_start is not null group by shop, entity"""
    ).fetchall()
    return {(shop, entity): (first, end, float(days)) for shop, entity, first, end, days in rows}


def table(db: psycopg.Connection, name: str) -> list[dict]:
    return database_rows(db, name)


def export_job(
    db: psycopg.Connection, lines: list[str], day: str = "2025-09-01", entity: str = "orders", take: bool = True
) -> dict:
    """Takes one job of `entity` through start, poll and download of `lines`; returns its claimed import task
    (or, with take=False, the download task, leaving the import task to whoever claims it)."""
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
    if entity == "order_ids":
        db.execute("select bulk_sync.enqueue_reconcile(%s, %s)", (day, day))
    else:
        db.execute("select bulk_sync.enqueue_backfill(%s, %s, %s)", (day, day, [entity]))
    (start,) = [t for t in claim(db, qty=100) if t["task"] == "start" and t["entity"] == entity]
    jid = start["job_id"]
    report(db, "report_operation_started", jid, start["fence"], f"gid://shopify/BulkOperation/{jid}")
    (poll,) = claim_task(db, jid, "poll")
    size = sum(len(line.encode()) for line in lines)
    url = f"https://storage.example/{jid}.jsonl"
    report(db, "report_poll_result", jid, poll["fence"], "COMPLETED", None, len(lines), size, url)
    (dl,) = claim_task(db, jid, "download")
    assert download(db, dl, lines)
    if not take:
        return dl
    (task,) = claim_task(db, jid, "import")
    return task


def login(db: psycopg.Connection, dsn: str, role: str) -> psycopg.Connection:
    login = f"{role}_login"
    if not db.execute("select 1 from pg_roles where rolname = %s", (login,)).fetchone():
        db.execute(sql.SQL("create role {} login in role {}").format(sql.Identifier(login), sql.Identifier(role)))
    user = dsn.split("user=")[1].split()[0]
    return psycopg.connect(dsn.replace(f"user={user}", f"user={login}"), autocommit=True)
