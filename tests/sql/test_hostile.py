"""Hostile input: random arguments to the SQL API and random bytes to the import give clear errors or quarantined
lines, never anything else, and a refused call changes nothing."""

import datetime as dt
import itertools

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from runner.download import _text
from tests.jobs import claim, export_job

FUZZ = settings(deadline=None, max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture])
WORDS = st.one_of(
    st.none(),
    st.sampled_from(["DE", "NL", "orders", "skus", "'; drop table bulk_sync.jobs; --", "DE\x00", "$$", "%s", ""]),
    st.text(max_size=20),
)
DATES = st.one_of(st.none(), st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31)))


def _state(db: psycopg.Connection) -> tuple:
    return db.execute(
        "select (select count(*) from bulk_sync.jobs), (select count(*) from bulk_sync.shops), "
        "(select coalesce(sum(fence), 0) from bulk_sync.jobs), (select count(*) from pgmq.q_bulk_sync)"
    ).fetchone()


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    return isinstance(value, list | tuple) and any(_has_nul(v) for v in value)


def _call(db: psycopg.Connection, query: sql.Composable | str, args: tuple) -> None:
    """Runs one API call; it may succeed or raise one of bulk-sync's own errors (class BS), and nothing else.
    A refused call leaves everything as it was."""
    before = _state(db)
    try:
        db.execute(query, args)
    except psycopg.Error as exc:
        if exc.sqlstate is None:  # refused by the driver before sending: PostgreSQL text cannot hold NUL
            assert _has_nul(args) and "NUL" in str(exc)
        else:
            assert exc.sqlstate.startswith("BS"), f"{query!r} {args!r}: {exc.sqlstate} {exc}"
        assert _state(db) == before


@FUZZ
@given(first=DATES, last=DATES, entities=st.one_of(st.none(), st.lists(WORDS, max_size=4)),
       shops=st.one_of(st.none(), st.lists(WORDS, max_size=3)))  # fmt: skip
def test_enqueue_backfill_with_random_arguments(db: psycopg.Connection, first, last, entities, shops) -> None:
    if not db.execute("select count(*) from bulk_sync.shops").fetchone()[0]:
        db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com'), bulk_sync.add_shop('NL', 'nl.myshopify.com')")
    db.execute("update bulk_sync.settings set max_backfill_days = 40")
    _call(db, "select bulk_sync.enqueue_backfill(%s, %s, %s, %s)", (first, last, entities, shops))


@FUZZ
@given(code=WORDS, domain=WORDS, version=WORDS, ops=st.one_of(st.none(), st.integers(-10, 10)), tz=WORDS)
def test_add_shop_with_random_arguments(db: psycopg.Connection, code, domain, version, ops, tz) -> None:
    _call(db, "select bulk_sync.add_shop(%s, %s, coalesce(%s, '2026-10'), %s, coalesce(%s, 'UTC'))",
          (code, domain, version, ops, tz))  # fmt: skip


@FUZZ
@given(
    function=st.sampled_from([
        "bulk_sync.report_operation_started(%s, %s, %s)", "bulk_sync.report_operation_in_progress(%s, %s, %s)",
        "bulk_sync.report_transient_error(%s, %s, %s)", "bulk_sync.report_fatal_error(%s, %s, %s)",
        "bulk_sync.report_download_failed(%s, %s, %s)", "bulk_sync.report_poll_result(%s, %s, %s)",
        "bulk_sync.release(%s, %s)",
        "bulk_sync.retry_failed(%s)", "bulk_sync.cancel_jobs(%s)", "bulk_sync.claim(%s, %s, %s)",
    ]),
    job=st.one_of(st.none(), st.integers(-5, 5), st.integers(-(2**63), 2**63 - 1)),
    fence=st.one_of(st.none(), st.integers(-5, 10)),
    text=WORDS,
)  # fmt: skip
def test_reports_and_verbs_with_random_arguments(db: psycopg.Connection, function, job, fence, text) -> None:
    if not db.execute("select count(*) from bulk_sync.jobs").fetchone()[0]:
        db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
        db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-03', '{orders}')")
        claim(db, qty=1)
    count = function.count("%s")
    if function.startswith(("bulk_sync.retry_failed", "bulk_sync.cancel_jobs")):
        args: tuple = (text,)
    elif function.startswith("bulk_sync.claim"):
        args = (text, fence, job if job is None else job % 100)
    else:
        args = (job, fence, text)[:count]
    _call(db, sql.SQL("select {}").format(sql.SQL(function)), args)


_days = itertools.count()


@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.binary(max_size=200), min_size=1, max_size=12))
def test_random_bytes_are_quarantined_never_fatal(db: psycopg.Connection, lines: list[bytes]) -> None:
    """Whatever bytes an export holds, the import completes: every line imported or quarantined."""
    text = [_text(raw.replace(b"\n", b" ")) + "\n" for raw in lines]
    day = dt.date(2025, 1, 1) + dt.timedelta(days=next(_days))
    task = export_job(db, text, day.isoformat())
    db.execute("call bulk_sync.import(%s, %s)", (task["job_id"], task["fence"]))
    status, total, processed, rejected = db.execute(
        "select status, lines_total, lines_processed, lines_rejected from bulk_sync.jobs where id = %s",
        (task["job_id"],),
    ).fetchone()
    assert (status, total, processed) == ("completed", len(lines), len(lines))
    rejects = db.execute("select count(*) from bulk_sync.rejects where job_id = %s", (task["job_id"],)).fetchone()[0]
    assert rejects == rejected
