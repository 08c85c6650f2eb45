"""bench/runner_memory: the runner's peak RSS while it downloads a 1,000,000-line export into staging (and has it
imported), end to end: a private PostgreSQL, the simulator and the runner as separate processes.

    python -m bench.runner_memory [--orders-per-day 10500] [--days 24]"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench import exit_on_sigterm
from bench.table import print_table
from runner import sqlapi
from runner.localpg import LocalCluster

TOKEN = "shpat_bench_token"  # noqa: S105 - a fake for the local simulator


def _peak_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def figures(argv: list[str] | None = None) -> list[tuple[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders-per-day", type=int, default=10_500)
    parser.add_argument("--days", type=int, default=24)
    args = parser.parse_args(argv)
    env = {**os.environ, "SHOP_BIG_TOKEN": TOKEN}
    last = f"2025-09-{args.days:02d}"
    with tempfile.TemporaryDirectory(prefix="bulk-sync-bench-") as tmp, LocalCluster(Path(tmp)) as cluster:
        cluster.create_database("bench")
        simulator = subprocess.Popen(
            [sys.executable, "-m", "runner", "simulate", "--shops", "BIG", "--port", "0", "--from", "2025-09-01",
             "--to", last, "--orders-per-day", str(args.orders_per_day), "--objects-per-second", "1e9"],
            env=env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        runner = None
        try:
            base = simulator.stdout.readline().split(" at ")[1].split(" ")[0]
            with psycopg.connect(cluster.dsn("bench"), autocommit=True) as db:
                db.execute("update bulk_sync.settings set poll_interval_seconds = 1, lease_seconds = 60")
                sqlapi.add_shop(db, "BIG", "big.myshopify.com")
                # One job over the whole data set: a single export of about a million lines.
                db.execute(
                    """insert into bulk_sync.jobs (shop, entity, filter_field, window_start, window_end, start_date,
                       end_date, max_attempts) values ('BIG', 'orders', 'created_at', '2025-09-01', %s::date + 1,
                       '2025-09-01', %s, 3)""",
                    (last, last),
                )
            runner_env = {**env, "DATABASE_URL": cluster.dsn("bench"), "SHOP_BIG_URL": f"{base}/big"}
            started = time.monotonic()
            runner = subprocess.Popen(
                [sys.executable, "-m", "runner", "run", "--until-idle", "--concurrency", "1"],
                env=runner_env, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            peak = 0
            while runner.poll() is None:
                peak = max(peak, _peak_kib(runner.pid))
                time.sleep(0.2)
            elapsed = time.monotonic() - started
            with psycopg.connect(cluster.dsn("bench")) as db:
                status, lines, size = db.execute(
                    "select status, lines_total, bytes_copied from bulk_sync.jobs"
                ).fetchone()
        finally:
            for process in (runner, simulator):
                if process is not None and process.poll() is None:
                    process.terminate()
                    process.wait(10)
    return [
        ("runner memory: job status", status),
        ("runner memory: export lines", f"{lines:,}"),
        ("runner memory: export MB", f"{size / 1e6:.0f}"),
        ("runner peak RSS (VmHWM), MiB", f"{peak / 1024:.1f}"),
        ("target: peak RSS, MiB", f"{150 * 1e6 / 2**20:.1f}"),
        ("runner memory: wall time (export, download, import), s", f"{elapsed:.1f}"),
    ]


def main() -> None:
    print_table(figures())


if __name__ == "__main__":
    exit_on_sigterm()
    main()
