"""The runner's worker loop: claim a task from the database, do its HTTP side, report what happened. Decides
nothing: every outcome goes to a report function, which decides what comes next."""

import datetime as dt
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from runner import log, sqlapi
from runner.config import base_url, credentials, servable
from runner.db import first_line
from runner.download import Abandoned, DownloadError, fetch, stage
from runner.metrics import Metrics
from runner.pool import DEFAULT_SIZE, Budget
from runner.shopify_client import Fatal, InProgress, ShopifyClient, Throttled, Transient
from runner.tokens import ClientCredentials, StaticToken

HEARTBEAT_SECONDS = 20.0  # at most this long between heartbeats of a held lease; a third of the lease if shorter
TICK_SECONDS = 1.0
GIVE_UP_AFTER = 10  # a worker loop that fails this often in a row (the database unreachable aside) ends the process
BACKOFF_CAP_SECONDS = 30.0  # a failed worker loop waits 1, 2, 4 ... s, at most this, before it goes on
UNREACHABLE_SECONDS = 2.0  # a worker loop waits this long before it asks an unreachable database again


@dataclass
class _Lease:
    copied: int
    every: float
    due: float


class Heartbeats:
    """Keeps the leases of long downloads alive, and of steps waiting for a place among the long ones: each lease
    is extended every third of its length (at most every HEARTBEAT_SECONDS), so a short lease survives a slow
    download too. Borrows a connection of the budget for each round."""

    def __init__(self, budget: Budget, stop: threading.Event, clock: Callable[[], float] = time.monotonic) -> None:
        self._budget = budget
        self._stop = stop
        self._clock = clock
        self._lock = threading.Lock()
        self._leases: dict[tuple[int, int], _Lease] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def hold(self, job_id: int, fence: int, lease_seconds: float) -> None:
        """Starts keeping a lease of `lease_seconds` alive."""
        every = min(HEARTBEAT_SECONDS, lease_seconds / 3)
        with self._lock:
            self._leases[(job_id, fence)] = _Lease(0, every, self._clock() + every)

    def copied(self, job_id: int, fence: int, count: int) -> None:
        """Records the bytes copied so far under a held lease (sent with its next heartbeat)."""
        with self._lock:
            if lease := self._leases.get((job_id, fence)):
                lease.copied = count

    def drop(self, job_id: int, fence: int) -> None:
        with self._lock:
            self._leases.pop((job_id, fence), None)

    def due(self) -> dict[tuple[int, int], int]:
        """The leases whose heartbeat is due now, with their bytes copied; each is next due a period later."""
        now = self._clock()
        with self._lock:
            due = {key: lease for key, lease in self._leases.items() if lease.due <= now}
            for lease in due.values():
                lease.due = now + lease.every
            return {key: lease.copied for key, lease in due.items()}

    def _run(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            if not (due := self.due()):
                continue
            try:
                with self._budget.connection() as db:
                    for (job_id, fence), copied in due.items():
                        sqlapi.heartbeat(db, job_id, fence, copied or None)
            except psycopg.Error as exc:
                log.step(phase="heartbeat", outcome="error", detail=f"{type(exc).__name__}: {first_line(exc)}")


class Doorbell:
    """One worker of a runner at a time waits in the database for work (the watch); the others wait here until it
    finds some, then all ask at once. An idle runner asks the database as often as one worker, not each of them:
    on 2 cores, 32 idle workers asking every 100 ms took most of PostgreSQL's CPU."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._watched = False
        self._found = 0  # how many watches found work

    def wait_turn(self, stop: threading.Event) -> bool:
        """Blocks until this worker takes the free watch (True: wait in the database) or the watch finds work
        (False: ask at once), or stop is set (False)."""
        with self._cond:
            found = self._found
            while not stop.is_set():
                if not self._watched:
                    self._watched = True
                    return True
                if self._found != found:
                    return False
                self._cond.wait(0.25)  # and look at stop again
            return False

    def watched(self, found: bool) -> None:
        """Ends the watch: frees it for another worker and, when it found work, wakes every worker to ask."""
        with self._cond:
            self._watched = False
            self._found += found
            self._cond.notify_all()


class Runner:
    """Serves the shops its environment has credentials for (`env`: SHOP_<CODE>_TOKEN, client credentials, base
    URLs); a shop registered while it runs is served as soon as a task of it comes, without a restart. Holds at
    most `db_connections` database connections (its `budget`), whatever its concurrency."""

    def __init__(
        self, dsn: str, env: dict[str, str], concurrency: int = 1, name: str = "runner",
        until_idle: bool = False, wait_seconds: float = 2.0, only: list[str] | None = None,
        metrics: Metrics | None = None, db_connections: int = DEFAULT_SIZE, budget: Budget | None = None,
        give_up_after: int = GIVE_UP_AFTER, backoff_cap: float = BACKOFF_CAP_SECONDS,
    ) -> None:  # fmt: skip
        self.dsn = dsn
        self.env = env
        self.shops = servable(env, only)  # told to the claim: None serves every shop
        self.concurrency = concurrency
        self.name = name
        self.until_idle = until_idle
        self.wait_seconds = wait_seconds
        self.stop = threading.Event()
        self._owns_budget = budget is None  # closed at the end of run(); a budget handed in is its giver's
        self.budget = budget or Budget(dsn, db_connections, f"bulk-sync run {name}")
        self.heartbeats = Heartbeats(self.budget, self.stop)
        self.clients: dict[str, ShopifyClient] = {}
        self.tokens: dict[str, StaticToken | ClientCredentials] = {}
        self._clients_lock = threading.Lock()
        self.errors = 0
        self.metrics = metrics or Metrics()
        self.metrics.watch(self.budget)
        self.threads: list[threading.Thread] = []
        self.doorbell = Doorbell()
        self.last_claim: float | None = None  # time.monotonic() of the last claim that succeeded
        self.in_hand = 0  # tasks being handled now
        self.give_up_after = give_up_after
        self.backoff_cap = backoff_cap
        self.ended: dict[str, str] = {}  # worker loops that could not go on, and why
        self._tracebacks: set[tuple[str, str]] = set()  # the errors whose traceback was logged already

    # -- lifecycle --------------------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: object) -> None:
            if self.stop.is_set():
                raise SystemExit(128 + signum)  # a second signal: stop now, leases will expire
            log.step(phase="shutdown", outcome="stopping", detail=f"signal {signum}: finishing the steps in hand")
            self.stop.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def run(self) -> int:
        """Works until stopped; 0, or 1 when a worker loop could not go on (the process should be restarted)."""
        self.budget.open()
        self.heartbeats.start()
        threads = self.threads = [
            threading.Thread(target=self._loop, args=(i,), name=f"{self.name}/{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            for thread in threads:
                thread.join(timeout=0.2)
        for client in self.clients.values():
            client.close()
        for auth in self.tokens.values():
            if isinstance(auth, ClientCredentials):
                auth.close()
        if self._owns_budget:
            self.budget.close()
        return 1 if self.ended else 0

    def client(self, task: dict) -> ShopifyClient:
        """The Admin API client of the task's shop, made on first use from the task's endpoint and the environment;
        its token source is kept per shop, shared by every worker."""
        code = task["shop"]
        with self._clients_lock:
            found = credentials(code, self.env)
            if found is None:
                raise Transient(f"this runner has no credentials for shop {code}")
            url = base_url(code, task["domain"], self.env)
            if code not in self.tokens:
                self.tokens[code] = (
                    StaticToken(found.token) if found.token
                    else ClientCredentials(code, url, found.client_id, found.client_secret,
                                           on_grant=lambda why: self.metrics.granted(code, why))
                )  # fmt: skip
            client = self.clients.get(code)
            endpoint = f"{url.rstrip('/')}/admin/api/{task['api_version']}/graphql.json"
            if client is None or client.endpoint != endpoint:  # new, or its domain or API version changed
                client = self.clients[code] = ShopifyClient(
                    url, self.tokens[code], task["api_version"],
                    on_request=lambda status, seconds: self.metrics.request(code, status, seconds),
                    on_wait=lambda seconds: self.metrics.waited(code, "budget", seconds),
                )  # fmt: skip
            return client

    def _loop(self, index: int) -> None:
        """Claims and handles tasks until stopped. Any error is logged (a task in hand is reported as a transient
        error first) and the loop goes on after a backoff; an unreachable database is waited for however long,
        but GIVE_UP_AFTER other failures in a row end the loop, and with it the process."""
        worker = f"{self.name}/{index}"
        watching = False  # asks without waiting first: there may be work for every worker
        failures = 0
        while not self.stop.is_set():
            try:
                watching = self._turn(worker, watching)
                failures = 0
                continue
            except _TaskFailed as failed:  # logged and reported with its task
                error = failed.cause
            except Exception as exc:  # noqa: BLE001 - in the claim: nothing is lost, the loop must go on
                error = exc
                self._log_error(error, worker=worker, phase="claim")
            watching = False
            self.errors += 1
            if isinstance(error, psycopg.OperationalError):  # unreachable, or no connection free: wait it out
                self.stop.wait(UNREACHABLE_SECONDS)
                continue
            failures += 1
            if failures >= self.give_up_after:
                self._end(worker, error, failures)
                return
            self.stop.wait(min(self.backoff_cap, 2.0 ** (failures - 1)))

    def _turn(self, worker: str, watching: bool) -> bool:
        """One claim and the tasks it handed out; returns whether to wait in the database on the next claim."""
        asked = time.monotonic()
        rows: list[sqlapi.Task] = []
        idle = False
        try:
            with self.budget.connection() as db:
                rows = sqlapi.claim(db, worker, 1, self.wait_seconds if watching else 0.0, self.shops)
                idle = not rows and self.until_idle and sqlapi.idle(db)
        finally:
            if watching:
                self.doorbell.watched(bool(rows))
        self.last_claim = time.monotonic()
        self.metrics.claimed(len(rows))
        claim_ms = round((self.last_claim - asked) * 1000)
        for task in rows:
            self._handle(task, claim_ms)
        if rows:
            return False
        if idle:
            log.step(worker=worker, phase="idle", outcome="done", detail="no job can make progress")
            self.stop.set()
        return self.doorbell.wait_turn(self.stop)

    def _end(self, worker: str, error: BaseException, failures: int) -> None:
        """A worker loop that cannot go on: say why, and stop the runner (it exits with 1, to be restarted)."""
        why = f"{type(error).__name__}: {first_line(error)} ({failures} failures in a row)"
        self.ended[worker] = log.redact(why)
        log.step(worker=worker, phase="worker", outcome="ended", detail=why)
        self.stop.set()

    def _log_error(self, error: BaseException, **fields: object) -> None:
        """One step line for an error, with its traceback the first time an error of its kind and place comes."""
        where = " ".join(f"{f.filename}:{f.lineno}" for f in traceback.extract_tb(error.__traceback__))
        if (type(error).__name__, where) not in self._tracebacks:
            self._tracebacks.add((type(error).__name__, where))
            fields["traceback"] = "".join(traceback.format_exception(error)).rstrip()
        log.step(**fields, outcome="error", detail=f"{type(error).__name__}: {first_line(error)}")

    # -- the database -----------------------------------------------------------------------------------------
    @contextmanager
    def _long(self, job_id: int, fence: int, lease_seconds: float) -> Iterator[psycopg.Connection]:
        """A connection for a long step (a download's COPY, an import), its lease kept alive while it waits for one
        of the budget's places for long steps."""
        self.heartbeats.hold(job_id, fence, lease_seconds)
        try:
            with self.budget.long_step():
                self.heartbeats.drop(job_id, fence)
                with self.budget.connection() as db:
                    yield db
        finally:
            self.heartbeats.drop(job_id, fence)

    # -- tasks ------------------------------------------------------------------------------------------------
    def _handle(self, task: sqlapi.Task, claim_ms: int = 0) -> None:
        """Does the task's HTTP side and reports it; logs one line (claim_ms: how long the claim that handed it out
        took, a wait for work included). An unexpected error is logged, reported as a transient error of the task's
        step and raised as _TaskFailed."""
        job_id, kind = task["job_id"], task["task"]
        started = time.monotonic()
        failure: Exception | None = None
        outcome, detail = "error", ""
        self._in_hand(kind, +1)
        try:
            outcome, detail = self._perform(task)
        except Exception as exc:  # noqa: BLE001 - the step must not stall until its lease expires
            failure = exc
            self._report_failure(task, f"runner error: {type(exc).__name__}")
        finally:
            self._in_hand(kind, -1)
            self.metrics.tasks.labels(task["shop"], kind, outcome).inc()
            self.metrics.task_seconds.labels(kind).observe(time.monotonic() - started)
        fields = {
            "job": job_id, "shop": task["shop"], "entity": task.get("entity"), "phase": kind, "claim_ms": claim_ms,
            "duration_ms": round((time.monotonic() - started) * 1000),
        }  # fmt: skip
        if failure is not None:
            self._log_error(failure, **fields)
            raise _TaskFailed(failure)
        log.step(**fields, outcome=outcome, detail=detail)

    def _report_failure(self, task: sqlapi.Task, reason: str) -> None:
        """Reports an unexpected error of a task as transient (a cancel: asked again later); when even that fails,
        the lease expires and the step is handed out again."""
        try:
            if task["task"] == "cancel":
                self.budget.call(sqlapi.report_cancel_failed, task["job_id"], task["operation_id"],
                             task.get("attempt", 0), reason)  # fmt: skip
            else:
                self.budget.call(sqlapi.report_transient_error, task["job_id"], task["fence"], reason)
        except Exception as exc:  # noqa: BLE001 - logged; the lease is the safety net
            log.step(job=task["job_id"], phase=task["task"], outcome="unreported",
                     detail=f"{type(exc).__name__}: {first_line(exc)}; the lease will expire")  # fmt: skip

    def _perform(self, task: sqlapi.Task) -> tuple[str, str]:
        """The task's side effects and the report of what happened; returns (outcome, detail) for the step line."""
        job_id, fence, kind = task["job_id"], task["fence"], task["task"]
        try:
            client = self.client(task) if kind in ("start", "poll", "fetch", "cancel") else None
            if kind == "start":
                client.require_shop(task["shop"], task["domain"])  # the shop answering is the one registered
                adopted = None
                if task.get("adopt_since"):  # an earlier start may have made the operation: never start twice
                    since = dt.datetime.fromisoformat(task["adopt_since"])
                    adopted = client.find_operation(task["query"], since)
                operation_id = adopted or client.run_query(task["query"])
                self.budget.call(sqlapi.report_operation_started, job_id, fence, operation_id, adopted is not None)
                return ("adopted" if adopted else "ok"), operation_id
            if kind == "poll":
                op = client.poll(task["operation_id"])
                self.budget.call(sqlapi.report_poll_result, job_id, fence, op.status, op.error_code, op.object_count,
                             op.file_size, op.url)  # fmt: skip
                return op.status, f"{op.object_count} objects"
            if kind == "fetch":  # a page of rows a bulk query cannot export (sql/45_fetch.sql)
                data = client.call(task["query"], task["variables"], task["cost"])
                self.budget.call(sqlapi.report_fetched, job_id, fence, task["variables"]["ids"], data)
                return "ok", f"{len(task['variables']['ids'])} parents"
            if kind == "download":
                return self._download(task)
            if kind == "import":
                with self._long(job_id, fence, task["lease_seconds"]) as db:
                    sqlapi.import_job(db, job_id, fence)
                return "ok", self._imported(task)
            if kind == "cancel":
                try:
                    client.cancel(task["operation_id"])
                except (Throttled, Transient) as exc:  # no job waits on it (no fence to report on): ask again later
                    self.budget.call(sqlapi.report_cancel_failed, job_id, task["operation_id"], task.get("attempt", 0),
                                 str(exc))  # fmt: skip
                    return "transient", str(exc)
            return "ok", ""
        except Throttled as exc:
            self.metrics.waited(task["shop"], "throttled", min(exc.wait, 3600.0))
            self.budget.call(sqlapi.report_throttled, job_id, fence, min(exc.wait, 3600.0))
            return "throttled", str(exc)
        except InProgress as exc:
            self.budget.call(sqlapi.report_operation_in_progress, job_id, fence, str(exc))
            return "in_progress", str(exc)
        except Transient as exc:
            self.budget.call(sqlapi.report_transient_error, job_id, fence, str(exc))
            return "transient", str(exc)
        except Fatal as exc:
            self.budget.call(sqlapi.report_fatal_error, job_id, fence, str(exc))
            return "fatal", str(exc)
        except DownloadError as exc:
            self.budget.call(sqlapi.report_download_failed, job_id, fence, str(exc), exc.expired)
            return ("expired" if exc.expired else "download_error"), str(exc)
        except Abandoned:
            self.budget.call(sqlapi.release, job_id, fence)
            return "given_back", ""

    def _download(self, task: sqlapi.Task) -> tuple[str, str]:
        """The export into a spool with no connection held, then into staging on one of the long places; its lease
        kept alive by heartbeats throughout."""
        job_id, fence = task["job_id"], task["fence"]
        self.heartbeats.hold(job_id, fence, task["lease_seconds"])
        try:
            spool = fetch(task["export_url"], self.stop, lambda copied: self.heartbeats.copied(job_id, fence, copied))
            try:
                with self.budget.long_step(), self.budget.connection() as db:
                    result = stage(db, job_id, fence, spool, self.stop)
            finally:
                spool.close()
        finally:
            self.heartbeats.drop(job_id, fence)
        self.metrics.download_bytes.labels(task["shop"]).inc(result.bytes)
        if result.accepted:
            self.metrics.lines_staged.labels(task["shop"]).inc(result.lines)
        return ("ok" if result.accepted else "stale"), f"{result.lines} lines, {result.bytes} bytes"

    def _in_hand(self, phase: str, change: int) -> None:
        with self._clients_lock:
            self.in_hand += change
        self.metrics.in_flight.labels(phase).inc(change)

    def _imported(self, task: sqlapi.Task) -> str:
        """Counts an import task done, by where it left its job; returns that for the step line."""
        found = self.budget.call(sqlapi.import_outcome, task["job_id"])
        if found is None:
            return "job gone"
        status, entity, lines, rejected, fence = found
        if fence > task["fence"] + 1:  # the import ends with one step past the task's fence: another caller's did
            status = "stale"
        self.metrics.imports.labels(task["shop"], entity, status).inc()
        if status not in ("failed", "stale"):  # every line imported or quarantined
            self.metrics.import_lines.labels(task["shop"], entity).inc(lines)
        return f"{status}: {lines} lines, {rejected} quarantined"


class _TaskFailed(Exception):
    """A task's step failed unexpectedly; it was logged and reported already."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause
