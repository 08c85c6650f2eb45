"""The runner's optional webhook receiver (`bulk-sync run --webhook-port`). Each delivery is verified
(X-Shopify-Hmac-SHA256 over the raw body, with the client secret of the app that serves the delivering shop:
runner.config.webhook_secret) and handed to the database, which dedupes on X-Shopify-Webhook-Id:
bulk_operations/finish to bulk_sync.webhook_finished() (the job polls at once), orders/delete, products/delete and
products/update to bulk_sync.webhook_deleted() (the deletion is marked at once). Webhooks are not guaranteed: polls,
snapshots and reconciliation cover a lost one."""

import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

from runner import log, sqlapi
from runner.config import webhook_secret
from runner.pool import Budget
from runner.shared import signature

TOPIC = "bulk_operations/finish"
DELETIONS = ("orders/delete", "products/delete", "products/update")  # Shopify has no variant-delete topic
MAX_BODY = 1024 * 1024  # a products/update payload lists every variant


class _Listener(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's listen backlog is 5: a burst of deliveries beyond it waits for TCP's retransmission (1 s, then
    # 3 s), and Shopify gives a delivery 1 s to connect (5 s in all) before it counts it failed and retries later
    request_queue_size = 128


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

    def deleted(self, webhook_id: str, domain: str, topic: str, payload: dict) -> str:
        """Hands a verified deletion notification to the database."""
        return self.budget.call(sqlapi.webhook_deleted, webhook_id, domain, topic, payload)

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
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    return self._answer(413, "too large")
                body = self.rfile.read(length)
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
                        outcome = server.deleted(webhook_id, domain, topic, payload)
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
