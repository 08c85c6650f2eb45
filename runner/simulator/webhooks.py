"""Webhooks as Shopify sends them (X-Shopify-* headers, X-Shopify-Triggered-At among them, HMAC of the raw body with
the shop's app secret): bulk_operations/finish once an operation completes, fails or is canceled (lowercase status
and error code), and the topics of live changes: orders/delete, customers/delete, products/update (the product as
REST gives it, with the variants left) and products/delete. Shopify does not promise their order: the fault
webhook_late holds a delivery back until after the ones that follow it."""

import datetime as dt
import json
import threading
import time
import uuid

import httpx

from runner.shared import signature
from runner.simulator import rest
from runner.simulator.operations import iso
from runner.simulator.rest import rest_id

FINISHED = ("COMPLETED", "FAILED", "CANCELED")
LATE_SECONDS = 1.0  # how long a delivery hit by webhook_late is held back


def _precise(moment: float) -> str:
    """A moment as Shopify writes X-Shopify-Triggered-At: UTC, with fractions of a second."""
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def domain(code: str) -> str:
    """The simulated shop's myshopify domain."""
    return f"{code.lower()}.myshopify.com"


class Notifier:
    """Watches the operations and delivers one notification per finished operation (best effort, like Shopify)."""

    def __init__(self, shopify, url: str, secret: str, interval: float = 0.1) -> None:
        self.shopify = shopify
        self.url = url
        self.secret = secret  # the signing secret of shops without an app (with one: its client secret)
        self.interval = interval
        self.sent: set[int] = set()
        self.delivered = 0
        self._stop = threading.Event()
        self._http = httpx.Client(timeout=5)
        self._pending: list[tuple[str, str, dict, str]] = []  # (shop, topic, payload, triggered at) to deliver
        self._late: list[tuple[float, str, str, bytes, str]] = []  # (due, shop, topic, body, triggered at)
        self._lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def changes(
        self, shop: str, orders: list[str], variants: list[dict], customers: tuple[str, ...] = (),
        products: tuple[str, ...] = (),
    ) -> None:  # fmt: skip
        """Queues the notifications of deleted orders, variants and customers and of changed products: orders/delete
        and customers/delete with the REST id only; per product that lost variants or was changed, products/update
        with the product as REST gives it, listing the variants it still has (Shopify has no variant-delete topic),
        or products/delete with its id when none is left."""
        now = _precise(self.shopify.clock())
        notes = [(shop, "orders/delete", {"id": rest_id(o)}, now) for o in orders]
        notes += [(shop, "customers/delete", {"id": rest_id(c)}, now) for c in customers]
        current = {p["id"]: p for p in self.shopify.shops[shop].products()}
        for product in sorted({v["product"]["id"] for v in variants} | set(products)):
            if product in current:
                notes.append((shop, "products/update", rest.product(current[product]), now))
            else:
                notes.append((shop, "products/delete", {"id": rest_id(product)}, now))
        with self._lock:
            self._pending.extend(notes)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                pending, self._pending = self._pending, []
            for shop, topic, payload, triggered in pending:
                self._post(shop, topic, json.dumps(payload).encode(), triggered)
            with self._lock:
                due = [late for late in self._late if late[0] <= time.monotonic()]
                self._late = [late for late in self._late if late[0] > time.monotonic()]
            for _, shop, topic, body, triggered in due:
                self._post(shop, topic, body, triggered, late=False)
            for op in list(self.shopify.operations.values()):
                if op.number in self.sent or op.foreign_until is not None:
                    continue
                state = op.state(self.shopify.clock())
                if state["status"] in FINISHED:
                    self.sent.add(op.number)
                    self._deliver(op, state)

    def _post(self, shop: str, topic: str, body: bytes, triggered: str, late: bool = True) -> None:
        if self.shopify.faults.hit(shop, "webhook_lost"):
            return
        if late and self.shopify.faults.hit(shop, "webhook_late"):
            with self._lock:
                self._late.append((time.monotonic() + LATE_SECONDS, shop, topic, body, triggered))
            return
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Topic": topic,
            "X-Shopify-Hmac-SHA256": signature(self.shopify.auth.webhook_secret(shop, self.secret).encode(), body),
            "X-Shopify-Shop-Domain": self.shopify.domain(shop),
            "X-Shopify-Webhook-Id": str(uuid.uuid4()),
            "X-Shopify-API-Version": "2026-10",
            "X-Shopify-Triggered-At": triggered,
        }
        try:
            if self._http.post(self.url, content=body, headers=headers).status_code == 200:
                self.delivered += 1
        except httpx.HTTPError:
            pass  # "Webhook delivery isn't always guaranteed": the app polls and reconciles as well

    def _deliver(self, op, state: dict) -> None:
        body = json.dumps({
            "admin_graphql_api_id": op.gid, "completed_at": iso(state["completedAt"]), "created_at": iso(op.created),
            "error_code": (state["errorCode"] or "").lower() or None, "status": state["status"].lower(),
            "type": "query",
        }).encode()  # fmt: skip
        self._post(op.shop, "bulk_operations/finish", body, _precise(state["completedAt"] or self.shopify.clock()))
