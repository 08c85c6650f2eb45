"""The webhook receiver against bad clients."""

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
from runner.webhook import MAX_BODY, READ_SECONDS, WebhookServer

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
