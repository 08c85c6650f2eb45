"""bench/connections: what the runner's connection budget costs. The same backfill (--shops shops x --days days,
operations that wait on Shopify, each export downloaded at --download-rate bytes/s) is run by one runner at
--concurrency 8, alternately with each of --budgets (a number: --db-connections N; "none": the runner's own
default), --rounds times each, every run from a fresh database and served the same exports from the simulator's
cache (an untimed run makes them first). Prints per budget the median wall time, its ratio to the first budget's,
and the most connections the runner held (pg_stat_activity sampled every 20 ms).

    python -m bench.connections [--rounds 3] [--budgets 4,100] [--download-rate 10e6] [--checkout DIR]

--checkout runs the runner of another checkout of bulk-sync (an earlier commit, say), for before-and-after
figures; give it --budgets none when that runner has no --db-connections."""

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from bench import exit_on_sigterm
from bench.table import print_table
from runner import sqlapi
from runner.localpg import LocalCluster

SHOPS = ("DA", "DE", "NL", "INT", "CHF")
TOKEN = "shpat_bench_token"  # noqa: S105 - a fake for the local simulator
FIRST = dt.date(2025, 9, 1)
BENCH = "bench-connections"  # the bench's own connections, not counted


def _sample(dsn: str, stop: threading.Event, peak: list[int]) -> None:
    """The most client connections to the database seen (but the bench's own) until stopped."""
    with psycopg.connect(dsn, autocommit=True, application_name=BENCH) as db:
        while not stop.is_set():
            (count,) = db.execute(
                "select count(*) from pg_stat_activity where datname = current_database()"
                " and backend_type = 'client backend' and application_name <> %s",
                (BENCH,),
            ).fetchone()
            peak[0] = max(peak[0], count)
            stop.wait(0.02)


def _run(cluster: LocalCluster, base: str, args: argparse.Namespace, budget: str, name: str) -> tuple[float, int]:
    """One backfill from a fresh database with the given budget; returns (wall s, most connections held)."""
    dsn = cluster.create_database("bench_connections", fresh=True)
    last = FIRST + dt.timedelta(days=args.days - 1)
    with psycopg.connect(dsn, autocommit=True, application_name=BENCH) as db:
        db.execute("update bulk_sync.settings set poll_interval_seconds = 1, poll_interval_max_seconds = 2")
        for code in SHOPS[: args.shops]:
            sqlapi.add_shop(db, code, f"{code.lower()}.myshopify.com")
    env = {**os.environ, "DATABASE_URL": dsn}
    for code in SHOPS[: args.shops]:
        env |= {f"SHOP_{code}_URL": f"{base}/{code.lower()}", f"SHOP_{code}_TOKEN": TOKEN}
    command = [sys.executable, "-m", "runner", "run", "--until-idle", "--concurrency", str(args.concurrency)]
    command += [] if budget == "none" else ["--db-connections", budget]
    peak, stop = [0], threading.Event()
    sampler = threading.Thread(target=_sample, args=(dsn, stop, peak))
    sampler.start()
    try:
        with psycopg.connect(dsn, autocommit=True, application_name=BENCH) as db:
            started = time.monotonic()
            sqlapi.enqueue_backfill(db, FIRST, last)
            runner = subprocess.run(command, env=env, cwd=args.checkout, stderr=subprocess.PIPE, text=True)
            seconds = time.monotonic() - started
            left = db.execute("select count(*) from bulk_sync.jobs where status <> 'completed'").fetchone()[0]
    finally:
        stop.set()
        sampler.join()
    if runner.returncode != 0 or left:
        raise RuntimeError(f"{name}: runner exit {runner.returncode}, {left} jobs left: {runner.stderr[-2000:]}")
    print(f"   {name}: {seconds:.1f} s, at most {peak[0]} connections", file=sys.stderr, flush=True)
    return seconds, peak[0]


def figures(argv: list[str] | None = None) -> list[tuple[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each budget, alternating")
    parser.add_argument("--budgets", default="4,100", help="comma-separated: N for --db-connections N, or none")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--shops", type=int, default=5, choices=range(1, 6))
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--orders-per-day", type=int, default=500)
    parser.add_argument("--startup", type=float, default=5.0, help="seconds an operation takes to start")
    parser.add_argument("--rate", type=float, default=8000.0, help="objects an operation exports per second")
    parser.add_argument("--download-rate", type=float, default=10e6, help="bytes/s of each export download")
    parser.add_argument("--checkout", type=Path, help="run the runner of this checkout of bulk-sync")
    args = parser.parse_args(argv)
    budgets = [b.strip() for b in args.budgets.split(",") if b.strip()]
    codes = SHOPS[: args.shops]
    last = FIRST + dt.timedelta(days=args.days - 1)
    times: dict[str, list[float]] = {b: [] for b in budgets}
    peaks: dict[str, int] = dict.fromkeys(budgets, 0)
    with tempfile.TemporaryDirectory(prefix="bulk-sync-connections-") as tmp, LocalCluster(Path(tmp)) as cluster:
        simulator = subprocess.Popen(
            [sys.executable, "-m", "runner", "simulate", "--shops", ",".join(codes), "--port", "0",
             "--from", FIRST.isoformat(), "--to", last.isoformat(), "--orders-per-day", str(args.orders_per_day),
             "--start-latency", str(args.startup), "--objects-per-second", str(args.rate),
             "--download-rate", str(args.download_rate), "--bucket-size", "1e9", "--restore-rate", "1e9",
             "--export-cache", str(Path(tmp) / "exports")],
            env={**os.environ, **{f"SHOP_{code}_TOKEN": TOKEN for code in codes}}, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            base = simulator.stdout.readline().split(" at ")[1].split(" ")[0]
            threading.Thread(target=simulator.stdout.read, daemon=True).start()
            _run(cluster, base, args, budgets[0], "warm-up (untimed: makes the exports)")
            for round_ in range(args.rounds):
                for budget in budgets if round_ % 2 == 0 else reversed(budgets):
                    seconds, peak = _run(cluster, base, args, budget, f"round {round_ + 1}, budget {budget}")
                    times[budget].append(seconds)
                    peaks[budget] = max(peaks[budget], peak)
        finally:
            simulator.terminate()
            simulator.wait(30)
    first = statistics.median(times[budgets[0]])
    rows = [
        ("shops x days x orders/day, runner threads",
         f"{len(codes)} x {args.days} x {args.orders_per_day}, {args.concurrency}"),
        ("operation start-up s, objects/s; download bytes/s",
         f"{args.startup:g}, {args.rate:g}; {args.download_rate:g}"),
    ]  # fmt: skip
    for budget in budgets:
        median = statistics.median(times[budget])
        rows += [
            (f"budget {budget}: wall s, median of {args.rounds} (each)",
             f"{median:.1f} ({', '.join(f'{t:.1f}' for t in times[budget])})"),
            (f"budget {budget}: / budget {budgets[0]}", f"{median / first:.3f}"),
            (f"budget {budget}: most connections held", str(peaks[budget])),
        ]  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    print_table(figures(argv))


if __name__ == "__main__":
    exit_on_sigterm()
    main()
