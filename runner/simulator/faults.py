"""Fault injection: per shop (or "*" for every shop), each kind either a probability (0 < p < 1) per opportunity or
a count (n >= 1) of the next opportunities. Every injected fault is counted."""

import json
import random
import threading
from collections import Counter
from pathlib import Path

KINDS = {
    "op_failed_internal": "operation FAILED with INTERNAL_SERVER_ERROR (partialDataUrl set)",
    "op_failed_timeout": "operation FAILED with TIMEOUT",
    "op_failed_null": "operation FAILED with a null errorCode (partialDataUrl set)",
    "op_access_denied": "operation FAILED with ACCESS_DENIED",
    "op_stuck": "operation stays RUNNING forever",
    "op_url_expired": "the export URL handed out has expired by the time it is used",
    "foreign_op": "another operation of the same app occupies a slot for a while",
    "malformed_line": "one line of the export is not valid JSON",
    "graphql_5xx": "HTTP 503 on a GraphQL request",
    "graphql_reset": "connection reset on a GraphQL request",
    "graphql_throttled": "THROTTLED error whatever the bucket holds",
    "graphql_internal": "INTERNAL_SERVER_ERROR as a GraphQL error in an HTTP 200, as Shopify answers its own failures",
    "graphql_429": "HTTP 429 with Retry-After on a GraphQL request",
    "nodes_throttled": "THROTTLED error on a nodes(ids:) query whatever the bucket holds",
    "nodes_5xx": "HTTP 503 on a nodes(ids:) query",
    "download_5xx": "HTTP 503 on a download",
    "download_reset": "connection reset on a download, before any byte",
    "download_cut": "download cut off midway",
    "grant_5xx": "HTTP 503 on a client credentials grant",
    "webhook_lost": "a webhook notification is never delivered",
    "webhook_late": "a webhook notification is delivered a second late, after the ones that follow it",
    "lost_start_report": "bulkOperationRunQuery makes the operation, then the connection resets before the answer",
    "grant_refused": "invalid_client on a client credentials grant, as for an app no longer installed",
}


class FaultError(ValueError):
    """A fault specification that cannot be used."""


class Faults:
    def __init__(self, spec: dict | None = None, seed: int = 1) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(f"{seed}:faults")
        self.counts: Counter[tuple[str, str]] = Counter()
        self._rules: dict[str, dict[str, float]] = {}
        self.replace(spec or {})

    def replace(self, spec: dict) -> None:
        """Sets new rules: {"DA": {"op_failed_timeout": 2}, "*": {"graphql_5xx": 0.05}}."""
        rules: dict[str, dict[str, float]] = {}
        for shop, kinds in spec.items():
            if not isinstance(kinds, dict):
                raise FaultError(f"faults for {shop} must be an object of kind: value")
            for kind, value in kinds.items():
                if kind not in KINDS:
                    raise FaultError(f"unknown fault kind {kind!r} (known: {', '.join(KINDS)})")
                if not isinstance(value, int | float) or value < 0 or (value >= 1 and value != int(value)):
                    raise FaultError(f"fault {kind} for {shop}: use a probability below 1 or a whole count")
                rules.setdefault(shop.upper() if shop != "*" else shop, {})[kind] = value
        with self._lock:
            self._rules = rules

    @classmethod
    def load(cls, path: Path, seed: int = 1) -> "Faults":
        try:
            return cls(json.loads(path.read_text()), seed)
        except (OSError, json.JSONDecodeError) as exc:
            raise FaultError(f"cannot read fault file {path}: {exc}") from None

    def hit(self, shop: str, kind: str) -> bool:
        """Whether to inject `kind` now for `shop` (counted when it does)."""
        with self._lock:
            for key in (shop, "*"):
                rules = self._rules.get(key, {})
                value = rules.get(kind, 0)
                if value >= 1:
                    rules[kind] = value - 1
                    break
                if value > 0 and self._rng.random() < value:
                    break
            else:
                return False
            self.counts[(shop, kind)] += 1
            return True

    def summary(self) -> dict[str, dict[str, int]]:
        with self._lock:
            out: dict[str, dict[str, int]] = {}
            for (shop, kind), n in sorted(self.counts.items()):
                out.setdefault(shop, {})[kind] = n
            return out
