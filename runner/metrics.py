"""What one runner has done, as Prometheus metrics in a registry of its own (served by runner.health). Labels are
shop, phase, entity, outcome, kind and status class: never a token, a URL or anything unique to a job."""

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.tasks = Counter(
            "bulk_sync_tasks", "Tasks handled, by shop, phase and outcome", ["shop", "phase", "outcome"], registry=r
        )
        self.task_seconds = Histogram(
            "bulk_sync_task_seconds", "Time a task took from claim to report, by phase", ["phase"], registry=r,
            buckets=SECONDS,
        )  # fmt: skip
        self.in_flight = Gauge("bulk_sync_tasks_in_flight", "Tasks in hand now, by phase", ["phase"], registry=r)
        self.requests = Counter(
            "bulk_sync_shopify_requests", "Admin API requests, by shop and HTTP status class (2xx, 4xx, 5xx, error: "
            "no answer)", ["shop", "status_class"], registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "bulk_sync_shopify_request_seconds", "Time an Admin API request took, by shop", ["shop"], registry=r,
            buckets=SECONDS,
        )  # fmt: skip
        self.throttle_waits = Counter(
            "bulk_sync_throttle_waits", "Waits for a shop's API budget: before a call the budget would not cover "
            "(budget), or after Shopify refused one (throttled)", ["shop", "kind"], registry=r,
        )  # fmt: skip
        self.throttle_seconds = Counter(
            "bulk_sync_throttle_wait_seconds", "Seconds of those waits, by shop and kind", ["shop", "kind"], registry=r
        )
        self.download_bytes = Counter(
            "bulk_sync_download_bytes", "Bytes of exports downloaded in full, by shop", ["shop"], registry=r
        )
        self.lines_staged = Counter(
            "bulk_sync_lines_staged", "Export lines staged by accepted downloads, by shop", ["shop"], registry=r
        )
        self.imports = Counter(
            "bulk_sync_imports", "Import tasks done, by shop, entity and the job's status after (completed, failed, "
            "or another when the import stopped early)", ["shop", "entity", "outcome"], registry=r,
        )  # fmt: skip
        self.import_lines = Counter(
            "bulk_sync_import_lines", "Lines of completed imports (quarantined ones included), by shop and entity",
            ["shop", "entity"], registry=r,
        )  # fmt: skip
        self.token_grants = Counter(
            "bulk_sync_token_grants", "Access tokens granted by client credentials, by shop and reason (first_use, "
            "expiring, rejected)", ["shop", "reason"], registry=r,
        )  # fmt: skip
        self.claims = Counter(
            "bulk_sync_claims", "Claims that succeeded, by result (task, empty)", ["result"], registry=r
        )
        self.last_claim = Gauge(
            "bulk_sync_last_claim_timestamp_seconds", "When a claim last succeeded (Unix time)", registry=r
        )

    def watch(self, budget) -> None:
        """Serves the figures of the runner's connection budget (runner.pool.Budget) as they are at each scrape."""
        self.registry.register(_BudgetCollector(budget.stats))

    def claimed(self, tasks: int) -> None:
        self.claims.labels("task" if tasks else "empty").inc()
        self.last_claim.set(time.time())

    def request(self, shop: str, status: int | None, seconds: float) -> None:
        """One Admin API request answered with `status` (None: no answer) after `seconds`."""
        self.requests.labels(shop, f"{status // 100}xx" if status else "error").inc()
        self.request_seconds.labels(shop).observe(seconds)

    def waited(self, shop: str, kind: str, seconds: float) -> None:
        self.throttle_waits.labels(shop, kind).inc()
        self.throttle_seconds.labels(shop, kind).inc(seconds)

    def granted(self, shop: str, why: str) -> None:
        reason = {"first use": "first_use", "expiring": "expiring", "HTTP 401": "rejected"}.get(why, "other")
        self.token_grants.labels(shop, reason).inc()


class _BudgetCollector(Collector):
    """The database connections of the process: the budget, open, in use, the most open at once, and the waits
    for one (runner.pool.Budget.stats)."""

    def __init__(self, stats: Callable[[], dict[str, float]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        now = self._stats()
        for key, name, text in (
            ("size", "bulk_sync_db_connections_max", "Database connections this runner may hold (--db-connections)"),
            ("open", "bulk_sync_db_connections_open", "Database connections open now"),
            ("in_use", "bulk_sync_db_connections_in_use", "Database connections lent to a step now"),
            ("high_water", "bulk_sync_db_connections_high_water", "The most database connections open at once"),
        ):
            yield GaugeMetricFamily(name, text, value=now[key])
        yield CounterMetricFamily(
            "bulk_sync_db_connection_waits", "Steps that waited for a free database connection", value=now["waits"]
        )
        yield CounterMetricFamily(
            "bulk_sync_db_connection_wait_seconds", "Seconds steps waited for a free database connection",
            value=now["wait_seconds"],
        )  # fmt: skip
