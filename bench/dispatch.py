"""bench/dispatch: jobs per second through the whole lifecycle by the state machine alone (reports simulated, no
HTTP), beside raw pgmq send+read+delete cycles on the same server in the same run.

    python -m bench.dispatch [--jobs 1500] [--sessions 4] [--shops 20]

Runs a private PostgreSQL (fsync on, default settings) under a temporary directory. Each job takes four messages
(start, poll, download, import), three reports, the import of its one staged line, and its dispatches; 20 shops
of 5 slots keep the per-shop limit from being what is measured. Raw pgmq runs on as many sessions, a queue each."""

import argparse
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from bench import exit_on_sigterm
from bench.table import print_table
from runner import sqlapi
from runner.localpg import LocalCluster


def _raw_cycles(dsn: str, queue: str, cycles: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as db:
        for i in range(cycles):
            db.execute("select pgmq.send(%s, %s::jsonb)", (queue, f'{{"i": {i}}}'))
            (msg_id,) = db.execute("select msg_id from pgmq.read(%s, 30, 1)", (queue,)).fetchone()
            db.execute("select pgmq.delete(%s, %s::bigint)", (queue, msg_id))


def raw_pgmq(dsn: str, cycles: int, sessions: int) -> float:
    """send + read + delete cycles per second, over `sessions` connections (a queue each)."""
    with psycopg.connect(dsn, autocommit=True) as db:
        for i in range(sessions):
            db.execute("select pgmq.create(%s)", (f"bench_raw_{i}",))
    threads = [
        threading.Thread(target=_raw_cycles, args=(dsn, f"bench_raw_{i}", cycles // sessions)) for i in range(sessions)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sessions * (cycles // sessions) / (time.perf_counter() - started)


def _respond(db: psycopg.Connection, task: dict) -> None:
    jid, fence = task["job_id"], task["fence"]
    if task["task"] == "start":
        sqlapi.report_operation_started(db, jid, fence, f"gid://shopify/BulkOperation/{jid}")
    elif task["task"] == "poll":
        sqlapi.report_poll_result(
            db, jid, fence, "COMPLETED", None, 1, len(_line(jid)) + 1, f"https://storage.example/{jid}.jsonl"
        )
    elif task["task"] == "download":
        with db.transaction():
            db.execute("insert into bulk_sync.staging (job_id, line_no, line) values (%s, 1, %s)", (jid, _line(jid)))
            sqlapi.report_download_finished(db, jid, fence, 1, len(_line(jid)) + 1)
    elif task["task"] == "import":
        sqlapi.import_job(db, jid, fence)


def _line(job_id: int) -> str:
    return f'{{"id":"gid:\\/\\/shopify\\/Order\\/{job_id}","updatedAt":"2025-09-01T00:00:00Z"}}'


def _worker(dsn: str, name: str, done: threading.Event, counts: list[int]) -> None:
    with psycopg.connect(dsn, autocommit=True) as db:
        while not done.is_set():
            tasks = sqlapi.claim(db, name, 10, 0.2)
            for task in tasks:
                _respond(db, task)
            counts.append(len(tasks))


def lifecycle(dsn: str, jobs: int, sessions: int, shops: int) -> tuple[float, int]:
    """Jobs per second from enqueue to completed, and the number of claims made."""
    days = jobs // shops
    with psycopg.connect(dsn, autocommit=True) as db:
        # Every job its own operation (no merging of days): this measures the state machine per job.
        db.execute(
            """update bulk_sync.settings
               set poll_interval_seconds = 0, max_concurrent_imports = 16, window_sizing = false"""
        )
        db.execute("update bulk_sync.import_limits set max_concurrent_imports = 16")  # every import slot to orders
        for i in range(shops):
            sqlapi.add_shop(db, f"S{i}", f"s{i}.myshopify.com")
        done, counts = threading.Event(), []
        threads = [threading.Thread(target=_worker, args=(dsn, f"bench{i}", done, counts)) for i in range(sessions)]
        started = time.perf_counter()
        total = db.execute(
            "select bulk_sync.enqueue_backfill('2020-01-01'::date, '2020-01-01'::date + %s, '{orders}')", (days - 1,)
        ).fetchone()[0]
        for t in threads:
            t.start()
        while db.execute("select count(*) from bulk_sync.jobs where status <> 'completed'").fetchone()[0]:
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        done.set()
        for t in threads:
            t.join()
    return total / elapsed, len(counts)


def figures(argv: list[str] | None = None) -> list[tuple[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1500)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--shops", type=int, default=20, help="each with 5 slots")
    parser.add_argument("--cycles", type=int, default=3000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bulk-sync-bench-") as tmp, LocalCluster(Path(tmp)) as cluster:
        cluster.create_database("bench")
        raw = raw_pgmq(cluster.dsn("bench"), args.cycles, args.sessions)
        rate, claims = lifecycle(cluster.dsn("bench"), args.jobs, args.sessions, args.shops)
    return [
        (f"raw pgmq send+read+delete cycles/s ({args.sessions} sessions)", f"{raw:.0f}"),
        (f"jobs/s, full lifecycle ({args.sessions} sessions, {args.shops} shops)", f"{rate:.1f}"),
        ("lifecycle messages/s / raw pgmq cycles/s", f"{4 * rate / raw:.2f}"),
        ("jobs/s / raw pgmq cycles/s", f"{rate / raw:.3f}"),
        ("target: jobs/s on 2 cores", "300"),
    ]


def main() -> None:
    print_table(figures())


if __name__ == "__main__":
    exit_on_sigterm()
    main()
