"""No worker is lost silently: an unexpected database error in a report or in the claim is logged with its job and
phase (its traceback once), the task in hand is reported as a transient error, and the loop goes on; a loop that
cannot go on ends the runner with a non-zero exit, and /healthz says which loop and why."""

import io
import json
import threading
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from runner import log
from runner.health import alive
from runner.localpg import free_port
from runner.simulator.truth import TABLES
from runner.worker import Runner
from tests.jobs import table
from tests.processes import runner_env, start_runner, wait_for
from tests.sim import start, truth

SHOPS = ("DE", "NL")

# Each wraps a bulk-sync function under its own name: the n-th call (a sequence counts them, outside any
# transaction) raises an error no runner expects; every other call goes through to the real one.
FAULTS = """
create schema faults;
create sequence faults.claim_calls;
create sequence faults.poll_reports;
alter function bulk_sync.claim(text, integer, double precision, text[]) rename to claim_unfaulted;
create function bulk_sync.claim(
    p_worker text, p_qty integer default 1, p_wait_seconds double precision default 0, p_shops text[] default null
) returns setof jsonb language plpgsql as $$
begin
    if nextval('faults.claim_calls') = any({claims}::bigint[]) then
        raise exception 'injected fault in claim' using errcode = 'XX000';
    end if;
    return query select * from bulk_sync.claim_unfaulted(p_worker, p_qty, p_wait_seconds, p_shops);
end;
$$;
alter function bulk_sync.report_poll_result(bigint, bigint, text, text, bigint, bigint, text)
    rename to report_poll_result_unfaulted;
create function bulk_sync.report_poll_result(
    p_job_id bigint, p_fence bigint, p_status text, p_error_code text, p_object_count bigint, p_file_size bigint,
    p_url text
) returns boolean language plpgsql as $$
begin
    if nextval('faults.poll_reports') = any({polls}::bigint[]) then
        raise exception 'injected fault in a report' using errcode = 'XX000';
    end if;
    return bulk_sync.report_poll_result_unfaulted(p_job_id, p_fence, p_status, p_error_code, p_object_count,
                                                  p_file_size, p_url);
end;
$$;
"""


def _setup(db: psycopg.Connection, claims: list[int], polls: list[int]) -> None:
    db.execute(
        "update bulk_sync.settings set poll_interval_seconds = 1, backoff_base_seconds = 1, backoff_cap_seconds = 2"
    )
    for code in SHOPS:
        db.execute("select bulk_sync.add_shop(%s, %s)", (code, f"{code.lower()}.myshopify.com"))
    db.execute(sql.SQL(FAULTS).format(claims=sql.Literal(claims), polls=sql.Literal(polls)))
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-02')")


def test_an_unexpected_error_in_a_report_and_in_the_claim_is_logged_reported_and_survived(
    db: psycopg.Connection, dsn: str, tmp_path: Path
) -> None:
    server = start(SHOPS, days=2, orders_per_day=20, start_latency=0.5, objects_per_second=20_000)
    log, port = tmp_path / "runner.log", free_port()
    try:
        _setup(db, claims=[3], polls=[1])
        runner = start_runner(
            runner_env(dsn, server), "--concurrency", "4", "--metrics-port", str(port), "--metrics-host",
            "127.0.0.1", "--log-format", "json", log=log,
        )  # fmt: skip
        try:
            wait_for(lambda: db.execute("select bulk_sync.idle()").fetchone()[0], "the backfill")
            health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        finally:
            runner.terminate()
            assert runner.wait(timeout=60) == 0
        statuses = dict(db.execute("select status, count(*) from bulk_sync.jobs group by status").fetchall())
        assert statuses.keys() == {"completed"}, statuses
        for name in TABLES:
            assert table(db, name) == truth(server, SHOPS, name), name
    finally:
        server.stop()
    assert (health.status_code, health.text) == (200, "ok\n")  # every loop alive after both
    steps = [json.loads(line) for line in log.read_text().splitlines()]
    errors = [s for s in steps if s.get("outcome") == "error"]
    assert [s["phase"] for s in errors] == ["claim", "poll"] or [s["phase"] for s in errors] == ["poll", "claim"]
    for step in errors:  # one line each, what failed and where, the traceback with it (the first of its kind)
        assert "injected fault" in step["detail"] and "Traceback (most recent call last)" in step["traceback"]
    (poll,) = [s for s in errors if s["phase"] == "poll"]
    assert poll["job"] and poll["shop"] in SHOPS
    # the task in hand was reported, and retried: its job says so
    retried = db.execute(
        "select count(*) from bulk_sync.job_runs where job_id = %s and status = 'retry' and message like %s",
        (poll["job"], "%runner error: InternalError_%"),
    ).fetchone()[0]
    assert retried == 1


def test_a_loop_that_cannot_go_on_ends_the_runner_and_healthz_names_it(db: psycopg.Connection, dsn: str) -> None:
    _setup(db, claims=list(range(1, 1000)), polls=[])  # every claim fails
    runner = Runner(dsn, {"SHOP_DE_TOKEN": "x", "SHOP_NL_TOKEN": "x"}, concurrency=3, name="doomed",
                    give_up_after=3, backoff_cap=0.2)  # fmt: skip
    result: list[int] = []
    steps = io.StringIO()
    log.send_to(steps)
    try:
        worker = threading.Thread(target=lambda: result.append(runner.run()))
        worker.start()
        worker.join(120)
    finally:
        log.send_to(None)
    assert not worker.is_alive() and result == [1]  # the process exits with 1: its supervisor restarts it
    why = alive(runner)
    assert why is not None and why.startswith("worker loop doomed/") and "injected fault in claim" in why, why
    assert "3 failures in a row" in why
    lines = steps.getvalue().splitlines()
    failed = [line for line in lines if "phase=claim" in line and "outcome=error" in line]
    assert len(failed) >= 3 and sum("traceback=" in line for line in failed) == 1  # the traceback once
    assert any("phase=worker" in line and "outcome=ended" in line for line in lines)
