"""The runner against the simulator over real HTTP and a real database, as separate processes."""

import os
import random
import signal
import subprocess
import sys
import time

import httpx
import psycopg
import pytest

from runner.simulator.truth import TABLES
from tests.jobs import login, table, windows_tile
from tests.processes import runner_env, start_runner
from tests.sim import TOKEN, start, truth

SHOPS = {"DA": "2025-10", "DE": "2026-10", "NL": "2026-10", "INT": "2026-01", "CHF": "2026-10"}


@pytest.fixture
def shopify():
    server = start(tuple(SHOPS), days=7, orders_per_day=40, start_latency=0.3, objects_per_second=20_000)
    yield server
    server.stop()


def _setup(db: psycopg.Connection) -> int:
    db.execute("update bulk_sync.settings set poll_interval_seconds = 1, backoff_base_seconds = 1, "
               "backoff_cap_seconds = 4, in_progress_retry_seconds = 2, lease_seconds = 10")  # fmt: skip
    for code, version in SHOPS.items():
        db.execute("select bulk_sync.add_shop(%s, %s, %s)", (code, f"{code.lower()}.myshopify.com", version))
    return db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-07')").fetchone()[0]


def _steps(db: psycopg.Connection) -> int:
    return db.execute("select count(*) from bulk_sync.job_runs").fetchone()[0]


def _assert_equals_truth(db: psycopg.Connection, server) -> None:
    statuses = db.execute("select status, count(*) from bulk_sync.jobs group by status").fetchall()
    assert dict(statuses).keys() == {"completed"}, statuses
    for name in TABLES:
        expected = truth(server, SHOPS, name)
        assert table(db, name) == expected, name


def test_a_week_of_five_shops_equals_the_ground_truth(db: psycopg.Connection, dsn: str, shopify, tmp_path) -> None:
    created = _setup(db)
    assert created == 5 * 7 * 3 + 5 * 2  # per shop and day orders, refunds, customers; per shop skus, products
    log = tmp_path / "runner.log"
    login(db, dsn, "bulk_sync_runner").close()  # the runner connects with the least privilege it needs
    runner_dsn = dsn.replace(f"user={db.info.user}", "user=bulk_sync_runner_login")
    runner = start_runner(runner_env(runner_dsn, shopify), "--until-idle", "--concurrency", "4", log=log)
    assert runner.wait(timeout=300) == 0, log.read_text()[-3000:]
    _assert_equals_truth(db, shopify)
    stats = httpx.get(f"{shopify.base_url}/_admin/stats").json()["shops"]
    assert stats["DA"]["max_concurrent"] == 1 and all(s["max_concurrent"] <= 5 for s in stats.values())
    assert sum(s["in_progress_refusals"] for s in stats.values()) == 0
    lines = log.read_text().splitlines()
    assert any("phase=download" in line and "outcome=ok" in line for line in lines)
    assert not any("Signature=" in line or TOKEN in line for line in lines)


def test_missing_token_is_one_clear_line(db: psycopg.Connection, dsn: str, shopify) -> None:
    _setup(db)
    env = runner_env(dsn, shopify)
    del env["SHOP_NL_TOKEN"]
    result = subprocess.run(
        [sys.executable, "-m", "runner", "run", "--until-idle"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "bulk-sync: no credentials for an active shop: set SHOP_NL_TOKEN or SHOP_NL_CLIENT_ID and "
        "SHOP_NL_CLIENT_SECRET (or SHOPIFY_CLIENT_ID and SHOPIFY_CLIENT_SECRET for every shop)"
    )


def test_sigkilled_runners_lose_nothing(db: psycopg.Connection, dsn: str, shopify, tmp_path) -> None:
    _setup(db)
    env = runner_env(dsn, shopify)
    log = tmp_path / "runner.log"
    rng = random.Random(5)
    kills = 0
    while kills < 12:
        # Killed after a random number of steps recorded, not of seconds: as many kills on any machine.
        target = _steps(db) + rng.randint(1, 12)
        runner = start_runner(env, "--until-idle", "--concurrency", "3", log=log)
        deadline = time.monotonic() + 120  # guards a hang only
        while runner.poll() is None and _steps(db) < target:
            assert time.monotonic() < deadline, "the runner made no progress"
            time.sleep(0.02)
        if runner.poll() is not None:
            break  # it finished on its own
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait()
        kills += 1
    assert kills >= 3
    final = start_runner(env, "--until-idle", "--concurrency", "4", log=log)
    assert final.wait(timeout=300) == 0, log.read_text()[-3000:]
    _assert_equals_truth(db, shopify)
    # Every operation Shopify started is accounted for: reported by a runner, or started by one that vanished
    # before it could report (its start claim then ended in lease recovery).
    sim_ops = {
        f"gid://shopify/BulkOperation/{n}" for n, op in shopify.shopify.operations.items() if op.foreign_until is None
    }
    reported = {
        row[0].split()[1]
        for row in db.execute("select message from bulk_sync.job_runs where phase = 'start' and status = 'ok'")
    }
    vanished = db.execute(
        "select count(*) from bulk_sync.job_runs where phase = 'recover' and from_status = 'starting'"
    ).fetchone()[0]
    assert reported <= sim_ops
    assert len(sim_ops - reported) <= vanished
    print(f"\n{kills} SIGKILLs, {len(sim_ops)} operations, {len(sim_ops - reported)} started by a vanished runner")


def test_two_runners_respect_limits_and_every_throttle(db: psycopg.Connection, dsn: str, tmp_path) -> None:
    # Shopify's smallest bucket holds 1,000 points (a query may request that much: a page of refunds' lines nearly
    # does), restored slowly here; one call in twenty is throttled whatever the bucket holds besides
    server = start(tuple(SHOPS), days=7, orders_per_day=40, start_latency=0.3, objects_per_second=20_000,
                   bucket_size=1000, restore_rate=20, faults={"*": {"graphql_throttled": 0.05}})  # fmt: skip
    try:
        _setup(db)
        env = runner_env(dsn, server)
        log = tmp_path / "runner.log"
        runners = [start_runner(env, "--until-idle", "--concurrency", "4", "--name", f"r{i}", log=log) for i in (1, 2)]
        for runner in runners:
            assert runner.wait(timeout=300) == 0, log.read_text()[-3000:]
        _assert_equals_truth(db, server)
        stats = httpx.get(f"{server.base_url}/_admin/stats").json()["shops"]
        for code, version in SHOPS.items():
            assert stats[code]["max_concurrent"] <= (1 if version < "2026-01" else 5)
            assert stats[code]["in_progress_refusals"] == 0
        throttled = sum(s["throttled"] for s in stats.values())
        reported = db.execute(
            "select count(*) from bulk_sync.job_runs where message like 'throttled by Shopify%'"
        ).fetchone()[0]
        stale = db.execute(
            "select count(*) from bulk_sync.job_runs where phase = 'throttled' and status = 'stale'"
        ).fetchone()[0]
        assert throttled > 0 and throttled == reported + stale  # every throttled request reported, and waited for
        print(f"\n{throttled} throttled requests, all reported")
    finally:
        server.stop()


def test_shopify_failures_are_reported_and_survived(db: psycopg.Connection, dsn: str, tmp_path) -> None:
    faults = {
        "*": {"graphql_5xx": 0.05, "graphql_reset": 0.03, "graphql_429": 0.03},
        "INT": {"graphql_internal": 2},
        "DE": {"download_cut": 2, "download_5xx": 1, "download_reset": 1, "op_failed_internal": 1, "op_stuck": 1},
        "NL": {"op_failed_null": 1, "op_url_expired": 1, "op_failed_timeout": 1, "graphql_throttled": 2},
    }
    server = start(tuple(SHOPS), faults, days=7, orders_per_day=40, start_latency=0.3, objects_per_second=20_000)
    try:
        _setup(db)
        db.execute("update bulk_sync.settings set max_attempts = 30, max_operation_seconds = 10")
        log = tmp_path / "runner.log"
        runner = start_runner(runner_env(dsn, server), "--until-idle", "--concurrency", "4", log=log)
        assert runner.wait(timeout=300) == 0, log.read_text()[-3000:]
        statuses = dict(db.execute("select status, count(*) from bulk_sync.jobs group by status").fetchall())
        assert set(statuses) <= {"completed", "split"}, statuses
        for name in TABLES:
            expected = truth(server, SHOPS, name)
            assert table(db, name) == expected, name
        injected = httpx.get(f"{server.base_url}/_admin/stats").json()["faults"]
        assert injected["DE"]["download_cut"] == 2 and injected["NL"]["op_failed_timeout"] == 1
        assert injected["INT"]["graphql_internal"] == 2  # Shopify's own failure in a 200: retried, not fatal
        retried = db.execute("select count(*) from bulk_sync.job_runs where status = 'retry'").fetchone()[0]
        assert retried >= 8
        # the TIMEOUT and the stuck operation each split their window in two; a snapshot (skus, products) has none to
        # split and is exported again (which job Shopify's fault hits depends on which start reached it first)
        snapshots = ("skus", "products")
        handled = db.execute(
            """select j.entity, r.status from bulk_sync.job_runs as r join bulk_sync.jobs as j on j.id = r.job_id
               where r.message like '%TIMEOUT%' or r.message like '%max_operation_seconds%'"""
        ).fetchall()
        assert len(handled) == 2, handled
        assert all((status == "split") == (entity not in snapshots) for entity, status in handled), handled
        assert statuses.get("split", 0) == sum(entity not in snapshots for entity, _ in handled), (handled, statuses)
        stuck = [op for op in server.shopify.operations.values() if op.stuck]
        assert len(stuck) == 1 and stuck[0].canceled_at is not None  # and the stuck one was canceled
        text = log.read_text()
        assert "Signature=" not in text and TOKEN not in text
        # secrets: the signed URL lives only in bulk_sync.jobs.export_url; the token nowhere in the database
        written = " ".join(
            r[0] or ""
            for r in db.execute(
                """select last_error from bulk_sync.jobs union all select message from bulk_sync.job_runs
                   union all select reason from bulk_sync.rejects"""
            )
        )
        assert "Signature=" not in written and "Expires=" not in written and TOKEN not in written
        everything = db.execute(
            "select string_agg(j::text, ' ') from (select to_jsonb(x) - 'export_url' as j from bulk_sync.jobs as x) t"
        ).fetchone()[0]
        assert "Signature=" not in everything and TOKEN not in everything
        assert db.execute("select count(*) from bulk_sync.jobs where export_url like '%Signature=%'").fetchone()[0]
    finally:
        server.stop()


def test_a_wrong_token_fails_that_shops_jobs_with_the_reason(db: psycopg.Connection, dsn: str, shopify) -> None:
    _setup(db)
    env = runner_env(dsn, shopify, SHOP_CHF_TOKEN="shpat_wrong_token")  # noqa: S106 - a fake
    runner = start_runner(env, "--until-idle", "--concurrency", "4")
    assert runner.wait(timeout=300) == 0
    failed = db.execute("select distinct shop, last_error from bulk_sync.jobs where status = 'failed'").fetchall()
    assert failed == [("CHF", "HTTP 401 from Shopify: the access token is invalid or lacks a scope")]
    assert db.execute("select count(*) from bulk_sync.jobs where status = 'failed'").fetchone() == (7 * 3 + 2,)
    assert db.execute(
        "select count(*) from bulk_sync.jobs where shop <> 'CHF' and status <> 'completed'"
    ).fetchone() == (0,)
    assert windows_tile(db) == {
        (s, e): ("2025-09-01", "2025-09-08", 7.0)
        for s in SHOPS
        if s != "CHF"
        for e in ("orders", "refunds", "customers")
    }


def test_sigterm_gives_back_the_work_in_hand(db: psycopg.Connection, dsn: str, shopify, tmp_path) -> None:
    _setup(db)
    env = runner_env(dsn, shopify)
    log = tmp_path / "runner.log"
    runner = start_runner(env, "--concurrency", "4", "--name", "leaving", log=log)
    deadline = time.monotonic() + 30
    while (
        time.monotonic() < deadline
        and not db.execute("select count(*) from bulk_sync.jobs where status = 'completed'").fetchone()[0]
    ):
        time.sleep(0.1)
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=60) == 0
    held = db.execute(
        "select count(*) from bulk_sync.jobs where leased_by like 'leaving%' and lease_expires_at is not null"
    ).fetchone()[0]
    assert held == 0  # nothing left waiting for a lease to expire
    assert "phase=shutdown" in log.read_text()
    assert start_runner(env, "--until-idle", "--concurrency", "4", log=log).wait(timeout=300) == 0
    _assert_equals_truth(db, shopify)


def test_idle_workers_wait_for_work_one_at_a_time_in_the_database(db: psycopg.Connection, dsn: str, tmp_path) -> None:
    # 8 idle workers: one waits in bulk_sync.claim (it polls for work every 100 ms), the others wait in the runner
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOP_", "SHOPIFY_"))} | {"DATABASE_URL": dsn}
    env |= {"SHOP_DE_TOKEN": TOKEN, "SHOP_DE_URL": "http://127.0.0.1:9/de"}  # never called: there is no work
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
    runner = start_runner(env, "--concurrency", "8", "--name", "idle", log=tmp_path / "runner.log")
    claims = """select count(*) filter (where state = 'active' and query like 'select bulk_sync.claim(%%'), count(*)
                from pg_stat_activity where datname = current_database() and application_name = 'bulk-sync run idle'"""
    asked = "select count(*) from bulk_sync.runners where worker like 'idle/%%'"
    try:
        deadline = time.monotonic() + 60
        # each worker asked once (bulk_sync.claim records who asks), and one waits there
        while db.execute(asked).fetchone()[0] < 8 or db.execute(claims).fetchone()[0] != 1:
            assert runner.poll() is None, (tmp_path / "runner.log").read_text()
            assert time.monotonic() < deadline, f"{db.execute(claims).fetchone()[0]} of 8 workers wait in the database"
            time.sleep(0.05)
        samples = []
        for _ in range(40):
            samples.append(db.execute(claims).fetchone())
            time.sleep(0.05)
    finally:
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=60) == 0
    assert max(waiting for waiting, _ in samples) == 1, samples  # one watching (none between two watches), never more
    assert max(connections for _, connections in samples) <= 4, samples  # within the default budget
