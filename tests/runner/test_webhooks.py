"""The webhook receiver against bad clients, and deliveries in any order: a delivery older than the rows it names
changes nothing."""

import datetime as dt
import json
import socket
import threading
import time

import httpx
import psycopg
import pytest

from runner.pool import Budget
from runner.shared import signature
from runner.simulator.webhooks import Notifier
from runner.webhook import MAX_BODY, READ_SECONDS, WebhookServer
from tests.jobs import claim, report
from tests.sim import start

SECRET = "app-secret"  # noqa: S105 - a test secret
ORDER, VARIANT, PRODUCT = "gid://shopify/Order/1", "gid://shopify/ProductVariant/1", "gid://shopify/Product/1"


@pytest.fixture
def receiver(db: psycopg.Connection, dsn: str):
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
    budget = Budget(dsn, 2).open()
    server = WebhookServer(budget, {"SHOPIFY_CLIENT_SECRET": SECRET}, 0, "127.0.0.1")
    server.start()
    yield server
    server.stop()
    budget.close()


def _deliver(
    server: WebhookServer, topic: str, payload: dict, webhook_id: str, triggered: dt.datetime
) -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = {
        "X-Shopify-Topic": topic, "X-Shopify-Webhook-Id": webhook_id, "X-Shopify-Shop-Domain": "de.myshopify.com",
        "X-Shopify-Hmac-SHA256": signature(SECRET.encode(), body),
        "X-Shopify-Triggered-At": triggered.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }  # fmt: skip
    return httpx.post(f"http://127.0.0.1:{server.port}/", content=body, headers=headers, timeout=30)


def _raw(server: WebhookServer, request: bytes, wait: float = 0) -> bytes:
    """Sends raw bytes, waits, and returns what the receiver answered before closing (b"" when it just closed)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        time.sleep(wait)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_bad_lengths_get_400_or_413_without_a_read_and_a_slow_client_is_cut_off(receiver, capfd) -> None:
    head = b"POST / HTTP/1.1\r\nHost: x\r\n"
    for length in (b"abc", b"-1", b""):
        answer = _raw(receiver, head + b"Content-Length: " + length + b"\r\n\r\n{}")
        assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), (length, answer)
    answer = _raw(receiver, head + b"\r\n")  # no Content-Length at all
    assert b" 400 " in answer.split(b"\r\n")[0]
    answer = _raw(receiver, head + f"Content-Length: {MAX_BODY + 1}\r\n\r\n".encode())
    assert b" 413 " in answer.split(b"\r\n")[0]
    # a client that declares 100 bytes, sends 2 and waits is cut off, while others are served meanwhile
    started = time.monotonic()
    slow = threading.Thread(target=lambda: _raw(receiver, head + b"Content-Length: 100\r\n\r\n{}"))
    slow.start()
    now = dt.datetime.now(dt.UTC)
    for n in range(5):
        assert _deliver(receiver, "orders/delete", {"id": 99}, f"w{n}", now).status_code == 200
    slow.join(timeout=READ_SECONDS * 6)
    assert not slow.is_alive()
    assert time.monotonic() - started < READ_SECONDS * 6
    assert "Traceback" not in capfd.readouterr().err


def test_a_delivery_triggered_before_the_export_that_wrote_the_rows_changes_nothing(
    db: psycopg.Connection, receiver
) -> None:
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-01', '{orders}')")
    (task,) = claim(db)
    report(db, "report_operation_started", task["job_id"], task["fence"], "gid://shopify/BulkOperation/1")
    started = db.execute("select operation_started_at from bulk_sync.jobs where id = %s", (task["job_id"],)).fetchone()[
        0
    ]
    db.execute(
        "insert into shopify.orders (id, shop, raw, import_job) values (%s, 'DE', '{}', %s)", (ORDER, task["job_id"])
    )
    db.execute(
        """insert into shopify.skus (id, shop, product_id, updated_at, raw, import_job)
           values (%s, 'DE', %s, %s, '{}', %s)""",
        (VARIANT, PRODUCT, started - dt.timedelta(days=1), task["job_id"]),
    )
    before, after = started - dt.timedelta(seconds=1), started + dt.timedelta(seconds=1)
    live = "select (select deleted_at is null from shopify.orders), (select deleted_at is null from shopify.skus)"
    # stale: triggered before the export started, or a product older than the stored variant
    assert _deliver(receiver, "orders/delete", {"id": 1}, "o1", before).text == (
        "0 order deleted, 1 ignored as stale (the delivery is older than the stored row)"
    )
    assert _deliver(receiver, "products/delete", {"id": 1}, "p1", before).text.startswith("0 variants deleted, 1 ig")
    old_product = {"id": 1, "variants": [], "updated_at": (started - dt.timedelta(days=2)).isoformat()}
    assert _deliver(receiver, "products/update", old_product, "p2", after).text.startswith("0 variants deleted, 1 ig")
    assert db.execute(live).fetchone() == (True, True)
    outcomes = db.execute("select webhook_id, outcome from bulk_sync.webhooks order by webhook_id").fetchall()
    assert [w for w, o in outcomes if "ignored as stale" in o] == ["o1", "p1", "p2"]
    # fresh ones apply
    assert _deliver(receiver, "orders/delete", {"id": 1}, "o2", after).text == "1 order deleted"
    new_product = {"id": 1, "variants": [], "updated_at": after.isoformat()}
    assert _deliver(receiver, "products/update", new_product, "p3", after).text == "1 variants deleted"
    assert db.execute(live).fetchone() == (False, False)


def test_the_simulator_says_when_it_triggered_a_delivery_and_can_deliver_late() -> None:
    got: list[tuple[str, str, dict]] = []
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            got.append((self.headers["X-Shopify-Topic"], self.headers["X-Shopify-Triggered-At"], body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    listener = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    server = start(("DE",), days=1, faults={"DE": {"webhook_late": 1}},
                   webhook_url=f"http://127.0.0.1:{listener.server_address[1]}/", webhook_secret="s")  # noqa: S106  # fmt: skip
    try:
        assert isinstance(server.shopify.notifier, Notifier)
        before = dt.datetime.now(dt.UTC)
        server.shopify.change("DE", deleted_orders=2, deleted_variants=1)
        deadline = time.monotonic() + 30
        while len(got) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        # made in the order orders, orders, product; the first was held back and arrives after the others
        topics = [t.split("/")[0] for t, _, _ in got]
        assert topics == ["orders", "products", "orders"], got
        for _, triggered, body in got:
            at = dt.datetime.fromisoformat(triggered)
            assert before - dt.timedelta(seconds=1) <= at <= dt.datetime.now(dt.UTC)
            if "variants" in body:  # the product, updated when its variant was deleted (in whole seconds)
                assert at - dt.timedelta(seconds=2) < dt.datetime.fromisoformat(body["updated_at"]) <= at
    finally:
        server.stop()
        listener.shutdown()
