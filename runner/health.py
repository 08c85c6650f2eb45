"""The runner's endpoints for the platform it runs on, on one port: /metrics (Prometheus' text format), /healthz
(200 while every worker loop is alive) and /readyz (200 when the database answers and a claim succeeded within the
last lease_seconds, or a task is in hand; else 503 with a one-line reason)."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from runner import sqlapi
from runner.db import first_line
from runner.pool import Unavailable
from runner.worker import Runner

PROBE_SECONDS = 3.0  # /readyz waits this long for a connection


def alive(runner: Runner) -> str | None:
    """None when every worker loop runs (or the runner is stopping as asked), else why not: the loop that could
    not go on and its last error."""
    if runner.ended:
        worker, why = next(iter(runner.ended.items()))
        return f"worker loop {worker} ended: {why}"
    dead = [t.name for t in runner.threads if not t.is_alive()]
    if dead and not runner.stop.is_set():
        return f"{len(dead)} of {len(runner.threads)} worker loops have ended: {', '.join(dead)}"
    return None


def ready(runner: Runner, clock=time.monotonic) -> str | None:
    """None when the runner can take work: the database answers, and a claim succeeded within the lease (or a task
    is in hand); else why not, in one line. Asks on a connection of the runner's budget (never one of its own),
    which no download or import can hold."""
    try:
        with runner.budget.connection(timeout=PROBE_SECONDS) as db:
            lease = sqlapi.lease_seconds(db)
    except Unavailable as exc:  # no connection could be had: it says why
        return str(exc)
    except psycopg.Error as exc:
        return f"database unreachable: {first_line(exc)}"
    if runner.in_hand:
        return None
    if runner.last_claim is None:
        return "no claim has succeeded yet"
    since = clock() - runner.last_claim
    if since > lease:
        return f"no claim succeeded in the last {since:.0f} s (lease_seconds {lease})"
    return None


class HealthServer:
    """Serves the endpoints for `runner` on host:port from a thread of its own (port 0: a free one)."""

    def __init__(self, runner: Runner, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 - for the platform
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(runner.metrics.registry), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    reason = alive(runner) if path == "/healthz" else ready(runner)
                    self._send(503 if reason else 200, f"{reason or 'ok'}\n".encode())
                else:
                    self._send(404, b"not found: /metrics, /healthz and /readyz are served\n")

            def _send(self, status: int, body: bytes, kind: str = "text/plain; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # probes every few seconds: not worth a log line
                pass

        self._http = ThreadingHTTPServer((host, port), Handler)
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def start(self) -> "HealthServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
