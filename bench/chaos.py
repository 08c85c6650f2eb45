"""bench/chaos: a multi-shop backfill against the simulator with every fault enabled, while runners are killed with
SIGKILL at random and PostgreSQL is restarted in immediate mode midway. At the end every job is completed or failed
with its reason, and every shopify.* table equals the ground truth except exactly what was reported failed or
quarantined. Prints its numbers; exits non-zero when a check fails.

    python -m bench.chaos [--seed 1] [--days 5] [--orders-per-day 25]"""

import argparse
import datetime as dt
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench import exit_on_sigterm
from runner import sqlapi
from runner.localpg import LocalCluster
from runner.simulator.data import Settings
from runner.simulator.faults import Faults
from runner.simulator.operations import Timing
from runner.simulator.server import SimulatorServer
from runner.simulator.shopify import Config, Shopify
from runner.simulator.truth import TABLES, database_rows, key

SHOPS = {"DA": "2025-10", "DE": "2026-10", "NL": "2026-10", "INT": "2026-01", "CHF": "2026-10"}
TOKEN = "shpat_chaos_token_0123456789"  # noqa: S105 - a recognisable fake
FAULTS = {
    "*": {
        "graphql_5xx": 0.03, "graphql_internal": 0.01, "graphql_reset": 0.02, "graphql_throttled": 0.02,
        "graphql_429": 0.02,
        "download_5xx": 0.05, "download_reset": 0.03, "download_cut": 0.05, "op_failed_internal": 0.05,
        "op_failed_null": 0.03, "op_failed_timeout": 0.02, "op_stuck": 0.02, "op_url_expired": 0.02,
        "malformed_line": 0.03, "foreign_op": 0.02, "lost_start_report": 0.05,
    },
    "CHF": {"op_access_denied": 1},
}  # fmt: skip
_ID = re.compile(r'"id":"(gid:\\/\\/shopify\\/([A-Za-z]+)\\/[0-9]+)"')


def _runner(env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "run", "--until-idle", "--concurrency", "3"],
        env=env, stdout=subprocess.DEVNULL, stderr=log.open("a"), start_new_session=True,
    )  # fmt: skip


def _rows(db: psycopg.Connection, table: str) -> dict:
    return {key(table)(r): r for r in database_rows(db, table)}


def _expected(db: psycopg.Connection, shopify: Shopify) -> tuple[dict, dict]:
    """The ground truth minus what the database reports as failed or quarantined."""
    truth = {t: {key(t)(r): r for code in SHOPS for r in shopify.truth(code, t)} for t in TABLES}
    lost_orders: set[str] = set()
    lost: dict[str, set[tuple]] = {t: set() for t in TABLES}  # keys of rows (runner.simulator.truth.key)
    for shop, entity, start, end in db.execute(
        "select shop, entity, window_start, window_end from bulk_sync.jobs where status = 'failed'"
    ):
        if entity == "orders":
            lost_orders |= {
                o["id"] for o in truth["orders"].values()
                if o["shop"] == shop and start <= dt.datetime.fromisoformat(o["created_at"]) < end
            }  # fmt: skip
        elif entity == "skus":
            lost["skus"] |= {k for k, s in truth["skus"].items() if s["shop"] == shop}
    quarantined = 0
    for entity, line in db.execute(
        "select j.entity, r.line from bulk_sync.rejects r join bulk_sync.jobs j on j.id = r.job_id"
    ):
        quarantined += 1
        match = _ID.search(line)
        if not match or entity == "refunds":
            continue  # a refunds export's orders carry only refunds, which the orders exports also bring
        gid, kind = match.group(1).replace("\\/", "/"), match.group(2)
        if kind == "Order":
            lost_orders.add(gid)
        else:
            lost[{"LineItem": "order_line_items", "ProductVariant": "skus"}[kind]].add((gid,))
    lost["orders"] = {(o,) for o in lost_orders}
    lost["order_line_items"] |= {i for i, r in truth["order_line_items"].items() if r["order_id"] in lost_orders}
    lost_items = {i for (i,) in lost["order_line_items"]}
    # the other children of a lost order or line item (tax lines, transactions, shipping, discount allocations)
    for t in TABLES:
        if t not in ("orders", "order_line_items", "refunds", "skus"):
            lost[t] = {i for i, r in truth[t].items()
                       if r.get("order_id") in lost_orders or r.get("line_item_id") in lost_items}  # fmt: skip
    # A lost order's refunds still arrive with a refunds export whose updated_at window holds the order.
    windows = db.execute(
        "select shop, window_start, window_end from bulk_sync.jobs where entity = 'refunds' and status = 'completed'"
    ).fetchall()

    def refunds_exported(order: dict) -> bool:
        updated = dt.datetime.fromisoformat(order["updated_at"])
        return any(shop == order["shop"] and start <= updated < end for shop, start, end in windows)

    lost["refunds"] = {
        i for i, r in truth["refunds"].items()
        if r["order_id"] in lost_orders and not refunds_exported(truth["orders"][(r["order_id"],)])
    }  # fmt: skip
    expected = {t: {i: r for i, r in truth[t].items() if i not in lost[t]} for t in TABLES}
    return expected, {"quarantined_lines": quarantined, **{f"lost_{t}": len(lost[t]) for t in TABLES}}


def run(seed: int, days: int, orders_per_day: int) -> dict:
    rng = random.Random(seed)
    settings = Settings(seed=seed, first_day=dt.date(2025, 9, 1), last_day=dt.date(2025, 9, days),
                        orders_per_day=orders_per_day)  # fmt: skip
    timing = Timing(start_latency=0.3, objects_per_second=5_000, foreign_op_seconds=3.0)
    shopify = Shopify(Config({c: TOKEN for c in SHOPS}, settings, timing), Faults(FAULTS, seed))
    server = SimulatorServer(shopify).start()
    kills = restarts = 0
    started = time.monotonic()
    runners: list[subprocess.Popen] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bulk-sync-chaos-") as tmp, LocalCluster(Path(tmp)) as cluster:
            dsn = cluster.create_database("chaos")
            with psycopg.connect(dsn, autocommit=True) as db:
                db.execute("update bulk_sync.settings set poll_interval_seconds = 1, backoff_base_seconds = 1, "
                           "backoff_cap_seconds = 4, in_progress_retry_seconds = 2, lease_seconds = 10, "
                           "max_attempts = 60, max_operation_seconds = 15")  # fmt: skip
                for code, version in SHOPS.items():
                    sqlapi.add_shop(db, code, f"{code.lower()}.myshopify.com", version)
                sqlapi.enqueue_backfill(db, "2025-09-01", settings.last_day)
            env = {**os.environ, "DATABASE_URL": dsn}
            for code in SHOPS:
                env[f"SHOP_{code}_TOKEN"], env[f"SHOP_{code}_URL"] = TOKEN, server.shop_url(code)
            log = Path(tmp) / "runners.log"
            runners = [_runner(env, log) for _ in range(2)]
            restart_at = started + rng.uniform(8, 20)
            deadline = started + 600
            while time.monotonic() < deadline:
                time.sleep(rng.uniform(0.5, 3.0))
                if restarts == 0 and time.monotonic() > restart_at:
                    cluster.restart("immediate")
                    restarts += 1
                alive = [r for r in runners if r.poll() is None]
                if not alive:
                    break
                if kills < 15 and rng.random() < 0.6:
                    victim = rng.choice(alive)
                    os.killpg(victim.pid, signal.SIGKILL)
                    victim.wait()
                    kills += 1
                    runners = [r for r in runners if r is not victim] + [_runner(env, log)]
            final = _runner(env, log)
            runners.append(final)
            final.wait(timeout=600)
            for r in runners:
                if r.poll() is None:
                    r.wait(timeout=60)
            with psycopg.connect(dsn, autocommit=True) as db:
                statuses = dict(db.execute("select status, count(*) from bulk_sync.jobs group by status").fetchall())
                terminal = {s.state for s in sqlapi.job_states(db) if s.terminal}
                limits = sqlapi.max_concurrent_ops(db)  # set from each shop's API version by add_shop
                unexplained = db.execute(
                    "select count(*) from bulk_sync.jobs where status = 'failed' and last_error is null"
                ).fetchone()[0]
                expected, lost = _expected(db, shopify)
                mismatched = [t for t in TABLES if _rows(db, t) != expected[t]]
                rows = sum(len(expected[t]) for t in TABLES)
                secrets = db.execute(
                    "select count(*) from bulk_sync.job_runs where message ~ 'Signature=|shpat_'"
                ).fetchone()[0]
                adopted = db.execute(
                    "select count(*) from bulk_sync.job_runs where phase = 'start' and message like '%adopted%'"
                ).fetchone()[0]
                restaged = db.execute(  # staging is unlogged: the restart empties it, and the import downloads again
                    "select count(*) from bulk_sync.job_runs where message like 'staged lines lost%'"
                ).fetchone()[0]
            text = log.read_text()
    finally:
        for r in runners:
            if r.poll() is None:
                os.killpg(r.pid, signal.SIGKILL)
        server.stop()
    stats = shopify.stats()
    duplicates = sum(s["duplicate_starts"] for s in stats["shops"].values())
    over = {c: s["max_concurrent"] for c, s in stats["shops"].items() if s["max_concurrent"] > limits[c]}
    checks = {
        "every job completed, split or failed": set(statuses) <= terminal and "canceled" not in statuses,
        "every failure has its reason": unexplained == 0,
        "tables equal ground truth minus failed and quarantined": not mismatched,
        "no shop over its limit": not over,
        "no secret in logs or audit": secrets == 0 and "Signature=" not in text and TOKEN not in text,
        "no operation started twice while the first was alive": duplicates == 0,
    }
    faults = {}
    for per_shop in stats["faults"].values():
        for kind, n in per_shop.items():
            faults[kind] = faults.get(kind, 0) + n
    return {
        "seed": seed, "seconds": round(time.monotonic() - started), "jobs": statuses, "kills": kills,
        "postgres_restarts": restarts, "faults": faults, "rows_verified": rows, **lost,
        "operations": sum(s["operations_started"] for s in stats["shops"].values()),
        "lost_starts": faults.get("lost_start_report", 0), "adopted": adopted, "duplicate_starts": duplicates,
        "downloaded_again_after_the_restart": restaged, "mismatched_tables": mismatched, "checks": checks,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, action="append", help="repeat for several runs (default: 1 2 3)")
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--orders-per-day", type=int, default=25)
    args = parser.parse_args()
    ok = True
    for seed in args.seed or [1, 2, 3]:
        result = run(seed, args.days, args.orders_per_day)
        print(json.dumps(result, default=str))
        ok &= all(result["checks"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    exit_on_sigterm()
    raise SystemExit(main())
