"""bench/scale: many shops, several runners, one PostgreSQL. --shops simulated shops (1,000) with --days days of a
few orders each and a small catalogue are backfilled by --runners runners (4) that share nothing but the database,
as a merchant with many shops would grow. Prints jobs per second through the whole lifecycle, how long the last
shop waited for its first Shopify operation (fairness), the claim latency runners saw (p50, p99, of claims that
handed out a task), and the most database connections in use.

    python -m bench.scale [--shops 1000] [--days 2] [--orders-per-day 3] [--runners 4] [--concurrency 8]"""

import argparse
import datetime as dt
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg

from bench import cpu_seconds, exit_on_sigterm
from bench.table import print_table
from runner import sqlapi
from runner.localpg import LocalCluster

TOKEN = "shpat_bench_token"  # noqa: S105 - a fake for the local simulator
FIRST = dt.date(2025, 9, 1)

# Per shop, seconds from the backfill's enqueue to its first operation started at Shopify (the first report that
# one was created), and the run's wall time from the enqueue to the last job finished.
FIRST_OPERATIONS = """
    select extract(epoch from min(r.created_at) - %s::timestamptz)::float
    from bulk_sync.job_runs as r
    join bulk_sync.jobs as j on j.id = r.job_id
    where r.phase = 'start' and r.status = 'ok'
    group by j.shop
"""


def _connections(dsn: str, stop: threading.Event, peak: list[int]) -> None:
    """Samples the connections to the database until stopped; keeps the most seen."""
    with psycopg.connect(dsn, autocommit=True) as db:
        while not stop.is_set():
            (count,) = db.execute(
                "select count(*) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()"
            ).fetchone()
            peak[0] = max(peak[0], count)
            stop.wait(0.25)


def _machine_busy() -> float:
    """CPU seconds every process of this machine used so far (all cores), from /proc/stat."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def _children_cpu() -> float:
    """CPU seconds of the child processes waited for so far (the runners, once they exit)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _percentile(values: list[int], share: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(share * len(ordered)))]) if ordered else 0.0


def figures(argv: list[str] | None = None) -> list[tuple[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shops", type=int, default=1000)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--orders-per-day", type=int, default=3)
    parser.add_argument("--products", type=int, default=4, help="products every shop sells (its SKU export)")
    parser.add_argument("--runners", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8, help="threads per runner")
    parser.add_argument("--timeout", type=float, default=1500, help="seconds the backfill may take")
    args = parser.parse_args(argv)
    codes = [f"S{n:04d}" for n in range(1, args.shops + 1)]
    last = FIRST + dt.timedelta(days=args.days - 1)
    env = {**os.environ, **{f"SHOP_{code}_TOKEN": TOKEN for code in codes}}
    with tempfile.TemporaryDirectory(prefix="bulk-sync-scale-") as tmp, LocalCluster(Path(tmp)) as cluster:
        dsn = cluster.create_database("scale")
        simulator = subprocess.Popen(
            [sys.executable, "-m", "runner", "simulate", "--shops", ",".join(codes), "--port", "0",
             "--from", FIRST.isoformat(), "--to", last.isoformat(), "--orders-per-day", str(args.orders_per_day),
             "--products", str(args.products), "--start-latency", "0.2", "--objects-per-second", "1e6",
             "--bucket-size", "1e9", "--restore-rate", "1e9"],
            env=env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        runners: list[subprocess.Popen] = []
        stop = threading.Event()
        try:
            base = simulator.stdout.readline().split(" at ")[1].split(" ")[0]
            # It prints a line per shop next: read them all, or a full pipe stops it.
            threading.Thread(target=simulator.stdout.read, daemon=True).start()
            runner_env = {**env, "DATABASE_URL": dsn}
            runner_env.update({f"SHOP_{code}_URL": f"{base}/{code.lower()}" for code in codes})
            with psycopg.connect(dsn, autocommit=True) as db:
                db.execute("update bulk_sync.settings set poll_interval_seconds = 1, poll_interval_max_seconds = 2")
                for code in codes:
                    sqlapi.add_shop(db, code, f"{code.lower()}.myshopify.com")
                (enqueued,) = db.execute("select now()").fetchone()
                sqlapi.enqueue_backfill(db, FIRST, last)
            peak = [0]
            sampler = threading.Thread(target=_connections, args=(dsn, stop, peak))
            sampler.start()
            started, busy, runners_cpu = time.monotonic(), _machine_busy(), _children_cpu()
            logs = [Path(tmp) / f"runner-{n}.log" for n in range(args.runners)]
            for log in logs:
                with log.open("w") as out:
                    runners.append(subprocess.Popen(
                        [sys.executable, "-m", "runner", "run", "--until-idle", "--concurrency", str(args.concurrency)],
                        env=runner_env, stderr=out,
                    ))  # fmt: skip
            for runner in runners:
                runner.wait(max(1.0, args.timeout - (time.monotonic() - started)))
            busy, runners_cpu = _machine_busy() - busy, _children_cpu() - runners_cpu
            simulator_cpu = cpu_seconds(simulator.pid)
            stop.set()
            sampler.join()
            with psycopg.connect(dsn, autocommit=True) as db:
                statuses = dict(db.execute("select status, count(*) from bulk_sync.jobs group by status").fetchall())
                failures = db.execute(
                    "select count(*), left(last_error, 120) from bulk_sync.jobs where status = 'failed'"
                    " group by 2 order by 1 desc limit 3"
                ).fetchall()
                (wall,) = db.execute(
                    "select extract(epoch from max(finished_at) - %s::timestamptz)::float from bulk_sync.jobs",
                    (enqueued,),
                ).fetchone()
                waits = [row[0] for row in db.execute(FIRST_OPERATIONS, (enqueued,)).fetchall()]
            stats = httpx.get(f"{base}/_admin/stats", timeout=60).json()["shops"]
        finally:
            stop.set()
            for process in (*runners, simulator):
                if process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(30)
                    except subprocess.TimeoutExpired:
                        process.kill()
        text = "\n".join(log.read_text() for log in logs)
        claims = [int(m) for m in re.findall(r"\bclaim_ms=(\d+)", text)]
        steps: dict[str, list[int]] = {}
        for phase, ms in re.findall(r"\bphase=(\w+) claim_ms=\d+ duration_ms=(\d+)", text):
            steps.setdefault(phase, []).append(int(ms))
    jobs = sum(statuses.values())
    requests = sum(shop["requests"] for shop in stats.values())
    return [
        ("shops x days x orders/day, runners x threads",
         f"{args.shops} x {args.days} x {args.orders_per_day}, {args.runners} x {args.concurrency}"),
        ("jobs (by status)", ", ".join(f"{s} {n}" for s, n in sorted(statuses.items()))),
        *((f"failed: {reason}", str(count)) for count, reason in failures),
        ("Shopify requests", f"{requests:,}"),
        ("wall s, enqueue to last job finished", f"{wall:.1f}"),
        ("jobs/s through the whole lifecycle", f"{jobs / wall:.1f}"),
        ("tasks handed out (claims that found work)", f"{len(claims):,}"),
        ("claim latency p50 / p99, ms", f"{_percentile(claims, 0.5):.0f} / {_percentile(claims, 0.99):.0f}"),
        ("shops that started an operation", f"{len(waits)} of {args.shops}"),
        ("wait for a shop's first operation: median / longest, s",
         f"{statistics.median(waits):.1f} / {max(waits):.1f}" if waits else "-"),
        ("most database connections in use", str(peak[0])),
        (f"CPU s of the whole machine ({os.cpu_count()} cores), the runners, the simulated Shopify",
         f"{busy:.0f}, {runners_cpu:.0f}, {simulator_cpu:.0f}"),
        *((f"{phase} tasks: count, median / p99 ms", f"{len(ms):,}, {_percentile(ms, 0.5):.0f} / "
           f"{_percentile(ms, 0.99):.0f}") for phase, ms in sorted(steps.items())),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    print_table(figures(argv))


if __name__ == "__main__":
    exit_on_sigterm()
    main()
