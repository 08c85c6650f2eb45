"""The runner's optional webhook receiver (`bulk-sync run --webhook-port`): Shopify's bulk_operations/finish
notification, verified (X-Shopify-Hmac-SHA256 over the raw body with the app's client secret) and handed to
bulk_sync.webhook_finished(), which dedupes on X-Shopify-Webhook-Id and makes the job poll at once. Polling stays
the fallback: a lost notification only costs the time until the next poll."""

import base64
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

from runner import log

TOPIC = "bulk_operations/finish"
MAX_BODY = 64 * 1024


def signature(secret: bytes, body: bytes) -> str:
    """What Shopify sends in X-Shopify-Hmac-SHA256: base64 of HMAC-SHA256 of the raw body."""
    return base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode()


class WebhookServer:
    def __init__(self, dsn: str, secret: str, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 - Shopify calls in
        self.dsn = dsn
        self.secret = secret.encode()
        self._db_lock = threading.Lock()
        self._db: psycopg.Connection | None = None
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]

    def start(self) -> None:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        log.step(phase="webhook", outcome="listening", detail=f"port {self.port}, topic {TOPIC}")

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._db is not None:
            self._db.close()

    def finished(self, webhook_id: str, domain: str, operation_id: str) -> str:
        """Hands a verified notification to the database; one connection, reopened when it broke."""
        with self._db_lock:
            try:
                return self._call(webhook_id, domain, operation_id)
            except psycopg.OperationalError:
                self._db = None
                return self._call(webhook_id, domain, operation_id)

    def _call(self, webhook_id: str, domain: str, operation_id: str) -> str:
        if self._db is None or self._db.closed:
            self._db = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
        query = "select bulk_sync.webhook_finished(%s, %s, %s)"
        return self._db.execute(query, (webhook_id, domain, operation_id)).fetchone()[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    return self._answer(413, "too large")
                body = self.rfile.read(length)
                sent = self.headers.get("X-Shopify-Hmac-SHA256") or ""
                if not hmac.compare_digest(sent.encode(), signature(server.secret, body).encode()):
                    log.step(phase="webhook", outcome="rejected", detail="HMAC does not match")
                    return self._answer(401, "invalid signature")
                topic = self.headers.get("X-Shopify-Topic")
                webhook_id = self.headers.get("X-Shopify-Webhook-Id") or ""
                if topic != TOPIC or not webhook_id:
                    return self._answer(200, "ignored")
                try:
                    operation_id = json.loads(body).get("admin_graphql_api_id") or ""
                except (ValueError, AttributeError):
                    return self._answer(400, "body is not a JSON object")
                domain = self.headers.get("X-Shopify-Shop-Domain") or ""
                try:
                    outcome = server.finished(webhook_id, domain, operation_id)
                except psycopg.Error as exc:
                    log.step(phase="webhook", outcome="error", detail=type(exc).__name__)
                    return self._answer(503, "try again")  # Shopify retries; polling covers it meanwhile
                log.step(phase="webhook", outcome=outcome, operation=operation_id, shop=domain)
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
