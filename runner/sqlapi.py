"""bulk-sync's SQL API as typed Python: one function per SQL function that the runner, the CLI, the demo, the bench
or the tests call, each taking the connection first. The SQL text is fixed here (parameters only), and what the
SQL owns (the job states) is read from the database, not repeated."""

import datetime as dt
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

from psycopg import Connection
from psycopg.types.json import Jsonb


class Task(TypedDict):
    """A claimed task (bulk_sync.task): everything a runner needs, and the fence its reports must present."""

    job_id: int
    task: str  # start, poll, download, import, fetch, cancel
    fence: int
    shop: str
    domain: str
    api_version: str
    entity: NotRequired[str]
    filter_field: NotRequired[str | None]
    window_start: NotRequired[str | None]
    window_end: NotRequired[str | None]
    operation_id: NotRequired[str | None]
    object_count: NotRequired[int | None]
    bytes_total: NotRequired[int | None]
    attempts: NotRequired[int]
    lease_seconds: NotRequired[int]
    query: NotRequired[str | None]
    export_url: NotRequired[str | None]
    adopt_since: NotRequired[str | None]
    attempt: NotRequired[int]  # cancel: how many were tried before
    variables: NotRequired[dict[str, Any]]  # fetch: the query's variables (ids, first, after)
    cost: NotRequired[int]  # fetch: the query's requested cost


class Tick(TypedDict):
    recovered: int
    dispatched: int
    import_batches: int
    staging_lines_pruned: int
    audit_pruned: int


@dataclass(frozen=True)
class JobState:
    """A row of bulk_sync.job_states."""

    state: str
    position: int
    task: str | None
    leased: bool
    terminal: bool
    final: bool
    covers_window: bool
    holds_shop_slot: bool
    holds_import_slot: bool


def _one(db: Connection, query: str, args: tuple = ()) -> Any:
    row = db.execute(query, args).fetchone()
    return None if row is None else row[0]


# -- the runner ---------------------------------------------------------------------------------------------------
def claim(
    db: Connection, worker: str, qty: int = 1, wait_seconds: float = 0.0, shops: list[str] | None = None
) -> list[Task]:
    return [row[0] for row in db.execute("select bulk_sync.claim(%s, %s, %s, %s)", (worker, qty, wait_seconds, shops))]


def heartbeat(db: Connection, job_id: int, fence: int, bytes_copied: int | None = None) -> bool:
    return _one(db, "select bulk_sync.heartbeat(%s, %s, %s)", (job_id, fence, bytes_copied))


def release(db: Connection, job_id: int, fence: int) -> bool:
    return _one(db, "select bulk_sync.release(%s, %s)", (job_id, fence))


def idle(db: Connection) -> bool:
    return _one(db, "select bulk_sync.idle()")


def import_job(db: Connection, job_id: int, fence: int) -> None:
    """The whole import, a committed batch at a time (the connection must be in autocommit mode)."""
    db.execute("call bulk_sync.import(%s, %s)", (job_id, fence))


def import_outcome(db: Connection, job_id: int) -> tuple[str, str, int, int, int] | None:
    """(status, entity, lines processed, lines quarantined, fence) of the job, or None when there is no such job."""
    return db.execute("select * from bulk_sync.import_outcome(%s)", (job_id,)).fetchone()


def lease_seconds(db: Connection) -> int:
    return _one(db, "select bulk_sync.lease_seconds()")


def import_batch(db: Connection, job_id: int, fence: int) -> str:
    return _one(db, "select bulk_sync.import_batch(%s, %s)", (job_id, fence))


def report_operation_started(db: Connection, job_id: int, fence: int, operation_id: str, adopted: bool = False) -> bool:
    return _one(db, "select bulk_sync.report_operation_started(%s, %s, %s, %s)", (job_id, fence, operation_id, adopted))


def report_operation_in_progress(db: Connection, job_id: int, fence: int, message: str) -> bool:
    return _one(db, "select bulk_sync.report_operation_in_progress(%s, %s, %s)", (job_id, fence, message))


def report_throttled(db: Connection, job_id: int, fence: int, retry_after_seconds: float) -> bool:
    return _one(db, "select bulk_sync.report_throttled(%s, %s, %s)", (job_id, fence, retry_after_seconds))


def report_poll_result(
    db: Connection, job_id: int, fence: int, status: str, error_code: str | None = None,
    object_count: int | None = None, file_size: int | None = None, url: str | None = None,
) -> bool:  # fmt: skip
    return _one(db, "select bulk_sync.report_poll_result(%s, %s, %s, %s, %s, %s, %s)",
                (job_id, fence, status, error_code, object_count, file_size, url))  # fmt: skip


def report_download_finished(db: Connection, job_id: int, fence: int, lines: int, size: int) -> bool:
    return _one(db, "select bulk_sync.report_download_finished(%s, %s, %s, %s)", (job_id, fence, lines, size))


def report_download_failed(db: Connection, job_id: int, fence: int, reason: str, url_expired: bool = False) -> bool:
    return _one(db, "select bulk_sync.report_download_failed(%s, %s, %s, %s)", (job_id, fence, reason, url_expired))


def report_fetched(db: Connection, job_id: int, fence: int, ids: list[str], data: dict) -> bool:
    return _one(db, "select bulk_sync.report_fetched(%s, %s, %s, %s)", (job_id, fence, ids, Jsonb(data)))


def report_cancel_failed(db: Connection, job_id: int, operation_id: str, attempt: int, reason: str) -> bool:
    return _one(db, "select bulk_sync.report_cancel_failed(%s, %s, %s, %s)", (job_id, operation_id, attempt, reason))


def report_transient_error(db: Connection, job_id: int, fence: int, reason: str) -> bool:
    return _one(db, "select bulk_sync.report_transient_error(%s, %s, %s)", (job_id, fence, reason))


def report_fatal_error(db: Connection, job_id: int, fence: int, reason: str) -> bool:
    return _one(db, "select bulk_sync.report_fatal_error(%s, %s, %s)", (job_id, fence, reason))


def webhook_finished(db: Connection, webhook_id: str, shop_domain: str, operation_id: str) -> str:
    return _one(db, "select bulk_sync.webhook_finished(%s, %s, %s)", (webhook_id, shop_domain, operation_id))


def webhook_deleted(
    db: Connection, webhook_id: str, shop_domain: str, topic: str, payload: dict,
    triggered_at: dt.datetime | None = None,
) -> str:  # fmt: skip
    return _one(db, "select bulk_sync.webhook_deleted(%s, %s, %s, %s, %s)",
                (webhook_id, shop_domain, topic, Jsonb(payload), triggered_at))  # fmt: skip


def shop_of_domain(db: Connection, domain: str) -> str | None:
    """The code of the shop registered with this domain."""
    return _one(db, "select code from bulk_sync.shops where domain = %s", (domain,))


# -- the operator -------------------------------------------------------------------------------------------------
def add_shop(
    db: Connection, code: str, domain: str, api_version: str | None = None, max_concurrent_ops: int | None = None,
    timezone: str | None = None,
) -> str:  # fmt: skip
    """Registers a shop; a value not given is the SQL function's default (2026-10, what it allows, UTC)."""
    return _one(db, "select bulk_sync.add_shop(%s, %s, %s, %s, %s)",
                (code, domain, api_version, max_concurrent_ops, timezone))  # fmt: skip


def enqueue_backfill(
    db: Connection, first: dt.date | str, last: dt.date | str, entities: list[str] | None = None,
    shops: list[str] | None = None,
) -> int:  # fmt: skip
    if entities is None:  # the SQL function's own default
        return _one(db, "select bulk_sync.enqueue_backfill(%s::date, %s::date, p_shops => %s)", (first, last, shops))
    return _one(db, "select bulk_sync.enqueue_backfill(%s::date, %s::date, %s, %s)", (first, last, entities, shops))


def enqueue_incremental(db: Connection, shops: list[str] | None = None, since: dt.datetime | None = None) -> int:
    return _one(db, "select bulk_sync.enqueue_incremental(%s, %s)", (shops, since))


def enqueue_reconcile(db: Connection, first: dt.date | str, last: dt.date | str, shops: list[str] | None = None) -> int:
    return _one(db, "select bulk_sync.enqueue_reconcile(%s::date, %s::date, %s)", (first, last, shops))


def retry_failed(db: Connection, shop: str | None = None) -> int:
    return _one(db, "select bulk_sync.retry_failed(%s)", (shop,))


def cancel_jobs(db: Connection, shop: str | None = None) -> int:
    return _one(db, "select bulk_sync.cancel_jobs(%s::text)", (shop,))


def tick(db: Connection) -> Tick:
    return _one(db, "select bulk_sync.tick()")


def dispatch(db: Connection) -> int:
    return _one(db, "select bulk_sync.dispatch()")


def job_states(db: Connection) -> list[JobState]:
    """The job states in the order people read them (bulk_sync.job_states)."""
    rows = db.execute(
        "select state, position, task, leased, terminal, final, covers_window, holds_shop_slot, holds_import_slot "
        "from bulk_sync.job_states order by position"
    ).fetchall()
    return [JobState(*row) for row in rows]


def max_concurrent_ops(db: Connection) -> dict[str, int]:
    """Each shop's limit of running operations (set from its API version by bulk_sync.add_shop)."""
    return dict(db.execute("select code, max_concurrent_ops from bulk_sync.shops").fetchall())
