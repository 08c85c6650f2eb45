"""The job states are data (bulk_sync.job_states): the predicates that must still name states agree with it, and no
function body, view or runner module lists states of its own."""

import re
from pathlib import Path

import psycopg
import pytest

from tests.jobs import claim, job, report

ROOT = Path(__file__).resolve().parents[2]


def _states(db: psycopg.Connection, where: str = "true") -> set[str]:
    # `where` is one of the fixed property expressions below, never input
    return {r[0] for r in db.execute("select state from bulk_sync.job_states where " + where).fetchall()}


def _named(text: str, every: set[str]) -> set[str]:
    return set(re.findall(r"'([a-z_]+)'", text)) & every


def test_the_predicates_that_name_states_agree_with_the_states_table(db: psycopg.Connection) -> None:
    every = _states(db)
    assert len(every) == 12
    indexes = dict(db.execute(
        "select indexname, indexdef from pg_indexes where schemaname = 'bulk_sync' and tablename = 'jobs'"
    ).fetchall())  # fmt: skip
    assert _named(indexes["jobs_shop_slot"].split(" WHERE ")[1], every) == _states(db, "holds_shop_slot")
    assert _named(indexes["jobs_import_slot"].split(" WHERE ")[1], every) == _states(db, "holds_import_slot")
    assert _named(indexes["jobs_snapshot"].split(" WHERE ")[1], every) == _states(db, "terminal")
    constraints = dict(db.execute(
        "select conname, pg_get_constraintdef(oid) from pg_constraint where conrelid = 'bulk_sync.jobs'::regclass"
    ).fetchall())  # fmt: skip
    slot = [d for d in constraints.values() if d.startswith("CHECK (((slot IS NOT NULL)")]
    import_slot = [d for d in constraints.values() if d.startswith("CHECK (((import_slot IS NOT NULL)")]
    assert len(slot) == len(import_slot) == 1
    assert _named(slot[0], every) == _states(db, "holds_shop_slot")
    assert _named(import_slot[0], every) == _states(db, "holds_import_slot")
    assert _named(constraints["jobs_no_overlap"], every) == _states(db, "terminal")
    assert "FOREIGN KEY (status) REFERENCES bulk_sync.job_states(state)" in constraints["jobs_status_fkey"]
    assert "status_check" not in " ".join(constraints)


def test_the_state_lists_read_the_table(db: psycopg.Connection) -> None:
    for prop, value, where in (
        ("terminal", True, "terminal"), ("final", True, "final"), ("covers_window", False, "not covers_window"),
        ("leased", True, "leased"), ("holds_shop_slot", True, "holds_shop_slot"),
        ("holds_import_slot", True, "holds_import_slot"),
    ):  # fmt: skip
        (found,) = db.execute("select bulk_sync.states(%s, %s)", (prop, value)).fetchone()
        assert set(found) == _states(db, where), prop
    with pytest.raises(psycopg.errors.UndefinedColumn):
        db.execute("select bulk_sync.states('no_such_property')")


def _lists_states(text: str, every: set[str]) -> list[str]:
    """Lists of two or more states: SQL `in (...)`, array literals and constructors, Python tuples/lists/sets."""
    found = []
    for pattern in (
        r"\bin\s*\(([^()]*)\)",
        r"'\{([^}]*)\}'",
        r"array\[([^\]]*)\]",
        r"[(\[{]((?:\s*\"[a-z_]+\",?)+)\s*[)\]}]",
    ):
        for match in re.finditer(pattern, text, re.IGNORECASE):
            names = set(re.findall(r"[a-z_]+", match.group(1))) & every
            if len(names) >= 2:
                found.append(match.group(0))
    return found


def test_no_function_view_or_module_lists_states(db: psycopg.Connection) -> None:
    every = _states(db)
    assert _lists_states("where status in ('starting', 'waiting')", every)  # the check itself can fail
    assert _lists_states('LIVE = ("starting", "waiting")', every)
    offenders = {}
    sources = [*sorted((ROOT / "sql").glob("[0-9]*.sql")), ROOT / "pg_cron.sql",
               *sorted((ROOT / "runner").rglob("*.py")), *sorted((ROOT / "bench").glob("*.py"))]  # fmt: skip
    for path in sources:
        text = "\n".join(re.split(r"--|#", line)[0] for line in path.read_text().splitlines())
        if lists := _lists_states(text, every):
            offenders[str(path.relative_to(ROOT))] = lists
    assert offenders == {}


# Moves that are not a runner's report: what the API, the claim, the import and lease recovery do.
API_MOVES = {
    ("queued", "starting"): "dispatch", ("copied", "ready_to_import"): "dispatch",
    ("ready_to_import", "importing"): "claim", ("starting", "queued"): "claim of a paused shop's start",
    ("importing", "completed"): "import", ("importing", "fetching"): "import that queued rows to fetch",
    ("importing", "exporting"): "import whose staging was lost",
    ("importing", "failed"): "import of an export with too many rejected lines",
    ("importing", "copied"): "lease recovery and release", ("failed", "queued"): "retry_failed",
    # legal since the baseline, made by no function today (an operator's repair by hand)
    ("queued", "failed"): "none", ("copied", "failed"): "none", ("ready_to_import", "failed"): "none",
}  # fmt: skip


def test_each_outcome_is_a_legal_move_and_each_legal_move_has_a_cause(db: psycopg.Connection) -> None:
    legal = set(db.execute("select from_status, to_status from bulk_sync.transitions").fetchall())
    outcomes = db.execute("select state, outcome, next_state, spends_attempt from bulk_sync.outcomes").fetchall()
    for state, outcome, to, spends in outcomes:
        assert to == state or (state, to) in legal, (state, outcome, to)
        if spends:  # the last attempt fails the job instead
            assert (state, "failed") in legal, (state, outcome)
    by_outcome = {(s, t) for s, _, t, _ in outcomes} | {(s, "failed") for s, _, _, spends in outcomes if spends}
    cancels = {(s, "canceled") for (s,) in db.execute(
        "select state from bulk_sync.job_states where not terminal").fetchall()}  # fmt: skip
    assert legal - by_outcome - cancels - set(API_MOVES) == set()


def _functions(path: Path) -> dict[str, str]:
    text = path.read_text()
    return {f.split("(", 1)[0]: f for f in re.split(r"^create or replace function ", text, flags=re.MULTILINE)[1:]}


def test_no_report_release_or_lease_recovery_moves_a_job_but_through_the_outcomes_table() -> None:
    moves = re.compile(r"bulk_sync\.(transition|retry|fail|split)\(")
    reports = _functions(ROOT / "sql" / "50_reports.sql")
    claim = _functions(ROOT / "sql" / "30_claim.sql")
    ends = {name: claim[name] for name in ("bulk_sync.release", "bulk_sync.recover")}
    assert len(reports) > 10
    assert [name for name, body in {**reports, **ends}.items() if moves.search(body)] == []
    applies = [name for name, body in {**reports, **ends}.items() if "bulk_sync.apply_outcome(" in body]
    assert {"bulk_sync.release", "bulk_sync.recover", "bulk_sync.report_failure"} < set(applies)
    # the rest of the claim moves jobs itself: into slots (dispatch) and under a lease (a task handed out)
    movers = [name for name, body in claim.items() if moves.search(body)]
    assert movers == ["bulk_sync.give_slots", "bulk_sync.take_task"]


# What bulk_sync.transition() writes itself instead of the caller's row: the job's identity, state, fence, lease,
# slots (from the caller's row only while the new state holds them) and wake-up, and what jobs_guard stamps.
OWNED = {"id", "status", "fence", "lease_expires_at", "leased_by", "slot", "import_slot", "task_due_at", "task_msg_id",
         "updated_at", "finished_at"}  # fmt: skip


def test_a_transition_writes_every_column_of_the_callers_row_but_those_it_owns(db: psycopg.Connection) -> None:
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-02', '{orders}')")
    (task,) = claim(db, qty=1)  # a: starting, leased; b: queued, then canceled and given a value in every column
    a, b = task["job_id"], task["job_id"] + 1
    db.execute("select bulk_sync.cancel_jobs(array[%s]::bigint[])", (b,))
    db.execute(
        """update bulk_sync.jobs
              set storage_path = 's3://bucket/b', last_error = 'boom', attempts = 2, max_attempts = 7,
                  operation_id = 'gid://shopify/BulkOperation/9', operation_status = 'FAILED', object_count = 5,
                  export_url = 'https://storage.example/b', bytes_total = 9, bytes_copied = 4, lines_total = 5,
                  lines_processed = 3, lines_rejected = 1, start_attempted_at = now() - interval '2 h',
                  operation_started_at = now() - interval '1 h', next_attempt_at = now() + interval '1 h',
                  kind = 'incremental', parent_id = %s
            where id = %s""",
        (a, b),
    )
    columns = [c for (c,) in db.execute(
        "select attname from pg_attribute where attrelid = 'bulk_sync.jobs'::regclass and attnum > 0"
        " and not attisdropped")]  # fmt: skip
    assert set(columns) > OWNED
    written, caller, before = db.execute(
        """select to_jsonb(bulk_sync.transition(jsonb_populate_record(a, to_jsonb(b) - %s::text[]), 'waiting',
                                                'test', 'ok', 'another job''s columns')),
                  to_jsonb(b), to_jsonb(a)
           from bulk_sync.jobs as a, bulk_sync.jobs as b where a.id = %s and b.id = %s""",
        (["id", "status", "fence", "slot", "import_slot"], a, b),
    ).fetchone()
    assert [c for c in columns if written[c] != caller[c] and c not in OWNED] == []
    differed = {c for c in columns if before[c] != caller[c]} - OWNED
    assert len(differed) >= 18, differed  # the row was taken whole: each of these came from the caller
    assert (written["status"], written["fence"], written["slot"]) == ("waiting", before["fence"] + 1, before["slot"])
    assert written["lease_expires_at"] is None and written["task_msg_id"] is not None


def test_what_a_transaction_frees_is_handed_out_once_at_its_commit(db: psycopg.Connection) -> None:
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com', null, 1)")  # one operation at a time
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-01', '{orders,refunds,skus}')")
    (task,) = claim(db, qty=10)
    first = task["job_id"]
    second, third = [i for (i,) in db.execute("select id from bulk_sync.jobs where status = 'queued' order by id")]
    with db.transaction():
        # The slot is freed, then the job that would have had it is canceled: nothing is handed out before the end.
        assert report(db, "report_fatal_error", first, task["fence"], "ACCESS_DENIED: no scope")
        assert db.execute("select count(*) from bulk_sync.jobs where status = 'starting'").fetchone() == (0,)
        assert db.execute("select bulk_sync.cancel_jobs(array[%s]::bigint[])", (second,)).fetchone() == (1,)
        assert job(db, third)["status"] == "queued"
    assert [job(db, i)["status"] for i in (first, second, third)] == ["failed", "canceled", "starting"]
    dispatched = db.execute(
        "select job_id from bulk_sync.job_runs where phase = 'dispatch' and to_status = 'starting' order by id"
    ).fetchall()
    assert dispatched == [(first,), (third,)]  # the canceled job was never given the slot


def test_dispatch_is_called_by_the_claim_the_tick_a_shops_change_and_the_hand_out_at_commit_only() -> None:
    callers = {}
    for path in sorted((ROOT / "sql").glob("[0-9]*.sql")):
        for name, body in _functions(path).items():
            calls = re.search(r"bulk_sync\.dispatch(_exports|_imports)?\(\)", body)
            if calls and not name.startswith("bulk_sync.dispatch"):
                callers[name] = path.name
    assert callers == {
        "bulk_sync.jobs_hand_out": "10_state_machine.sql", "bulk_sync.claim": "30_claim.sql",
        "bulk_sync.update_shop": "68_shops.sql", "bulk_sync.set_shop_active": "68_shops.sql",
        "bulk_sync.tick": "70_api.sql",
    }  # fmt: skip
