"""Shopify access as apps get it today: the client credentials grant (tokens that expire, renewed by the runner),
static tokens beside them, webhooks signed per app, and shops the runner can or cannot serve."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from runner.config import base_url, credentials, servable, webhook_secret
from runner.pool import Budget
from runner.shared import signature
from runner.shopify_client import Fatal, ShopifyClient, Transient
from runner.simulator.auth import App
from runner.simulator.clock import Clock
from runner.simulator.truth import TABLES
from runner.simulator.webhooks import domain
from runner.tokens import ClientCredentials
from runner.webhook import WebhookServer
from tests.jobs import claim, make_due, report, table
from tests.sim import EDGES, POLL, TOKEN, start, truth

APP = App("bulk-sync-app", "shpss_app_secret_0123456789abcdef")
OPERATION = {"id": "gid://shopify/BulkOperation/1"}  # a poll: any call will do, only the token matters
SHOPS = {"DA": "2025-10", "DE": "2026-10", "NL": "2026-10", "INT": "2026-01", "CHF": "2026-10"}


class Ticker:
    """A clock moved by hand, for the runner's side."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _client(server, code: str = "DE", clock=None) -> tuple[ShopifyClient, ClientCredentials]:
    auth = ClientCredentials(code, server.shop_url(code), APP.client_id, APP.client_secret, clock=clock or Ticker())
    return ShopifyClient(server.shop_url(code), auth, "2026-10"), auth


def test_the_grant_answers_as_shopify_does_and_tokens_expire() -> None:
    clock = Clock(frozen=True)
    server = start(("DE", "NL"), clock=clock, apps={"DE": APP}, token_lifetime=60)
    try:
        url = f"{server.shop_url('DE')}/admin/oauth/access_token"
        form = {"grant_type": "client_credentials", "client_id": APP.client_id, "client_secret": APP.client_secret}
        first = httpx.post(url, data=form).json()
        assert set(first) == {"access_token", "scope", "expires_in"} and first["expires_in"] == 60
        second = httpx.post(url, json=form).json()  # Shopify's libraries send JSON
        assert second["access_token"] != first["access_token"]
        wrong = httpx.post(url, data={**form, "client_secret": "shpss_wrong"})
        assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_client")
        graphql = f"{server.shop_url('DE')}/admin/api/2026-10/graphql.json"

        def status(token: str, shop: str = "DE") -> int:
            endpoint = graphql.replace("/de/", f"/{shop.lower()}/")
            return httpx.post(endpoint, json={"query": EDGES}, headers={"X-Shopify-Access-Token": token}).status_code

        # a new grant does not revoke the earlier token; a token is good for its shop only; static tokens still work
        assert status(first["access_token"]) == 200 and status(second["access_token"]) == 200
        assert status(first["access_token"], "NL") == 401 and status(TOKEN, "NL") == 200
        clock.advance(59)
        assert status(first["access_token"]) == 200
        clock.advance(1)
        expired = httpx.post(graphql, json={"query": EDGES}, headers={"X-Shopify-Access-Token": first["access_token"]})
        assert expired.status_code == 401 and "Invalid API key or access token" in expired.json()["errors"]
        stats = httpx.get(f"{server.base_url}/_admin/stats").json()["shops"]["DE"]
        assert (stats["tokens_issued"], stats["tokens_rejected"]) == (2, 1)
    finally:
        server.stop()


def test_a_token_is_granted_once_for_all_workers_renewed_before_expiry_and_after_a_401() -> None:
    sim_clock, ticker = Clock(frozen=True), Ticker()
    server = start(("DE",), clock=sim_clock, apps={"DE": APP}, token_lifetime=100)
    client, auth = _client(server, clock=ticker)
    try:
        threads = [threading.Thread(target=client.call, args=(POLL, OPERATION)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = lambda: httpx.get(f"{server.base_url}/_admin/stats").json()["shops"]["DE"]  # noqa: E731
        assert (stats()["tokens_issued"], stats()["tokens_rejected"], auth.grants) == (1, 0, 1)
        # renewed a tenth of its lifetime before it expires, without a 401
        ticker.now += 89
        sim_clock.advance(89)
        client.call(POLL, OPERATION)
        assert (stats()["tokens_issued"], auth.grants) == (1, 1)
        ticker.now += 1
        sim_clock.advance(1)
        client.call(POLL, OPERATION)
        assert (stats()["tokens_issued"], stats()["tokens_rejected"], auth.grants) == (2, 0, 2)
        # Shopify expired it early (as a revocation would): one 401, a new token, and the call succeeds
        sim_clock.advance(100)
        client.call(POLL, OPERATION)
        assert (stats()["tokens_issued"], stats()["tokens_rejected"], auth.grants) == (3, 1, 3)
    finally:
        client.close()
        auth.close()
        server.stop()


def test_a_refused_grant_is_fatal_with_shopifys_reason_and_no_secret() -> None:
    server = start(("DE",), apps={"DE": APP})
    try:
        wrong = ClientCredentials("DE", server.shop_url("DE"), APP.client_id, "shpss_not_the_secret_42")
        with pytest.raises(Fatal) as refused:
            ShopifyClient(server.shop_url("DE"), wrong, "2026-10").call(POLL, OPERATION)
        text = str(refused.value)
        assert "invalid_client" in text and "SHOP_DE_CLIENT_ID" in text and "installed" in text
        assert "shpss_not_the_secret_42" not in text
        client, auth = _client(server)
        httpx.post(f"{server.base_url}/_admin/faults", json={"DE": {"grant_5xx": 1}}).raise_for_status()
        with pytest.raises(Transient, match="HTTP 503 from Shopify's token endpoint"):
            client.call(POLL, OPERATION)
        client.call(POLL, OPERATION)  # the next grant works
        assert auth.grants == 1
    finally:
        server.stop()


def test_a_401_right_after_a_new_token_is_transient_twice_then_fatal() -> None:
    server = start(("DE",), apps={"DE": APP}, token_lifetime=0)  # every token is dead on arrival
    client, auth = _client(server)
    try:
        for count in (1, 2):
            with pytest.raises(Transient, match=f"HTTP 401 from Shopify with a new token \\({count} of 3\\)"):
                client.call(POLL, OPERATION)
        with pytest.raises(Fatal, match="3 times in a row with a new token: the app has lost access"):
            client.call(POLL, OPERATION)
    finally:
        server.stop()


def test_credentials_come_from_the_environment_the_static_token_winning() -> None:
    env = {
        "SHOP_DE_TOKEN": "shpat_static", "SHOP_DE_CLIENT_ID": "de-app", "SHOP_DE_CLIENT_SECRET": "de-secret",
        "SHOP_NL_CLIENT_ID": "nl-app", "SHOP_NL_CLIENT_SECRET": "nl-secret",
        "SHOPIFY_CLIENT_ID": "app", "SHOPIFY_CLIENT_SECRET": "app-secret", "SHOP_NL_URL": "http://127.0.0.1:1/nl",
    }  # fmt: skip
    assert credentials("DE", env).token == "shpat_static"  # noqa: S105 - a fake
    assert (credentials("NL", env).client_id, credentials("NL", env).client_secret) == ("nl-app", "nl-secret")
    assert credentials("CHF", env).client_id == "app"
    assert credentials("CHF", {}) is None
    assert servable(env) is None and servable({"SHOP_DE_TOKEN": "x", "SHOP_NL_CLIENT_ID": "y"}) == ["DE"]
    assert base_url("NL", "nl.myshopify.com", env) == "http://127.0.0.1:1/nl"
    assert base_url("DE", "de.myshopify.com", env) == "https://de.myshopify.com"
    assert webhook_secret("NL", env) == "nl-secret" and webhook_secret("CHF", env) == "app-secret"
    assert webhook_secret("X", {"SHOPIFY_WEBHOOK_SECRET": "legacy"}) == "legacy"
    assert "secret" not in repr(credentials("NL", env)) and "static" not in repr(credentials("DE", env))


def test_the_claim_hands_a_worker_only_the_shops_it_can_call(db: psycopg.Connection) -> None:
    for code in ("DE", "NL"):
        db.execute("select bulk_sync.add_shop(%s, %s, '2025-10')", (code, f"{code.lower()}.myshopify.com"))
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-01', '{orders}')")
    tasks = claim(db, "de-only", qty=10, shops=["DE"])
    assert [(t["shop"], t["task"]) for t in tasks] == [("DE", "start")]
    # NL's start task stays in the queue, visible, spending nothing; a runner for NL takes it
    (nl,) = db.execute("select id from bulk_sync.jobs where shop = 'NL'").fetchone()
    assert db.execute("select status, attempts from bulk_sync.jobs where id = %s", (nl,)).fetchone() == ("starting", 0)
    assert db.execute("select count(*) from pgmq.q_bulk_sync where vt <= clock_timestamp()").fetchone() == (1,)
    db.execute("update bulk_sync.settings set stuck_after_seconds = 10")
    db.execute("alter table bulk_sync.jobs disable trigger jobs_guard")  # to backdate updated_at
    db.execute("update bulk_sync.jobs set updated_at = now() - interval '1 minute' where id = %s", (nl,))
    db.execute("alter table bulk_sync.jobs enable trigger jobs_guard")
    (reason,) = db.execute("select reason from bulk_sync.stuck where id = %s", (nl,)).fetchone()
    assert reason.startswith("no runner seen in the last 5 minutes has credentials for shop NL")
    assert claim(db, "de-only", qty=10, shops=["DE"]) == []
    (task,) = claim(db, "nl-runner", qty=10, shops=["NL"])
    assert (task["shop"], task["job_id"]) == ("NL", nl)
    runners = db.execute("select worker, shops from bulk_sync.runners order by worker").fetchall()
    assert runners == [("de-only", ["DE"]), ("nl-runner", ["NL"])]


def test_downloads_and_imports_need_no_credentials(db: psycopg.Connection) -> None:
    from tests.jobs import export_job

    downloaded = export_job(db, ['{"id": "gid://shopify/Order/1", "updatedAt": "2025-09-01T00:00:00Z"}'], take=False)
    make_due(db)
    (task,) = claim(db, "nl-only", qty=10, shops=["NL"])  # the job is DE's
    assert (task["task"], task["job_id"], task["shop"]) == ("import", downloaded["job_id"], "DE")


def test_webhooks_are_verified_with_the_secret_of_the_shops_app(db: psycopg.Connection, dsn: str) -> None:
    for code in ("DE", "NL"):
        db.execute("select bulk_sync.add_shop(%s, %s)", (code, domain(code)))
    env = {"SHOP_DE_CLIENT_ID": "de", "SHOP_DE_CLIENT_SECRET": "de-secret", "SHOPIFY_CLIENT_SECRET": "app-secret",
           "SHOP_CHF_CLIENT_ID": "chf", "SHOP_CHF_CLIENT_SECRET": "chf-secret"}  # fmt: skip
    budget = Budget(dsn, 2).open()
    server = WebhookServer(budget, env, 0, "127.0.0.1")
    server.start()
    try:
        body = b'{"admin_graphql_api_id":"gid://shopify/BulkOperation/1","status":"completed"}'

        def deliver(shop: str, secret: bytes, webhook_id: str) -> int:
            headers = {
                "X-Shopify-Topic": "bulk_operations/finish", "X-Shopify-Webhook-Id": webhook_id,
                "X-Shopify-Shop-Domain": domain(shop), "X-Shopify-Hmac-SHA256": signature(secret, body),
            }  # fmt: skip
            return httpx.post(f"http://127.0.0.1:{server.port}/", content=body, headers=headers).status_code

        assert deliver("DE", b"app-secret", "w1") == 401  # DE's app has a secret of its own
        assert deliver("DE", b"de-secret", "w2") == 200
        assert deliver("NL", b"app-secret", "w3") == 200
        assert deliver("NL", b"de-secret", "w4") == 401
        # a shop registered after a delivery from its domain is verified with its own app's secret
        assert deliver("CHF", b"chf-secret", "w5") == 401
        db.execute("select bulk_sync.add_shop('CHF', %s)", (domain("CHF"),))
        assert deliver("CHF", b"chf-secret", "w6") == 200
    finally:
        server.stop()
        budget.close()


# -- the runner, as a process, against the simulator ---------------------------------------------------------------


def _env(dsn: str, server, codes, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOP_", "SHOPIFY_"))}
    env |= {"DATABASE_URL": dsn, "SHOPIFY_CLIENT_ID": APP.client_id, "SHOPIFY_CLIENT_SECRET": APP.client_secret}
    env |= {f"SHOP_{code}_URL": server.shop_url(code) for code in codes}
    return env | extra


def _run(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen:
    out = log.open("a")
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "run", "--concurrency", "4", *args], env=env, stdout=out, stderr=out,
        start_new_session=True,
    )  # fmt: skip


def _setup(db: psycopg.Connection, codes) -> None:
    db.execute("update bulk_sync.settings set poll_interval_seconds = 1, backoff_base_seconds = 1, "
               "backoff_cap_seconds = 4, lease_seconds = 10")  # fmt: skip
    for code in codes:
        db.execute("select bulk_sync.add_shop(%s, %s, %s)", (code, f"{code.lower()}.myshopify.com", SHOPS[code]))
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-05', p_shops => %s)", (codes,))  # every entity


def _assert_equals_truth(db: psycopg.Connection, server, codes) -> None:
    for name in TABLES:
        expected = truth(server, codes, name)
        assert expected and table(db, name) == expected, name


def _secrets_absent(db: psycopg.Connection, server, log: Path) -> None:
    """Neither the client secret nor any token granted is in the log, the audit trail or a job's last error."""
    granted = list(server.shopify.auth._tokens)
    assert granted
    text = log.read_text()
    stored = "\n".join(
        m or ""
        for (m,) in db.execute("select message from bulk_sync.job_runs union all select last_error from bulk_sync.jobs")
    )
    for secret in [APP.client_secret, *granted]:
        assert secret not in text and secret not in stored


def test_a_backfill_of_five_shops_with_tokens_of_one_second(db: psycopg.Connection, dsn: str, tmp_path) -> None:
    codes = list(SHOPS)
    server = start(tuple(codes), days=5, orders_per_day=40, start_latency=0.3, objects_per_second=5_000,
                   apps=dict.fromkeys(codes, APP), token_lifetime=1)  # fmt: skip
    try:
        _setup(db, codes)
        log = tmp_path / "runner.log"
        runner = _run(_env(dsn, server, codes), log, "--until-idle")
        assert runner.wait(timeout=300) == 0, log.read_text()[-3000:]
        statuses = db.execute("select status, count(*), max(attempts) from bulk_sync.jobs group by status").fetchall()
        assert statuses and {s for s, _, _ in statuses} == {"completed"}, statuses
        assert all(attempts == 0 for _, _, attempts in statuses)  # no attempt spent, on a 401 or anything else
        assert db.execute("select count(*) from bulk_sync.job_runs where message like '%%401%%'").fetchone() == (0,)
        _assert_equals_truth(db, server, codes)
        stats = httpx.get(f"{server.base_url}/_admin/stats").json()["shops"]
        issued = {code: stats[code]["tokens_issued"] for code in codes}
        print(f"tokens issued per shop (1 s each): {issued}; refused for expiry: "
              f"{ {code: stats[code]['tokens_rejected'] for code in codes} }")  # fmt: skip
        # every job's first poll comes a second after its start: each shop renewed its token at least once
        assert all(n >= 2 for n in issued.values()), issued
        assert "phase=token outcome=granted" in log.read_text()
        _secrets_absent(db, server, log)
    finally:
        server.stop()


def test_a_refused_grant_fails_that_shops_jobs_only(db: psycopg.Connection, dsn: str, tmp_path) -> None:
    codes = ["DE", "NL"]
    server = start(tuple(codes), days=2, orders_per_day=10, apps=dict.fromkeys(codes, APP))
    try:
        _setup(db, codes)
        env = _env(dsn, server, codes, SHOP_NL_CLIENT_ID=APP.client_id, SHOP_NL_CLIENT_SECRET="shpss_wrong_one_7")  # noqa: S106
        log = tmp_path / "runner.log"
        runner = _run(env, log, "--until-idle")
        assert runner.wait(timeout=300) == 0, log.read_text()[-3000:]
        rows = db.execute("select shop, status, attempts, last_error from bulk_sync.jobs order by shop, id").fetchall()
        assert {(s, st, a) for s, st, a, _ in rows if s == "DE"} == {("DE", "completed", 0)}
        nl = [(st, err) for s, st, _, err in rows if s == "NL"]
        assert nl and all(
            st == "failed" and "refused the client credentials grant: invalid_client" in err for st, err in nl
        )
        assert all("shpss_wrong_one_7" not in err for _, err in nl)
        assert "shpss_wrong_one_7" not in log.read_text()
    finally:
        server.stop()


def test_a_shop_added_while_the_runner_runs_gets_its_backfill(db: psycopg.Connection, dsn: str, tmp_path) -> None:
    server = start(("DE", "NL"), days=2, orders_per_day=10, apps={"DE": APP, "NL": APP})
    runner = None
    try:
        _setup(db, ["DE"])
        log = tmp_path / "runner.log"
        runner = _run(_env(dsn, server, ["DE", "NL"]), log)

        def wait_for(shop: str) -> None:
            deadline = time.monotonic() + 120  # guards a hang only
            while (
                db.execute(
                    "select count(*) filter (where status <> 'completed') from bulk_sync.jobs where shop = %s", (shop,)
                ).fetchone()
                != (0,)
                or not db.execute("select 1 from bulk_sync.jobs where shop = %s", (shop,)).fetchone()
            ):
                assert runner.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.2)

        wait_for("DE")
        _setup(db, ["NL"])  # registered and queued while the runner runs
        wait_for("NL")
        _assert_equals_truth(db, server, ["DE", "NL"])
    finally:
        if runner is not None:
            os.killpg(runner.pid, signal.SIGTERM)
            runner.wait(timeout=60)
        server.stop()


def test_a_deactivated_shop_gets_no_new_work(db: psycopg.Connection) -> None:
    for code in ("DE", "NL"):
        db.execute("select bulk_sync.add_shop(%s, %s, '2025-10')", (code, f"{code.lower()}.myshopify.com"))
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-02', '{orders}')")  # one slot each
    db.execute("update bulk_sync.shops set active = false where code = 'NL'")
    tasks = claim(db, "w", qty=10)  # NL's start, dispatched before the pause, is put back: it does not start
    assert [t["shop"] for t in tasks] == ["DE"]
    report(db, "report_fatal_error", tasks[0]["job_id"], tasks[0]["fence"], "test")  # DE's slot frees up
    db.execute("select bulk_sync.tick()")
    statuses = db.execute("select shop, status, count(*) from bulk_sync.jobs group by 1, 2 order by 1, 2").fetchall()
    assert statuses == [("DE", "failed", 1), ("DE", "starting", 1), ("NL", "queued", 2)]


def test_runners_serving_a_shop_each_share_a_backfill(db: psycopg.Connection, dsn: str, tmp_path) -> None:
    codes = ["DE", "NL"]
    server = start(tuple(codes), days=2, orders_per_day=10)
    try:
        _setup(db, codes)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SHOP_", "SHOPIFY_"))} | {"DATABASE_URL": dsn}
        log = tmp_path / "runner.log"
        runners = [
            _run(base | {f"SHOP_{code}_TOKEN": TOKEN, f"SHOP_{code}_URL": server.shop_url(code)}, log,
                 "--until-idle", "--shops", code, "--name", f"only-{code}")
            for code in codes
        ]  # fmt: skip
        for runner in runners:
            assert runner.wait(timeout=300) == 0, log.read_text()[-3000:]
        _assert_equals_truth(db, server, codes)
        starts = db.execute(
            "select j.shop, r.worker from bulk_sync.job_runs as r join bulk_sync.jobs as j on j.id = r.job_id "
            "where r.phase = 'start' and r.status = 'claimed'"
        ).fetchall()
        assert starts and all(worker.startswith(f"only-{shop}/") for shop, worker in starts)
    finally:
        server.stop()
