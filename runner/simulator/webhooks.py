"""The bulk_operations/finish webhook: once an operation completes, fails or is canceled, a signed POST to the
app's endpoint, as Shopify sends it (lowercase status and error code, X-Shopify-* headers, HMAC of the raw body)."""

import json
import threading
import uuid

import httpx

from runner.simulator.operations import iso
from runner.webhook import signature

FINISHED = ("COMPLETED", "FAILED", "CANCELED")


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

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for op in list(self.shopify.operations.values()):
                if op.number in self.sent or op.foreign_until is not None:
                    continue
                state = op.state(self.shopify.clock())
                if state["status"] in FINISHED:
                    self.sent.add(op.number)
                    self._deliver(op, state)

    def _deliver(self, op, state: dict) -> None:
        body = json.dumps({
            "admin_graphql_api_id": op.gid, "completed_at": iso(state["completedAt"]), "created_at": iso(op.created),
            "error_code": (state["errorCode"] or "").lower() or None, "status": state["status"].lower(),
            "type": "query",
        }).encode()  # fmt: skip
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Topic": "bulk_operations/finish",
            "X-Shopify-Hmac-SHA256": signature(self.shopify.auth.webhook_secret(op.shop, self.secret).encode(), body),
            "X-Shopify-Shop-Domain": domain(op.shop),
            "X-Shopify-Webhook-Id": str(uuid.uuid4()),
            "X-Shopify-API-Version": "2026-10",
        }
        try:
            if self._http.post(self.url, content=body, headers=headers).status_code == 200:
                self.delivered += 1
        except httpx.HTTPError:
            pass  # "Webhook delivery isn't always guaranteed": the app polls as well
