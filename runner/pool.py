"""The runner's connection budget: at most `size` database connections for the whole process, whatever its
concurrency. Workers, heartbeats, the readiness probe and the webhook receiver all borrow from one pool, a
connection per step, and give it back. A long step (the COPY of a download, an import) also takes one of size - 1
places, so at least one connection is always left to the short ones: a heartbeat or /readyz never waits behind a
download or an import, only behind a claim or a report."""

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from runner.db import OPTIONS, first_line
from runner.shared import ConfigError

# Chosen by measurement (README, "Connections"): a runner at --concurrency 8 backfilled as fast with 4 as with
# a connection per thread.
DEFAULT_SIZE = 4
IDLE_SECONDS = 60.0  # a connection unused this long is closed, down to one
WAIT_SECONDS = 30.0  # how long a step waits for a connection before it says so
RECONNECT_SECONDS = 10.0  # a failed connection attempt is retried with backoff this long, then asked for anew

# The pool's own log lines (each failed connection attempt) would break the one-line-per-step log: what matters
# reaches it as steps (`phase=database`) and /readyz says why the database is unreachable.
logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)

T = TypeVar("T")


class Budget:
    """The process's connections to the database (`size` at most, one kept open while idle)."""

    def __init__(
        self, dsn: str, size: int = DEFAULT_SIZE, application_name: str = "bulk-sync run",
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:  # fmt: skip
        if size < 2:
            raise ConfigError("--db-connections must be at least 2: one for long steps, one for the short ones")
        self.size = size
        self.connect_error: str | None = None  # why the last attempt to connect failed, while it does
        self._lock = threading.Lock()
        self._in_use = 0
        self.high_water = 0  # most connections open at once
        self._long = threading.BoundedSemaphore(size - 1)
        self.pool = ConnectionPool(
            dsn, min_size=1, max_size=size, open=False, name="bulk-sync", connection_class=self._recording(),
            kwargs={"autocommit": True, "application_name": application_name, **OPTIONS},
            max_idle=idle_seconds, timeout=WAIT_SECONDS, reconnect_timeout=RECONNECT_SECONDS,
        )  # fmt: skip

    def _recording(self) -> type[psycopg.Connection]:
        budget = self

        class Connection(psycopg.Connection):
            @classmethod
            def connect(cls, *args, **kwargs):  # noqa: ANN206 - psycopg's signature
                try:
                    conn = super().connect(*args, **kwargs)
                except psycopg.OperationalError as exc:
                    budget.connect_error = first_line(exc)
                    raise
                budget.connect_error = None
                return conn

        return Connection

    def open(self) -> "Budget":
        self.pool.open(wait=False)
        return self

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection]:
        """A connection for one step (autocommit). Waits up to `timeout` seconds (default WAIT_SECONDS) for one,
        then raises Unavailable. A connection that broke is dropped when it comes back; when one breaks, the
        others waiting in the pool are checked before they are handed out again."""
        try:
            conn = self.pool.getconn(timeout)
        except PoolTimeout:
            raise Unavailable(self._why_none(timeout)) from None
        with self._lock:
            self._in_use += 1
            self.high_water = max(self.high_water, self.pool.get_stats()["pool_size"])
        try:
            yield conn
        except psycopg.OperationalError:
            threading.Thread(target=self.pool.check, daemon=True).start()  # the server may have restarted
            raise
        finally:
            with self._lock:
                self._in_use -= 1
            self.pool.putconn(conn)

    def call(self, function: Callable[..., T], *args: object) -> T:
        """function(connection, *args) on a borrowed connection; once more on another if the connection broke (the
        SQL API's calls are fenced or idempotent: a second one changes nothing when the first got through)."""
        try:
            with self.connection() as db:
                return function(db, *args)
        except Unavailable:
            raise
        except psycopg.OperationalError:
            with self.connection() as db:
                return function(db, *args)

    @contextmanager
    def long_step(self) -> Iterator[None]:
        """One of the size - 1 places for a step that holds its connection long (a download's COPY, an import)."""
        with self._long:
            yield

    def _why_none(self, timeout: float | None) -> str:
        waited = WAIT_SECONDS if timeout is None else timeout
        if self.connect_error:
            return f"database unreachable: {self.connect_error}"
        return f"no database connection free within {waited:g} s ({self._in_use} of {self.size} in use)"

    def stats(self) -> dict[str, float]:
        """The budget's figures for /metrics: its size, connections open and in use, the most open at once, and
        the waits for a connection (count and seconds) since the start."""
        pool = self.pool.get_stats()
        with self._lock:
            in_use, high = self._in_use, max(self.high_water, pool.get("pool_size", 0))
        return {
            "size": self.size, "open": pool.get("pool_size", 0), "in_use": in_use, "high_water": high,
            "waits": pool.get("requests_queued", 0), "wait_seconds": pool.get("requests_wait_ms", 0) / 1000,
        }  # fmt: skip


class Unavailable(psycopg.OperationalError):
    """No connection could be had: the database is unreachable, or every connection stayed in use."""
