"""bench/backfill: the wall time of a whole backfill against Shopify's limits. Every operation costs a fixed start-up
plus time per object (20 s + 2,000 objects/s by default, all times divided by --scale so the run stays short) and a
shop runs at most 5 at once. Runs on the same simulated shops, each with a private database:

  ingest    this design against a Shopify that answers at once: how fast this machine downloads and imports
            (after an untimed run of the same that makes the exports: every run is served them from the
            simulator's export cache, so generating data is not what is timed)
  sized     this design: days merged into right-sized windows, the shop's full concurrency, exports pipelined
  original  the first design: one day per operation, one operation per shop at a time, the next export only
            once the previous one is imported

and the lower bound Shopify imposes: per shop, one start-up plus its objects spread over its concurrency.

    python -m bench.backfill [--scale 4] [--orders-per-day 1000] [--days 61] [--skip-original]"""

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from bench import cpu_seconds, exit_on_sigterm
from bench.table import print_table
from runner import sqlapi
from runner.localpg import LocalCluster
from runner.simulator import truth

SHOPS = ("DA", "DE", "NL", "INT", "CHF")
TOKEN = "shpat_bench_token"  # noqa: S105 - a fake for the local simulator
FIRST = dt.date(2025, 9, 1)


@dataclass
class Run:
    name: str
    seconds: float
    jobs: int
    operations: int
    rows: dict[str, int]
    objects: dict[str, int]  # per shop, what Shopify exported
    simulator_cpu: float  # CPU seconds the simulated Shopify spent on this machine (writing exports, serving them)
    cache: dict[str, int]  # exports the simulator served from its cache (hits) or made during the run (misses)
    phases: dict[str, float]  # seconds of the run during which at least one job was in each phase


def _simulator(args: argparse.Namespace, startup: float, rate: float, cache: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, **{f"SHOP_{code}_TOKEN": TOKEN for code in args.shop_codes}}
    last = FIRST + dt.timedelta(days=args.days - 1)
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "simulate", "--shops", ",".join(args.shop_codes), "--port", "0",
         "--from", FIRST.isoformat(), "--to", last.isoformat(), "--orders-per-day", str(args.orders_per_day),
         "--start-latency", str(startup), "--objects-per-second", str(rate),
         "--bucket-size", "1e9", "--restore-rate", "1e9", "--export-cache", str(cache)],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    return process, process.stdout.readline().split(" at ")[1].split(" ")[0]


def _run(name: str, cluster: LocalCluster, args: argparse.Namespace, startup: float, rate: float, cache: Path) -> Run:
    """One backfill of every shop from a fresh database to the last import; returns what it took."""
    dsn = cluster.create_database(f"bench_{name.replace('-', '_')}")
    simulator, base = _simulator(args, startup, rate, cache)
    try:
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute("update bulk_sync.settings set poll_interval_seconds = 1, poll_interval_max_seconds = 1")
            if name.startswith("original"):
                db.execute("update bulk_sync.settings set window_sizing = false")
            for code in args.shop_codes:
                ops = 1 if name.startswith("original") else None
                sqlapi.add_shop(db, code, f"{code.lower()}.myshopify.com", "2026-10", ops)
            env = {**os.environ, "DATABASE_URL": dsn}
            for code in args.shop_codes:
                env[f"SHOP_{code}_URL"] = f"{base}/{code.lower()}"
                env[f"SHOP_{code}_TOKEN"] = TOKEN
            last = FIRST + dt.timedelta(days=args.days - 1)
            command = [sys.executable, "-m", "runner", "run", "--concurrency", str(args.concurrency)]
            first, timed_after, ops_before = FIRST, 0, 0
            if name == "sized" and args.warm_days:
                # An earlier backfill of the same shops (untimed): the timed one is sized from what it saw.
                first = FIRST + dt.timedelta(days=args.warm_days)
                sqlapi.enqueue_backfill(db, FIRST, first - dt.timedelta(days=1), ["orders", "refunds"])
                subprocess.run([*command, "--until-idle"], env=env, stderr=subprocess.DEVNULL, check=True)
                timed_after = db.execute("select max(id) from bulk_sync.jobs").fetchone()[0]
                ops_before = _stats(base)[0]
            started, simulator_cpu = time.monotonic(), cpu_seconds(simulator.pid)
            if name.startswith("original"):
                runner = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
                try:
                    _one_at_a_time(db, args.shop_codes, last)
                    seconds = time.monotonic() - started
                finally:
                    runner.terminate()
                    returncode = runner.wait(60)
            else:
                sqlapi.enqueue_backfill(db, first, last)
                returncode = subprocess.run([*command, "--until-idle"], env=env, stderr=subprocess.DEVNULL).returncode
                seconds = time.monotonic() - started
            simulator_cpu = cpu_seconds(simulator.pid) - simulator_cpu  # the timed part only
            if returncode != 0:
                raise RuntimeError(f"the {name} run's runner exited with {returncode}")
            left = db.execute("select count(*) from bulk_sync.jobs where status <> 'completed'").fetchone()[0]
            if left:
                raise RuntimeError(f"the {name} run left {left} jobs not completed")
            jobs = db.execute("select count(*) from bulk_sync.jobs where id > %s", (timed_after,)).fetchone()[0]
            count = sql.SQL("select count(*) from {}")
            rows = {t: db.execute(count.format(sql.Identifier("shopify", t))).fetchone()[0] for t in truth.TABLES}
            objects = dict(
                db.execute(
                    "select shop, sum(object_count)::bigint from bulk_sync.jobs where id > %s group by shop",
                    (timed_after,),
                ).fetchall()
            )
            phases = dict(db.execute(PHASES, (timed_after,)).fetchall())
        operations, cache_counts = _stats(base)
        operations -= ops_before
        if not name.startswith("original") and args.truth:
            counted = [truth.counted(base, code) for code in args.shop_codes]
            expected = {t: sum(c[t] for c in counted) for t in truth.TABLES}
            if expected != rows:
                raise RuntimeError(f"the {name} run's tables differ from the ground truth: {rows} != {expected}")
    finally:
        simulator.terminate()
        simulator.wait(10)
    print(f"   {name} run: {seconds:.1f} s, {jobs} jobs, {operations} operations", file=sys.stderr, flush=True)
    return Run(name, seconds, jobs, operations, rows, objects, simulator_cpu, cache_counts, phases)


# Per phase, the seconds during which at least one job of the run (jobs after the given id) was in it, from the
# audit trail: Shopify at work (dispatched to COMPLETED), download into staging, in line for an import slot (and a
# runner to take it), import, and fetching the refunds' lines with regular queries. Phases overlap one another (a
# pipeline); each figure is the union of its jobs' spans.
PHASES = """
    with marks as (
        select job_id,
               min(created_at) filter (where to_status = 'starting') as dispatched,
               max(created_at) filter (where to_status = 'exporting') as exported,
               max(created_at) filter (where to_status = 'copied') as copied,
               max(created_at) filter (where to_status = 'importing') as importing,
               max(created_at) filter (where from_status = 'importing' and to_status = 'fetching') as fetching,
               max(created_at) filter (where to_status = 'completed') as completed
        from bulk_sync.job_runs where job_id > %s group by job_id
    ),
    spans as (
        select p.phase, tstzrange(p.first, p.last) as span
        from marks
        cross join lateral (values
            ('Shopify at work', dispatched, exported), ('download into staging', exported, copied),
            ('in line for an import slot', copied, importing), ('import', importing, coalesce(fetching, completed)),
            ('refund lines fetched', fetching, completed)
        ) as p (phase, first, last)
        where p.first < p.last
    )
    select phase, extract(epoch from sum(upper(r) - lower(r)))::float
    from (select phase, unnest(range_agg(span)) as r from spans group by phase) as u
    group by phase
"""


def _one_at_a_time(db: psycopg.Connection, shops: tuple[str, ...], last: dt.date) -> None:
    """The original design's schedule: per shop one job at a time (each day's orders, then each day's refunds, then
    the skus), the next one queued only once the previous one is imported (within 50 ms)."""
    days = [FIRST + dt.timedelta(days=i) for i in range((last - FIRST).days + 1)]
    plan = {code: [(d, d, e) for e in ("orders", "refunds") for d in days] + [(FIRST, last, "skus")] for code in shops}
    current: dict[str, int] = {}
    while plan or current:
        if current:
            done = db.execute("select id, status from bulk_sync.jobs where id = any(%s)", (list(current.values()),))
            for job_id, status in done.fetchall():
                if status == "failed":
                    raise RuntimeError(f"job {job_id} of the original run failed")
                if status == "completed":
                    current = {code: j for code, j in current.items() if j != job_id}
        for code in [c for c in plan if c not in current]:
            first, end, entity = plan[code].pop(0)
            sqlapi.enqueue_backfill(db, first, end, [entity], [code])
            current[code] = db.execute("select max(id) from bulk_sync.jobs where shop = %s", (code,)).fetchone()[0]
            if not plan[code]:
                del plan[code]
        time.sleep(0.05)


def _stats(base: str) -> tuple[int, dict[str, int]]:
    """Operations the simulated Shopify started so far, and the exports it served from its cache or made."""
    stats = httpx.get(f"{base}/_admin/stats", timeout=30).json()
    return sum(s["operations_started"] for s in stats["shops"].values()), stats["export_cache"]


def figures(argv: list[str] | None = None) -> list[tuple[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=4.0, help="divide every Shopify time by this")
    parser.add_argument("--startup", type=float, default=20.0, help="seconds an operation takes to start")
    parser.add_argument("--rate", type=float, default=2000.0, help="objects an operation exports per second")
    parser.add_argument("--orders-per-day", type=int, default=1000)
    parser.add_argument("--days", type=int, default=61)
    parser.add_argument("--shops", type=int, default=5, choices=range(1, 6), help="how many of DA, DE, NL, INT, CHF")
    parser.add_argument(
        "--warm-days", type=int, default=0,
        help="backfill this many first days before the timed sized run (a shop's sizes are then known)",
    )  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=8, help="runner threads")
    parser.add_argument("--skip-original", action="store_true", help="leave out the (long) original design run")
    parser.add_argument(
        "--pg-setting", action="append", default=[], metavar="NAME=VALUE",
        help="a server setting for the private cluster, e.g. max_wal_size=4GB (repeatable)",
    )  # fmt: skip
    parser.add_argument("--no-truth", dest="truth", action="store_false", help="skip the ground-truth check")
    args = parser.parse_args(argv)
    args.shop_codes = SHOPS[: args.shops]
    startup, rate = args.startup / args.scale, args.rate * args.scale
    runs = {}
    tuning = tuple(f"-c {setting}" for setting in args.pg_setting)
    with (
        tempfile.TemporaryDirectory(prefix="bulk-sync-bench-") as tmp,
        LocalCluster(Path(tmp), options=tuning) as cluster,
    ):
        cache = Path(tmp) / "exports"
        if not args.warm_days:  # with warm days the sized run covers fewer days than an ingest run would
            # Untimed: makes the exports this design asks for, so the timed runs measure bulk-sync, not the
            # simulator generating them (on real Shopify, exports are made on Shopify's side).
            _run("ingest-warmup", cluster, args, 0.0, 1e9, cache)
            runs["ingest"] = _run("ingest", cluster, args, 0.0, 1e9, cache)
        runs["sized"] = _run("sized", cluster, args, startup, rate, cache)
        if not args.skip_original:
            runs["original"] = _run("original", cluster, args, startup, rate, cache)
    sized = runs["sized"]
    if "original" in runs and runs["original"].rows != sized.rows:
        raise RuntimeError(f"the runs imported different rows: {runs['original'].rows} != {sized.rows}")
    # Shopify's limit: a shop's export work (one start-up, then its objects over 5 concurrent operations).
    bound = max(startup + objects / (5 * rate) for objects in sized.objects.values())
    rows = [
        ("shops x days x orders/day", f"{len(args.shop_codes)} x {args.days} x {args.orders_per_day}"),
        ("days backfilled before the timed sized run (sizes known)", str(args.warm_days)),
        ("objects exported", f"{sum(sized.objects.values()):,}"),
        ("rows imported (orders, line items, refunds, skus)", "/".join(f"{n:,}" for n in sized.rows.values())),
        (f"operation cost (20 s + n/2,000 s) / {args.scale:g}", f"{startup:g}s+n/{rate:g}"),
    ]
    for run in runs.values():
        rows.append((f"{run.name} run: wall s ({run.jobs} jobs, {run.operations} operations)", f"{run.seconds:.1f}"))
        rows.append((
            f"{run.name} run: CPU s of the simulated Shopify ({run.cache['hits']} exports cached, "
            f"{run.cache['misses']} made during the run)", f"{run.simulator_cpu:.1f}"
        ))  # fmt: skip
    rows += [
        ("lower bound, Shopify (per shop: 1 start-up + objects / 5 ops), s", f"{bound:.1f}"),
        ("sized / Shopify lower bound (target <= 1.2)", f"{sized.seconds / bound:.2f}"),
    ]
    if "ingest" in runs:
        ingest = runs["ingest"]
        machine = ingest.seconds
        lines = sum(ingest.objects.values())
        rows += [
            ("machine bound (the ingest run), s", f"{machine:.1f}"),
            ("ingest run: lines/s end to end (export lines / wall s)", f"{lines / machine:.0f}"),
        ]
        rows += [
            (
                f"ingest run: s with some job in phase '{phase}' (of {machine:.0f} s)",
                f"{ingest.phases.get(phase, 0.0):.1f}",
            )
            for phase in (
                "Shopify at work",
                "download into staging",
                "in line for an import slot",
                "import",
                "refund lines fetched",
            )  # fmt: skip
        ]
        rows.append(("sized / max(Shopify bound, machine bound)", f"{sized.seconds / max(bound, machine):.2f}"))
    if "original" in runs:
        rows.append(("original / sized (target >= 5)", f"{runs['original'].seconds / sized.seconds:.2f}"))
    return rows


def main() -> None:
    print_table(figures())


if __name__ == "__main__":
    exit_on_sigterm()
    main()
