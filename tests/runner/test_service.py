"""The runner as a service: /metrics against the simulator's own counts, /readyz following the database, /healthz,
JSON step lines, and the timeline of the same backfill."""

import decimal
import json
import signal
import time
from pathlib import Path

import httpx
import psycopg
import yaml
from prometheus_client.parser import text_string_to_metric_families

from runner.localpg import LocalCluster, free_port
from tests.jobs import login
from tests.processes import cli, runner_env, start_runner, wait_for
from tests.sim import TOKEN, start

SHOPS = ("DE", "NL")


def _get(port: int, path: str) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
    except httpx.TransportError:
        return None  # not listening yet


def _samples(port: int) -> list[tuple[str, dict[str, str], float]]:
    text = _get(port, "/metrics").text
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def _total(samples, name: str, **labels: str) -> float:
    return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == w for k, w in labels.items()))


def _stop(runner) -> None:
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=60) == 0


def test_metrics_agree_with_the_simulator_and_the_timeline_draws_every_operation(
    db: psycopg.Connection, dsn: str, tmp_path: Path
) -> None:
    server = start(SHOPS, days=4, orders_per_day=30, start_latency=0.3, objects_per_second=20_000,
                   faults={"DE": {"graphql_throttled": 2, "op_failed_timeout": 1}})  # fmt: skip
    log, port = tmp_path / "runner.log", free_port()
    try:
        db.execute("update bulk_sync.settings set poll_interval_seconds = 1, backoff_base_seconds = 1, "
                   "backoff_cap_seconds = 2, min_split_seconds = 3600")  # fmt: skip
        for code in SHOPS:
            db.execute("select bulk_sync.add_shop(%s, %s)", (code, f"{code.lower()}.myshopify.com"))
        db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-04')")
        runner = start_runner(
            runner_env(dsn, server), "--concurrency", "3", "--metrics-port", str(port), "--metrics-host",
            "127.0.0.1", "--log-format", "json", log=log,
        )  # fmt: skip
        try:
            wait_for(lambda: db.execute("select bulk_sync.idle()").fetchone()[0], "the backfill")
            # the last report commits before its task is counted: wait for the runner to put it down
            wait_for(lambda: _total(_samples(port), "bulk_sync_tasks_in_flight") == 0, "the last task's count")
            samples = _samples(port)
        finally:
            _stop(runner)
        stats = httpx.get(f"{server.base_url}/_admin/stats").json()["shops"]
    finally:
        server.stop()
    for code in SHOPS:
        assert _total(samples, "bulk_sync_shopify_requests_total", shop=code) == stats[code]["requests"]
        assert (
            _total(samples, "bulk_sync_shopify_requests_total", shop=code, status_class="2xx")
            == stats[code]["requests"]
        )  # throttles here come as GraphQL errors in a 200
        assert (
            _total(samples, "bulk_sync_throttle_waits_total", shop=code, kind="throttled") == stats[code]["throttled"]
        )
        assert (
            _total(samples, "bulk_sync_tasks_total", shop=code, phase="start", outcome="ok")
            == stats[code]["operations_started"]
        )
        assert _total(samples, "bulk_sync_shopify_request_seconds_count", shop=code) == stats[code]["requests"]
    assert stats["DE"]["throttled"] == 2
    # downloads, staged lines and imports against what the jobs record
    for code, entity, imports, lines, size in db.execute(
        """select shop, entity, count(*), sum(lines_total), sum(bytes_copied) from bulk_sync.jobs
           where status = 'completed' and lines_total > 0 group by 1, 2"""
    ).fetchall():
        ended = [_total(samples, "bulk_sync_imports_total", shop=code, entity=entity, outcome=state)
                 for state in ("completed", "fetching")]  # fmt: skip  # fetching: the refunds' lines came after
        assert sum(ended) == imports
        assert _total(samples, "bulk_sync_import_lines_total", shop=code, entity=entity) == lines
        assert size > 0
    staged = dict(db.execute("select shop, sum(lines_total) from bulk_sync.jobs group by 1").fetchall())
    copied = dict(db.execute("select shop, sum(bytes_copied) from bulk_sync.jobs group by 1").fetchall())
    for code in SHOPS:
        assert _total(samples, "bulk_sync_lines_staged_total", shop=code) == staged[code]
        assert _total(samples, "bulk_sync_download_bytes_total", shop=code) == copied[code]
    assert _total(samples, "bulk_sync_last_claim_timestamp_seconds") > time.time() - 600
    labels = {v for _, ls, _ in samples for v in ls.values()}
    assert not any("://" in v or "gid" in v or TOKEN in v for v in labels)
    # one JSON object per step, without secrets
    steps = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(s.get("phase") == "download" and s.get("outcome") == "ok" for s in steps)
    assert isinstance(next(s for s in steps if "duration_ms" in s)["duration_ms"], int)
    assert TOKEN not in log.read_text() and "Signature=" not in log.read_text()
    # the timeline: one export bar per operation Shopify started, a mark per split job
    picture = tmp_path / "timeline.svg"
    drawn = cli("timeline", "--out", str(picture), dsn=dsn)
    assert drawn.returncode == 0, drawn.stderr
    svg = picture.read_text()
    operations = sum(stats[code]["operations_started"] for code in SHOPS)
    assert svg.count('class="export"') == operations
    assert f"{operations} Shopify operations" in drawn.stdout
    # the timed-out operation: its job split in halves, or (a SKU snapshot has no window) exported again
    splits, retries = db.execute(
        """select (select count(*) from bulk_sync.jobs where status = 'split'),
                  (select count(*) from bulk_sync.job_runs where status = 'retry')"""
    ).fetchone()
    assert splits + retries >= 1
    assert (svg.count('class="mark-split"'), svg.count('class="mark-retry"')) == (splits, retries)
    assert (
        svg.count('class="import"')
        == db.execute("select count(*) from bulk_sync.jobs where status = 'completed' and lines_total > 0").fetchone()[
            0
        ]
    )
    only_nl = tmp_path / "nl.svg"
    assert cli("timeline", "--shop", "NL", "--out", str(only_nl), dsn=dsn).returncode == 0
    assert only_nl.read_text().count('class="export"') == stats["NL"]["operations_started"]


def test_readyz_follows_the_database_and_healthz_the_loops(tmp_path: Path) -> None:
    server = start(("DE",), days=1, orders_per_day=5)
    port = free_port()
    try:
        with LocalCluster(tmp_path / "pg") as cluster:
            dsn = cluster.create_database("ready")
            with psycopg.connect(dsn, autocommit=True) as db:
                db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
            runner = start_runner(runner_env(dsn, server), "--metrics-port", str(port), log=tmp_path / "runner.log")
            try:
                wait_for(lambda: (r := _get(port, "/readyz")) is not None and r.status_code == 200, "ready")
                assert _get(port, "/readyz").text == "ok\n"
                assert _get(port, "/healthz").status_code == 200
                assert _get(port, "/nothing").status_code == 404
                cluster.stop()
                wait_for(lambda: _get(port, "/readyz").status_code == 503, "not ready")
                reason = _get(port, "/readyz").text
                assert reason.startswith("database unreachable: ") and reason.count("\n") == 1
                assert _get(port, "/healthz").status_code == 200  # the loops live on, retrying
                cluster.start()
                wait_for(lambda: _get(port, "/readyz").status_code == 200, "ready again")
            finally:
                _stop(runner)
    finally:
        server.stop()


def test_the_postgres_exporter_queries_run_as_the_operator(db: psycopg.Connection, dsn: str) -> None:
    queries = yaml.safe_load((Path(__file__).parents[2] / "docs" / "postgres_exporter.yml").read_text())
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
    db.execute("select bulk_sync.add_shop('NL', 'nl.myshopify.com')")
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-03', '{orders,refunds,skus}', '{DE}')")
    queued = db.execute("select count(*) from bulk_sync.jobs where status = 'queued'").fetchone()[0]
    with login(db, dsn, "bulk_sync_operator") as operator:
        for name, spec in queries.items():
            cursor = operator.execute(spec["query"])
            columns = [c.name for c in cursor.description]
            assert columns == [next(iter(m)) for m in spec["metrics"]], name
            rows = cursor.fetchall()
            gauges = [i for i, m in enumerate(spec["metrics"]) if next(iter(m.values()))["usage"] == "GAUGE"]
            assert all(isinstance(row[i], int | float | decimal.Decimal) for row in rows for i in gauges), name
            if name == "bulk_sync_queue":  # jobs beyond the shop's free slots wait
                assert {row[0]: row[1] for row in rows} == {"DE": queued, "NL": 0} and queued > 0
