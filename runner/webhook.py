"""The runner's optional webhook receiver (`bulk-sync run --webhook-port`). Each delivery is verified
(X-Shopify-Hmac-SHA256 over the raw body, with the client secret of the app that serves the delivering shop:
runner.config.webhook_secret) and handed to the database, which dedupes on X-Shopify-Webhook-Id:
bulk_operations/finish to bulk_sync.webhook_finished() (the job polls at once), orders/delete, products/delete,
products/update and customers/delete to bulk_sync.webhook_deleted() (the deletion is marked at once). Webhooks are
not guaranteed: polls, snapshots and reconciliation cover a lost one."""

import contextlib
import datetime as dt
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

from runner import log, sqlapi
from runner.config import webhook_secret
from runner.pool import Budget
from runner.shared import signature

TOPIC = "bulk_operations/finish"
DELETIONS = ("orders/delete", "products/delete", "products/update", "customers/delete")  # no variant-delete topic
MAX_BODY = 1024 * 1024  # a products/update payload lists every variant
READ_SECONDS = 5.0  # Shopify sends a delivery whole at once (and gives up on it after 5 s): a slower client is cut off
MAX_HANDLERS = 32  # deliveries handled at once; more wait in the listen backlog, then get 503 (Shopify retries)
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _Listener(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's listen backlog is 5: a burst of deliveries beyond it waits for TCP's retransmission (1 s, then
    # 3 s), and Shopify gives a delivery 1 s to connect (5 s in all) before it counts it failed and retries later
    request_queue_size = 128

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self._handlers = threading.BoundedSemaphore(MAX_HANDLERS)

    def process_request(self, request, client_address) -> None:
        """A thread per delivery, at most MAX_HANDLERS at once; beyond, a delivery waits up to 1 s for one, then gets
        503 without being read."""
        if not self._handlers.acquire(timeout=1.0):
            with contextlib.suppress(OSError):
                request.sendall(BUSY)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._handlers.release()

    def handle_error(self, request, client_address) -> None:
        """A client's broken connection is one step line, never a traceback on stderr."""
        import sys

        log.step(phase="webhook", outcome="client_error", detail=type(sys.exc_info()[1]).__name__)


class WebhookServer:
    """Serves deliveries on host:port, each handed to the database on a connection of `budget` (the runner's)."""

    def __init__(self, budget: Budget, env: dict[str, str], port: int, host: str = "0.0.0.0") -> None:  # noqa: S104
        self.budget = budget
        self.env = env
        self._codes: dict[str, str] = {}  # shop domain -> code, of registered shops
        self.httpd = _Listener((host, port), self._handler())
        self.port = self.httpd.server_address[1]

    def start(self) -> None:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        log.step(phase="webhook", outcome="listening", detail=f"port {self.port}, topic {TOPIC}")

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def finished(self, webhook_id: str, domain: str, operation_id: str) -> str:
        """Hands a verified notification to the database."""
        return self.budget.call(sqlapi.webhook_finished, webhook_id, domain, operation_id)

    def deleted(self, webhook_id: str, domain: str, topic: str, payload: dict, triggered: str | None) -> str:
        """Hands a verified deletion notification to the database, with when Shopify triggered it (the header
        X-Shopify-Triggered-At; when missing or not a time, the database takes the moment it is handled)."""
        try:
            at = dt.datetime.fromisoformat(triggered) if triggered else None
        except ValueError:
            at = None
        if at is not None and at.tzinfo is None:
            at = at.replace(tzinfo=dt.UTC)
        return self.budget.call(sqlapi.webhook_deleted, webhook_id, domain, topic, payload, at)

    def secret(self, domain: str) -> bytes | None:
        """The secret that signs the webhooks of the shop at `domain` (its code looked up once it is registered)."""
        code = self._codes.get(domain)
        if code is None:
            code = self.budget.call(sqlapi.shop_of_domain, domain)
            if code is not None:  # an unknown domain is asked again: its shop may be registered later
                self._codes[domain] = code
        found = webhook_secret(code, self.env)
        return found.encode() if found else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = READ_SECONDS  # for each read of the socket; _body bounds the whole body's

            def _body(self) -> bytes | None:
                """The body as declared by Content-Length (answered with 400 or 413 and None when it cannot be read:
                missing, not a number, negative, too large, or not sent whole within READ_SECONDS)."""
                declared = (self.headers.get("Content-Length") or "").strip()
                if not declared.isdigit():
                    self.close_connection = True
                    return self._answer(400, "Content-Length must be a whole number of bytes")
                length = int(declared)
                if length > MAX_BODY:
                    self.close_connection = True
                    return self._answer(413, "too large")
                deadline, chunks, got = time.monotonic() + READ_SECONDS, [], 0
                while got < length:
                    if time.monotonic() > deadline:
                        raise TimeoutError("body not sent in time")
                    chunk = self.rfile.read1(length - got)
                    if not chunk:
                        raise ConnectionError("body cut short")
                    chunks.append(chunk)
                    got += len(chunk)
                return b"".join(chunks)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                try:
                    body = self._body()
                except (TimeoutError, ConnectionError) as exc:
                    self.close_connection = True
                    log.step(phase="webhook", outcome="client_error", detail=str(exc))
                    return None
                if body is None:
                    return None
                sent = self.headers.get("X-Shopify-Hmac-SHA256") or ""
                domain = self.headers.get("X-Shopify-Shop-Domain") or ""
                try:
                    secret = server.secret(domain)
                except psycopg.Error as exc:
                    log.step(phase="webhook", outcome="error", detail=type(exc).__name__)
                    return self._answer(503, "try again")
                if secret is None or not hmac.compare_digest(sent.encode(), signature(secret, body).encode()):
                    log.step(phase="webhook", outcome="rejected", detail="HMAC does not match")
                    return self._answer(401, "invalid signature")
                topic = self.headers.get("X-Shopify-Topic")
                webhook_id = self.headers.get("X-Shopify-Webhook-Id") or ""
                if topic not in (TOPIC, *DELETIONS) or not webhook_id:
                    return self._answer(200, "ignored")
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = None
                if not isinstance(payload, dict):
                    return self._answer(400, "body is not a JSON object")
                subject = str(payload.get("admin_graphql_api_id") or payload.get("id") or "")
                try:
                    if topic == TOPIC:
                        outcome = server.finished(webhook_id, domain, subject)
                    else:
                        triggered = self.headers.get("X-Shopify-Triggered-At")
                        outcome = server.deleted(webhook_id, domain, topic, payload, triggered)
                except psycopg.Error as exc:
                    log.step(phase="webhook", outcome="error", detail=type(exc).__name__)
                    return self._answer(503, "try again")  # Shopify retries; polling and reconciliation cover it
                log.step(phase="webhook", outcome=outcome, topic=topic, subject=subject, shop=domain)
                return self._answer(200, outcome)

            def _answer(self, status: int, text: str) -> None:
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: object) -> None:  # requests are logged as steps, without headers
                pass

        return Handler
