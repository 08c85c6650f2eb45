"""Keeping shops current, end to end: incremental runs against a simulator whose data changes while it runs, with
runners killed on the way, and the bulk_operations/finish webhook."""

import random
import signal
import time

import httpx
import psycopg
import pytest

from runner.localpg import free_port
from runner.shared import signature
from runner.simulator.truth import TABLES, key
from runner.simulator.webhooks import domain
from tests.jobs import table
from tests.processes import runner_env, start_runner
from tests.sim import next_second, start

SHOPS = ("DE", "NL")
SECRET = "whsec_test_client_secret"  # noqa: S105 - a fake


def _setup(db: psycopg.Connection) -> None:
    db.execute("""update bulk_sync.settings set poll_interval_seconds = 1, backoff_base_seconds = 1,
                  backoff_cap_seconds = 2, lease_seconds = 5, incremental_min_seconds = 0""")  # fmt: skip
    for code in SHOPS:
        db.execute("select bulk_sync.add_shop(%s, %s)", (code, domain(code)))


def _orders_truth(server) -> dict[str, str]:
    return {o["id"]: o["updated_at"] for code in SHOPS for o in server.shopify.truth(code, "orders")}


def _check_watermarks(db: psycopg.Connection, server) -> int:
    """Every order whose current version changed before its shop's watermark is in the database at that version.
    The watermarks are read first: a SIGKILLed runner's backend may still finish its import, moving a watermark
    after the rows were read."""
    marks = db.execute("select shop, watermark from bulk_sync.watermarks where entity = 'orders'").fetchall()
    stored = {r["id"]: r["updated_at"] for r in table(db, "orders")}
    checked = 0
    for code, mark in marks:
        for order in server.shopify.truth(code, "orders"):
            if order["updated_at"] < mark.strftime("%Y-%m-%dT%H:%M:%SZ"):
                assert stored.get(order["id"]) == order["updated_at"], (code, mark, order["id"])
                checked += 1
    return checked


def _equals_truth(db: psycopg.Connection, server) -> None:
    for name in TABLES:
        truth = {key(name)(row): row for code in SHOPS for row in server.shopify.truth(code, name)}
        stored = {key(name)(row): row for row in table(db, name)}
        assert stored.keys() == truth.keys(), (name, sorted(stored.keys() ^ truth.keys())[:5])
        differ = {
            k: {f: (stored[k][f], truth[k][f]) for f in truth[k] if stored[k][f] != truth[k][f]}
            for k in truth
            if stored[k] != truth[k]
        }
        assert not differ, (name, len(differ), list(differ.items())[:3])


def _change(server, code: str, **counts: int) -> dict:
    response = httpx.post(f"{server.base_url}/_admin/shops/{code.lower()}/changes", json=counts, timeout=30)
    assert response.status_code == 200
    return response.json()


@pytest.fixture
def shopify():
    server = start(SHOPS, days=3, orders_per_day=30, start_latency=0.2, objects_per_second=20_000)
    yield server
    server.stop()


def test_incremental_runs_keep_up_with_changes_and_kills_never_pass_the_watermark(
    db: psycopg.Connection, dsn: str, shopify, tmp_path
) -> None:
    _setup(db)
    env = runner_env(dsn, shopify)
    env = {k: v for k, v in env.items() if not k.startswith(("SHOP_DA", "SHOP_INT", "SHOP_CHF"))}
    log = tmp_path / "runner.log"
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-03')")
    assert start_runner(env, "--until-idle", "--concurrency", "3", log=log).wait(timeout=120) == 0
    _equals_truth(db, shopify)
    rng = random.Random(7)
    kills = checked = 0
    for round_ in range(3):
        changed = {code: _change(shopify, code, new_orders=8, refunds=4, edits=4) for code in SHOPS}
        assert all(len(c["added"]) == 8 and len(c["refunded"]) == 4 for c in changed.values())
        next_second(db, shopify)  # updated_at has whole seconds: the window's end must lie after the changes
        assert db.execute("select bulk_sync.enqueue_incremental()").fetchone()[0] == 2 * len(SHOPS)  # orders, customers
        if round_ > 0:  # the first round ends untouched; later ones lose their runner at random moments
            for _ in range(4):
                runner = start_runner(env, "--concurrency", "3", log=log)
                time.sleep(rng.uniform(0.2, 1.5))
                runner.send_signal(signal.SIGKILL)
                runner.wait()
                kills += 1
                checked += _check_watermarks(db, shopify)
        assert start_runner(env, "--until-idle", "--concurrency", "3", log=log).wait(timeout=120) == 0
        checked += _check_watermarks(db, shopify)
        _equals_truth(db, shopify)  # new orders, later refunds and edits: all there
        marks = dict(db.execute("select shop, watermark from bulk_sync.watermarks").fetchall())
        ends = dict(db.execute("""select shop, max(window_end) from bulk_sync.jobs
                                  where kind = 'incremental' group by shop""").fetchall())  # fmt: skip
        assert marks == ends  # each round's window imported, each watermark at its end
    assert kills == 8 and checked > 0
    print(f"kills {kills}, order versions checked under a watermark {checked}")
    statuses = dict(db.execute("select status, count(*) from bulk_sync.jobs group by status").fetchall())
    assert set(statuses) == {"completed"}, statuses
    # refunds reached existing orders through updated_at: an incremental job imported refunds
    refunded = db.execute("""select count(*) from shopify.refunds r join bulk_sync.jobs j on j.id = r.import_job
                             where j.kind = 'incremental'""").fetchone()[0]  # fmt: skip
    assert refunded >= 3 * 4 * len(SHOPS)


def test_the_finish_webhook_polls_at_once_and_forgeries_are_refused(db: psycopg.Connection, dsn: str, tmp_path) -> None:
    port = free_port()
    server = start(SHOPS, days=1, orders_per_day=10, start_latency=0.2, objects_per_second=20_000,
                   webhook_url=f"http://127.0.0.1:{port}/webhooks", webhook_secret=SECRET)  # fmt: skip
    runner = None
    try:
        _setup(db)
        # Polls an hour apart: only the webhook can make a job finish within the test's deadline.
        db.execute("update bulk_sync.settings set poll_interval_seconds = 3600, poll_interval_max_seconds = 3600")
        env = {**runner_env(dsn, server), "SHOPIFY_WEBHOOK_SECRET": SECRET}
        log = tmp_path / "runner.log"
        runner = start_runner(
            env, "--concurrency", "2", "--webhook-port", str(port), "--webhook-host", "127.0.0.1", log=log
        )
        hook = f"http://127.0.0.1:{port}/webhooks"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.post(hook, content=b"{}", timeout=2)
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        # a forged notification: wrong signature, refused, nothing recorded
        body = b'{"admin_graphql_api_id":"gid://shopify/BulkOperation/1","status":"completed"}'
        headers = {
            "X-Shopify-Topic": "bulk_operations/finish", "X-Shopify-Webhook-Id": "forged-1",
            "X-Shopify-Shop-Domain": domain("DE"), "X-Shopify-Hmac-SHA256": signature(b"not the secret", body),
        }  # fmt: skip
        assert httpx.post(hook, content=body, headers=headers, timeout=5).status_code == 401
        assert db.execute("select count(*) from bulk_sync.webhooks").fetchone()[0] == 0
        started = time.monotonic()
        db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-01', '{orders}')")
        while time.monotonic() - started < 600:  # a deadline far inside the hour to the next poll
            statuses = {s for (s,) in db.execute("select status from bulk_sync.jobs").fetchall()}
            if statuses == {"completed"}:
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        assert statuses == {"completed"}, (statuses, elapsed)
        print(f"backfill of 2 shop-days with polls an hour apart completed in {elapsed:.1f} s")
        hooks = db.execute("select shop, outcome from bulk_sync.webhooks order by shop").fetchall()
        assert hooks == [("DE", "polled"), ("NL", "polled")]
        polled = db.execute("select count(*) from bulk_sync.job_runs where phase = 'webhook'").fetchone()[0]
        assert polled == 2
        # Shopify delivers again: a duplicate, nothing more happens
        (webhook_id,) = db.execute("select webhook_id from bulk_sync.webhooks limit 1").fetchone()
        headers = {
            **headers,
            "X-Shopify-Webhook-Id": webhook_id,
            "X-Shopify-Hmac-SHA256": signature(SECRET.encode(), body),
        }
        again = httpx.post(hook, content=body, headers=headers, timeout=5)
        assert (again.status_code, again.text) == (200, "duplicate")
        assert "whsec_" not in log.read_text()
    finally:
        if runner is not None:
            runner.send_signal(signal.SIGTERM)
            runner.wait(timeout=30)
        server.stop()


def test_the_signature_is_shopifys_base64_hmac_sha256_of_the_raw_body() -> None:
    # The receiver and the simulator share runner.webhook.signature: pin it to a value computed with
    # `openssl dgst -sha256 -hmac hush -binary | base64`, so neither can drift with the other.
    body = b'{"admin_graphql_api_id":"gid://shopify/BulkOperation/720918","status":"completed"}'
    assert signature(b"hush", body) == "g9/vCeQ1/NkJlXrUfLNEaJkyq9sRnN/8EOKhTTgt8s0="
