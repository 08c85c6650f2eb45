"""`bulk-sync demo`: the Postgres core on a private local cluster, with the five example shops and the
2025-09-01..2025-10-31 backfill queued and dispatched."""

import shutil
from pathlib import Path

import psycopg

from runner.localpg import LocalCluster
from runner.migrate import migrate
from runner.status import render

SHOPS = ("DA", "DE", "NL", "INT", "CHF")
DATABASE = "bulk_sync"


def run(directory: Path, reset: bool = False, port: int | None = None) -> int:
    if reset and directory.exists():
        shutil.rmtree(directory)
    with LocalCluster(directory / "postgres", port=port) as cluster:
        print(f"PostgreSQL with pg_cron on 127.0.0.1:{cluster.port} (data in {cluster.data})")
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            if not admin.execute("select 1 from pg_database where datname = %s", (DATABASE,)).fetchone():
                admin.execute(f"create database {DATABASE}")
        with psycopg.connect(cluster.dsn(DATABASE)) as conn:
            applied = migrate(conn)
        print("migrated: " + (", ".join(applied) if applied else "already up to date"))
        with psycopg.connect(cluster.dsn(DATABASE), autocommit=True) as db:
            for code in SHOPS:
                db.execute("select add_shop(%s, %s)", (code, f"{code.lower()}-demo.myshopify.com"))
            created = db.execute("select enqueue_backfill('2025-09-01', '2025-10-31')").fetchone()[0]
            print(f"select enqueue_backfill('2025-09-01', '2025-10-31');  -> {created} jobs created\n")
            print(render(db))
            tasks = db.execute("select message ->> 'task', count(*) from pgmq.q_bulk_sync group by 1").fetchall()
            print("\nwork waiting for runners in the pgmq queue: " + ", ".join(f"{t} {n}" for t, n in tasks))
    print("\nstopped the demo cluster; run again to reuse it, or with --reset to start over")
    return 0
