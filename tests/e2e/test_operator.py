"""What an operator sees: the demo's live view in a real pseudo-terminal, `status` and `jobs` against a database in
the middle of a backfill."""

import os
import pty
import re
import select
import shlex
import subprocess
import sys
import time

import psycopg
import pytest

from runner.localpg import LocalCluster
from runner.simulator.truth import TABLES
from tests.jobs import claim, report, run_to_completion
from tests.processes import cli


@pytest.fixture
def kept(tmp_path):
    """The demo's folder; whatever database a --keep demo left there is stopped at the end, whatever happened."""
    yield tmp_path / "demo"
    LocalCluster(tmp_path / "demo" / "postgres").stop()


def test_demo_live_view_in_a_terminal(tmp_path, kept) -> None:
    primary, secondary = pty.openpty()
    demo = subprocess.Popen(
        [sys.executable, "-m", "runner", "demo", "--orders-per-day", "8", "--dir", str(kept), "--keep"],
        stdin=secondary, stdout=secondary, stderr=secondary, close_fds=True,
    )  # fmt: skip
    os.close(secondary)
    screen = b""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the demo exited and closed the terminal
                break
            if not chunk:
                break
            screen += chunk
        elif demo.poll() is not None:
            break
    assert demo.wait(timeout=30) == 0, screen.decode(errors="replace")[-2000:]
    os.close(primary)
    text = screen.decode(errors="replace")
    frames = text.split("\x1b[H\x1b[J")[1:]
    assert len(frames) >= 3, text[-2000:]
    # a bar per shop and entity, redrawn in place, advancing
    done = []
    for frame in frames:
        match = re.search(r"DE\s+orders\s+\[([#.]{30})\]\s+(\d+)%\s+(\d+)/(\d+)", frame)
        assert match, frame
        done.append(int(match.group(2)))
    assert done == sorted(done) and done[0] < done[-1] == 100
    assert match.group(1) == "#" * 30 and match.group(3) == match.group(4)  # every job of the last frame completed
    assert all(re.search(rf"{shop}\s+skus\s+\[", frames[-1]) for shop in ("DA", "DE", "NL", "INT", "CHF"))
    assert "jobs by state:" in frames[0]
    assert re.search(r"jobs by state: completed \d+\r?\n", frames[-1]), frames[-1]  # nothing queued, failed or live
    summary = frames[-1].split("backfill finished")[-1]
    # the backfill's summary, then data changes, one incremental round, freshness and the summary again; then
    # deletions, marked by webhook or reconciliation, and the summary once more
    backfill, current = summary.split("select bulk_sync.enqueue_incremental();")
    current, deletions = current.split("deleted on the shops:")
    # each table's count, then the sales report per shop and day, equal to the simulator's to the cent
    sales = re.compile(r"shopify\.daily_sales: [\d,]+ shop-days, each equal to the sales report")
    assert backfill.count(" equal\r\n") == len(TABLES) and "DIFFERENT" not in summary and " NOT " not in summary
    assert sales.search(backfill)
    assert "-> 10 jobs created" in current and current.count("orders synced through") == 5
    assert current.count("customers synced through") == 5
    assert current.count(" equal\r\n") == len(TABLES) and sales.search(current)
    assert re.match(r" 15 orders, 50 variants, 10 customers; marked by webhook within", deletions), deletions
    assert deletions.count(" equal\r\n") == len(TABLES) and sales.search(deletions)
    # the backfill drawn, and the runners' metrics as they ended it
    picture, metrics = tmp_path / "demo" / "timeline.svg", tmp_path / "demo" / "metrics.txt"
    drawn = re.search(r"its timeline \((\d+) jobs, (\d+) Shopify operations\): (\S+)", text)
    assert drawn and drawn.group(3) == str(picture), text[-3000:]
    assert picture.read_text().count('class="export"') == int(drawn.group(2)) > 0
    operations_started = sum(
        float(line.split()[-1])
        for line in metrics.read_text().splitlines()
        if line.startswith("bulk_sync_tasks_total{") and 'phase="start"' in line and 'outcome="ok"' in line
    )
    assert operations_started == int(drawn.group(2))
    # --keep: the database answers after the demo exited, until the printed stop command stops it
    dsn = re.search(r"  psql '([^']+)'\r?\n", text)
    stop = re.search(r"and stop it:\r?\n  (.+?)\r?\n", text)
    assert dsn and stop, text[-1000:]
    with psycopg.connect(dsn.group(1)) as kept:
        assert kept.execute("select count(*) from shopify.live_orders").fetchone()[0] > 0
    stopped = subprocess.run(shlex.split(stop.group(1)), capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0 and "stopped the demo database" in stopped.stdout, stopped
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn.group(1), connect_timeout=5)


def test_status_columns_fit_a_long_entity_name_and_say_their_units() -> None:
    from runner.status import Snapshot, render

    progress = [
        ("DE", "orders", 41, 20, 0, 16, 5, 48.0, 120_000, 3, 305.0, 146.0, 150_000, 2_000),
        ("INTERNATIONAL", "inventory_levels_by_location", 1, 0, 0, 0, 1, 0.0, 0, 0, 0.0, 0.0, 900, 0),
    ]  # fmt: skip
    before = Snapshot(0.0, [(*p[:8], 0, 0, *p[10:12], 0, 0) for p in progress], {"queued": 16, "exporting": 6})
    text = render(Snapshot(2.0, progress, {"queued": 16, "exporting": 6}), before)
    head, _, header, *lines = text.splitlines()
    assert "days 146/305 done" in head and "jobs 20/42 completed" in head
    assert (
        "exported 150,900 objects (75,450/s), imported 120,000 lines (60,000/s), fetched 2,000 rows (1,000/s)" in head
    )
    table = [header, *lines[:2]]
    assert len({len(row) for row in table}) == 1  # every column ends where its header does
    assert table[2].split()[:2] == ["INTERNATIONAL", "inventory_levels_by_location"]
    for name in ("days", "jobs", "lines", "quarantined"):
        end = header.index(name) + len(name)
        assert all(row[end : end + 1] in ("", " ") and row[end - 1] != " " for row in table[1:]), (name, table)
    assert table[1].split()[4:6] == ["146/305", "20/41"] and table[2].split()[4] == "snapshot"


def test_status_and_jobs_in_the_middle_of_a_backfill(db: psycopg.Connection, dsn: str) -> None:
    for code in ("DE", "NL"):
        db.execute("select bulk_sync.add_shop(%s, %s)", (code, f"{code.lower()}.myshopify.com"))
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-07', '{orders,skus}')")
    tasks = claim(db, qty=100)
    for task in tasks[:3]:
        run_to_completion(db, task, lines=4)
    report(db, "report_fatal_error", tasks[3]["job_id"], tasks[3]["fence"], "HTTP 403: the token lacks read_orders")
    out = cli("status", dsn=dsn)
    assert out.returncode == 0, out.stderr
    rows = {}
    for line in out.stdout.splitlines():
        pattern = (r"^(DE|NL)\s+(orders|skus)\s+\[[#.]+\]\s+(\d+)%\s+(\S+)\s+(\d+)/(\d+)\s+(\d+)\s+(\d+)"
                   r"\s+([\d,]+)")  # fmt: skip
        if m := re.match(pattern, line):
            rows[(m[1], m[2])] = (int(m[3]), m[4], *(int(m[i]) for i in range(5, 9)), int(m[9].replace(",", "")))
    expected = {
        (shop, entity): (percent, days, done, total, failed, active, lines)
        for shop, entity, percent, days, done, total, failed, active, lines in db.execute(
            """select shop, entity,
                      coalesce(round(100 * extract(epoch from sum(coalesce(window_end - window_start, '1 day'))
                                                     filter (where status = 'completed'))
                            / extract(epoch from sum(coalesce(window_end - window_start, '1 day')))), 0),
                      case when bool_and(window_start is null) then 'snapshot'
                           else coalesce(round(extract(epoch from sum(window_end - window_start)
                                                           filter (where status = 'completed')) / 86400), 0)
                                || '/' || round(extract(epoch from sum(window_end - window_start)) / 86400) end,
                      count(*) filter (where status = 'completed'), count(*),
                      count(*) filter (where status = 'failed'),
                      count(*) filter (where status not in ('queued', 'completed', 'failed')),
                      sum(lines_processed - lines_rejected)
               from bulk_sync.jobs group by shop, entity"""
        ).fetchall()
    }
    assert rows == expected
    assert sum(v[2] for v in rows.values()) == 3 and sum(v[4] for v in rows.values()) == 1
    assert rows[("DE", "orders")][1].endswith("/7")  # days, whatever the jobs they were merged into
    states = dict(db.execute("select status, count(*) from bulk_sync.jobs group by status").fetchall())
    line = next(x for x in out.stdout.splitlines() if x.startswith("jobs by state:"))
    for status, count in states.items():
        assert f"{status} {count}" in line
    assert "HTTP 403: the token lacks read_orders" in out.stdout  # latest problems
    jobs = cli("jobs", "--failed", dsn=dsn)
    assert jobs.returncode == 0
    listed = jobs.stdout.splitlines()
    assert len(listed) == 2 and str(tasks[3]["job_id"]) in listed[1] and "lacks read_orders" in listed[1]
    unknown = cli("jobs", "--failed", "--shop", "XX", dsn=dsn)
    assert unknown.returncode == 2 and unknown.stderr.startswith("bulk-sync: unknown shop 'XX': registered are ")
