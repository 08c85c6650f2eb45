"""The timeline explains itself: each job labelled with its entity and days, the wait for an import slot drawn, a
step whose runner was SIGKILLed ending where the runner was last heard of with a "lease expired" mark where its lease
ran out, canceled jobs marked, and one duration, the one the demo prints."""

import os
import re
import signal

import psycopg

from runner import timeline
from tests.processes import cli, runner_env, start_runner, wait_for
from tests.sim import start


def test_labels_import_waits_an_expired_lease_and_a_cancel_are_drawn(
    db: psycopg.Connection, dsn: str, tmp_path
) -> None:  # fmt: skip
    server = start(("DE",), days=4, orders_per_day=60, start_latency=0.2, objects_per_second=20_000,
                   download_rate=30_000)  # fmt: skip
    runners = []
    try:
        db.execute("""update bulk_sync.settings set poll_interval_seconds = 1, backoff_base_seconds = 1,
                      backoff_cap_seconds = 2, lease_seconds = 5, window_sizing = false""")  # fmt: skip
        db.execute("update bulk_sync.import_limits set max_concurrent_imports = 1")  # downloads wait for a slot
        db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
        db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-04', '{orders,refunds}')")
        assert db.execute("select bulk_sync.cancel_jobs('2025-09-03', '2025-09-04', '{refunds}')").fetchone()[0] == 2
        env, log = runner_env(dsn, server), tmp_path / "runner.log"
        doomed = start_runner(env, "--concurrency", "3", "--name", "doomed", log=log)
        runners.append(doomed)
        downloading = "select id from bulk_sync.jobs where status = 'exporting' and leased_by like 'doomed/%%' limit 1"
        wait_for(lambda: db.execute(downloading).fetchone(), "a download under way")
        (killed,) = db.execute(downloading).fetchone()
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=30)
        runners.append(start_runner(env, "--concurrency", "3", "--name", "rescuer", log=log))
        settled = "select bool_and(status in ('completed', 'canceled')) from bulk_sync.jobs"
        wait_for(lambda: db.execute(settled).fetchone()[0], "every job completed or canceled", seconds=240)
        heard, expired = db.execute(
            "select heard_at, lease_expired_at from bulk_sync.job_runs where job_id = %s and heard_at is not null",
            (killed,),
        ).fetchone()
        assert heard < expired

        drawn = {job.id: job for job in timeline.jobs(db)}
        download = [b for b in drawn[killed].bars if b.kind == "download"]
        assert download[0].end == heard and not download[0].ok  # ended where the runner was last heard of
        assert ("expired", expired) in [(kind, at) for kind, at, _ in drawn[killed].marks]

        picture = tmp_path / "timeline.svg"
        out = cli("timeline", "--out", str(picture), dsn=dsn)
        assert out.returncode == 0, out.stderr
        svg = picture.read_text()
        labels = re.findall(r'<text class="label"[^>]*>[^<]*<title>job (\d+): ([^<]+)</title>', svg)
        jobs = dict(db.execute("select id, entity from bulk_sync.jobs").fetchall())
        assert sorted(int(i) for i, _ in labels) == sorted(jobs)  # every job labelled once
        assert all(label.split()[0] == jobs[int(i)] for i, label in labels)
        assert ("orders 09-01" in {label for _, label in labels}) and svg.count('class="wait"') >= 1
        expiries = db.execute("select count(*) from bulk_sync.job_runs where lease_expired_at is not null").fetchone()
        assert svg.count('class="mark-expired"') == expiries[0] >= 1  # each lease the doomed runner held
        assert svg.count('class="mark-canceled"') == 2
        span = timeline.duration(list(drawn.values()))
        assert f"({span:.0f} s)" in svg  # the header's duration: the one the demo prints
    finally:
        for runner in runners:
            if runner.poll() is None:
                os.killpg(runner.pid, signal.SIGTERM)
                runner.wait(timeout=60)
        server.stop()
