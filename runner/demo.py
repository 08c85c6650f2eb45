"""`bulk-sync demo`: the whole pipeline on this machine. A private PostgreSQL (pg_cron, pgmq), the local Shopify
simulator for DA, DE, NL, INT and CHF, the 2025-09-01..2025-10-31 backfill queued with one SQL call, runners
working it to completion with progress shown, the result checked against the simulator's ground truth; then the
shops' data changes and one incremental round brings the database up to date again; last the shops delete orders,
variants and customers, marked by webhook at once, or by reconciliation where a webhook got lost. With --keep the
database stays up to be looked into. The shops are reached as apps installed today reach them: one app's client
credentials, granting tokens that expire after TOKEN_LIFETIME seconds (Shopify's last a day), renewed by the runner
as it goes."""

import contextlib
import datetime as dt
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from runner import log, sqlapi, timeline
from runner.health import HealthServer
from runner.localpg import LocalCluster, free_port
from runner.pool import Budget
from runner.shared import ConfigError
from runner.simulator import truth
from runner.simulator.webhooks import domain
from runner.status import watch
from runner.webhook import WebhookServer
from runner.worker import Runner

SHOPS = ("DA", "DE", "NL", "INT", "CHF")
DATABASE = "bulk_sync"
FIRST, LAST = dt.date(2025, 9, 1), dt.date(2025, 10, 31)
TOKEN_LIFETIME = 30


def _summary(db: psycopg.Connection, base_url: str) -> bool:
    print(f"\n{'table':<41}{'rows':>12}{'ground truth':>15}  check")
    same = True
    counted = [truth.counted(base_url, code) for code in SHOPS]
    for name in truth.TABLES:
        live = sql.Identifier("shopify", f"live_{name}")  # without what was deleted
        rows = db.execute(sql.SQL("select count(*) from {}").format(live)).fetchone()[0]
        expected = sum(c[name] for c in counted)
        same &= rows == expected
        print(f"shopify.{name:<33}{rows:>12,}{expected:>15,}  {'equal' if rows == expected else 'DIFFERENT'}")
    return same & _sales(db, base_url)


def _units(db: psycopg.Connection) -> None:
    """What the progress counts: jobs per shop, entity and day, merged into operations as they go."""
    days, windowed, snapshots, snapshotted = db.execute(
        """select count(*) filter (where window_start is not null),
                  string_agg(distinct entity, ', ') filter (where window_start is not null),
                  count(*) filter (where window_start is null),
                  string_agg(distinct entity, ', ') filter (where window_start is null)
           from bulk_sync.jobs"""
    ).fetchone()
    print(f"  {days} of them one per shop, entity and day ({windowed}); {snapshots} one per shop ({snapshotted}: "
          "snapshots).\n  Runners merge consecutive days into one Shopify operation as they dispatch them: jobs fall "
          "in number, days stay.\n  Progress: days done of days queued; objects Shopify exported, lines imported and "
          "refund lines fetched, each with its rate.")  # fmt: skip


def _sales(db: psycopg.Connection, base_url: str) -> bool:
    """shopify.daily_sales against the sales report the simulator computes from its own numbers, per shop and day."""
    days = differ = 0
    for code in SHOPS:
        url = f"{base_url}/_admin/sales/{code.lower()}?tz=UTC"  # the demo's shops keep their days in UTC
        expected = httpx.get(url, timeout=600).json()
        found = truth.sales_of(db, code)
        days += len(expected)
        differ += sum(found.get(day) != figures for day, figures in expected.items()) + len(found.keys() - expected)
    print(f"shopify.daily_sales: {days:,} shop-days, {'each' if not differ else f'{differ} NOT'} equal to the "
          "sales report the simulator computes from its own numbers, to the cent")  # fmt: skip
    return differ == 0


def _keep_current(db: psycopg.Connection, dsn: str, base_url: str, env: dict[str, str], directory: Path) -> bool:
    """Shopify data changes; one incremental round brings the database up to date again."""
    changes = {"new_orders": 50, "refunds": 20, "edits": 20}
    for code in SHOPS:
        httpx.post(f"{base_url}/_admin/shops/{code.lower()}/changes", json=changes, timeout=60).raise_for_status()
    print(f"\nmeanwhile on each shop: {changes['new_orders']} new orders, {changes['refunds']} refunds and "
          f"{changes['edits']} edits of existing orders")  # fmt: skip
    time.sleep(1.1)  # updated_at has whole seconds: the window must end after the changes
    created = sqlapi.enqueue_incremental(db)
    print(f"select bulk_sync.enqueue_incremental();  -> {created} jobs created (pg_cron runs it every five minutes)")
    started = time.monotonic()
    Runner(dsn, env, concurrency=4, name="demo", until_idle=True).run()
    print(f"incremental sync finished in {time.monotonic() - started:.0f} s; freshness:")
    for shop, entity, through, behind in db.execute(
        """select shop, entity, to_char(synced_through, 'YYYY-MM-DD HH24:MI:SS TZ'), behind
           from bulk_sync.freshness order by shop, entity"""
    ).fetchall():
        print(f"  {shop:<4} {entity} synced through {through} ({behind} behind)")
    return _summary(db, base_url)


DELETED = ("orders", "skus", "customers")


def _marked(db: psycopg.Connection) -> tuple[set[str], ...]:
    query = sql.SQL("select id from {} where deleted_at is not null")
    return tuple({i for (i,) in db.execute(query.format(sql.Identifier("shopify", table)))} for table in DELETED)


def _deletions(db: psycopg.Connection, dsn: str, base_url: str, env: dict[str, str]) -> bool:
    """Shops delete orders, variants and customers: the webhooks mark them within moments; the notifications that got
    lost are found by reconciliation and the SKU snapshot. True when exactly the deleted rows are marked."""
    httpx.post(f"{base_url}/_admin/faults", json={"DE": {"webhook_lost": 3}}, timeout=30).raise_for_status()
    orders, variants, customers = set(), set(), set()
    for code in SHOPS:
        spec = {"deleted_orders": 3, "deleted_variants": 10, "deleted_customers": 2}
        answer = httpx.post(f"{base_url}/_admin/shops/{code.lower()}/changes", json=spec, timeout=60).json()
        orders |= set(answer["deleted_orders"])
        variants |= set(answer["deleted_variants"])
        customers |= set(answer["deleted_customers"])
    started = time.monotonic()
    deleted = len(orders) + len(variants) + len(customers)
    while time.monotonic() - started < 10 and sum(map(len, _marked(db))) < deleted - 3:
        time.sleep(0.1)
    by_hook = _marked(db)
    waited = time.monotonic() - started
    sqlapi.enqueue_reconcile(db, FIRST, LAST)
    sqlapi.enqueue_backfill(db, dt.date.today(), dt.date.today(), ["skus", "products"])
    Runner(dsn, env, concurrency=4, name="demo", until_idle=True).run()
    after = _marked(db)
    print(f"\ndeleted on the shops: {len(orders)} orders, {len(variants)} variants, {len(customers)} customers; "
          f"marked by webhook within {waited:.1f} s: {len(by_hook[0])} orders, {len(by_hook[1])} variants, "
          f"{len(by_hook[2])} customers; the rest, whose webhooks were lost, by reconciliation and the SKU snapshot: "
          f"{len(after[0] - by_hook[0])} orders, {len(after[1] - by_hook[1])} variants, "
          f"{len(after[2] - by_hook[2])} customers")  # fmt: skip
    return after == (orders, variants, customers)


def _tokens(base_url: str) -> str:
    """How many tokens the app was granted per shop, and how many requests came with an expired one."""
    stats = httpx.get(f"{base_url}/_admin/stats", timeout=30).json()["shops"]
    granted = ", ".join(f"{code} {stats[code]['tokens_issued']}" for code in SHOPS)
    refused = sum(stats[code]["tokens_rejected"] for code in SHOPS)
    return f"tokens granted (valid {TOKEN_LIFETIME} s each): {granted}; requests with an expired token: {refused}"


def _simulator(app: dict[str, str], orders_per_day: int, webhooks: str) -> tuple[subprocess.Popen, str]:
    """The simulator in a process of its own, as a real Shopify would be; returns it and its base URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOP_", "SHOPIFY_"))} | app
    env["SHOPIFY_WEBHOOK_SECRET"] = app["SHOPIFY_CLIENT_SECRET"]
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "simulate", "--shops", ",".join(SHOPS), "--port", "0",
         "--from", FIRST.isoformat(), "--to", LAST.isoformat(), "--orders-per-day", str(orders_per_day),
         "--start-latency", "1", "--objects-per-second", "20000", "--token-lifetime", str(TOKEN_LIFETIME),
         "--webhook-url", webhooks],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    first = process.stdout.readline()
    if " at " not in first:
        process.kill()
        raise RuntimeError("the simulator did not start")
    return process, first.split(" at ")[1].split(" ")[0]


def _command() -> str:
    """How this process was started, to print commands the user can paste: the installed script, or python -m."""
    script = sys.argv[0]
    return shlex.quote(script) if not script.endswith("__main__.py") else f"{shlex.quote(sys.executable)} -m runner"


def stop(directory: Path) -> int:
    """Stops the database a `--keep` demo left running in `directory`."""
    cluster = LocalCluster(directory / "postgres")
    if cluster.running() is None:
        print(f"no demo database runs in {directory}")
        return 0
    cluster.stop()
    print(f"stopped the demo database in {directory}")
    return 0


def run(
    directory: Path, reset: bool = False, port: int | None = None, orders_per_day: int = 300,
    picture: Path | None = None, keep: bool = False,
) -> int:  # fmt: skip
    pid = LocalCluster(directory / "postgres").running()
    if pid is not None:
        raise ConfigError(
            f"a demo database runs in {directory} already (pid {pid}): wait for its demo to end, stop one left by "
            f"--keep with `{_command()} demo --stop --dir {shlex.quote(str(directory))}`, or use another --dir"
        )
    if reset and directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    app = {"SHOPIFY_CLIENT_ID": f"demo-{secrets.token_hex(4)}", "SHOPIFY_CLIENT_SECRET": secrets.token_hex(16)}
    hook_port = free_port()
    simulator, base_url = _simulator(app, orders_per_day, f"http://127.0.0.1:{hook_port}/webhooks")
    runner_log = (directory / "runner.log").open("a")
    log.send_to(runner_log)  # every step line of the runners and the webhook receiver
    webhooks = None
    cluster = LocalCluster(directory / "postgres", port=port)
    try:
        with contextlib.nullcontext(cluster.start()) if keep else cluster:  # --keep: left running
            print(f"PostgreSQL with pg_cron on 127.0.0.1:{cluster.port} (data in {cluster.data})")
            print(f"Shopify simulator for {', '.join(SHOPS)} at {base_url}, {orders_per_day} orders a day")
            # A fresh database each run: the comparison with the simulator's ground truth holds only for data the
            # simulator of this run made (a kept database would hold the last run's live changes too).
            dsn = cluster.create_database(DATABASE, fresh=True)
            print("migrated: " + (", ".join(cluster.applied) if cluster.applied else "already up to date"))
            with psycopg.connect(dsn, autocommit=True) as db:
                db.execute("update bulk_sync.settings set poll_interval_seconds = 1")
                for code in SHOPS:
                    sqlapi.add_shop(db, code, domain(code))
                (queued_at,) = db.execute("select now()").fetchone()
                created = sqlapi.enqueue_backfill(db, FIRST, LAST)
                print(f"select bulk_sync.enqueue_backfill('{FIRST}', '{LAST}');  -> {created} jobs created")
                _units(db)
                env = app | {f"SHOP_{c}_URL": f"{base_url}/{c.lower()}" for c in SHOPS}
                webhooks = WebhookServer(Budget(dsn, 2, "bulk-sync demo webhooks").open(), env, hook_port, "127.0.0.1")
                webhooks.start()
                runner = Runner(dsn, env, concurrency=4, name="demo", until_idle=True)
                health = HealthServer(runner, free_port(), "127.0.0.1").start()
                worker = threading.Thread(target=runner.run, daemon=True)
                worker.start()
                print(f"runners working (step log: {directory / 'runner.log'}; "
                      f"metrics: http://127.0.0.1:{health.port}/metrics)\n")  # fmt: skip
                # the live view, redrawn in place on a terminal; a line of progress every 3 s elsewhere
                watch(db, 2 if sys.stdout.isatty() else 3, running=worker.is_alive,
                      wait=lambda s: worker.join(timeout=s), lines=True)  # fmt: skip
                drawn = timeline.jobs(db, since=queued_at)
                # the span the timeline draws, from the first step of a job to the last, the one duration shown
                print(f"\nbackfill finished in {timeline.duration(drawn):.0f} s")
                picture = picture or directory / "timeline.svg"
                picture.write_text(timeline.svg(drawn, title="bulk-sync demo: the backfill of five shops"))
                print(f"its timeline ({len(drawn)} jobs, {timeline.operations(drawn)} Shopify operations): {picture}")
                scrape = httpx.get(f"http://127.0.0.1:{health.port}/metrics", timeout=30).text
                health.stop()
                (directory / "metrics.txt").write_text(scrape)
                print(f"the runners' metrics at its end: {directory / 'metrics.txt'}")
                same = _summary(db, base_url)
                same &= _keep_current(db, dsn, base_url, env, directory)
                same &= _deletions(db, dsn, base_url, env)
                same &= _summary(db, base_url)
                print(f"\none app's client credentials for all shops; {_tokens(base_url)}")
    finally:
        if webhooks is not None:
            webhooks.stop()
            webhooks.budget.close()
        log.send_to(None)
        runner_log.close()
        simulator.terminate()
        simulator.wait(10)
    if keep:
        print(f"\nstopped the simulator; the database still runs (--keep). Look into it:\n"
              f"  psql '{cluster.dsn(DATABASE)}'\n"
              f"and stop it:\n  {_command()} demo --stop --dir {shlex.quote(str(directory))}")  # fmt: skip
    else:
        print("\nstopped the demo cluster and simulator; run again for a new run (--reset also removes the cluster)")
    return 0 if same else 1
