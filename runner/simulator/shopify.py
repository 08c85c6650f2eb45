"""The simulated Admin API: GraphQL requests for bulk operations per shop, cost-based throttling, counters, faults
and the ground truth. Transport-free; server.py puts it on HTTP."""

import datetime as dt
import math
import random
import secrets
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from graphql.language import FieldNode, FragmentDefinitionNode

from runner.simulator.api import Request, RequestError, internal_error
from runner.simulator.auth import App, Auth
from runner.simulator.bulk_rules import bulk_query_errors
from runner.simulator.clock import Clock
from runner.simulator.cost import MAX_COST, Cost, max_cost_exceeded
from runner.simulator.data import Catalogue, Settings, ShopData
from runner.simulator.export import Export
from runner.simulator.faults import Faults
from runner.simulator.operations import BulkOperation, ExportCache, Timing, iso, sign, write_export
from runner.simulator.rest import Limits
from runner.simulator.schema import concurrent_operations, schema
from runner.simulator.validation import RequestErrors, check, parse_document
from runner.simulator.validation import operation as select_operation
from runner.simulator.validation import variables as coerce_variables
from runner.simulator.webhooks import Notifier
from runner.simulator.webhooks import domain as default_domain

FIRST_OPERATION = 7_933_223_797_042


class LostReport(Exception):
    """The fault lost_start_report: the operation exists, and the answer must never reach the caller."""


@dataclass
class Bucket:
    size: float
    restore: float
    available: float
    at: float

    def take(self, cost: float, now: float) -> float:
        """Takes `cost` points; returns 0, or the seconds to wait when the bucket holds too few."""
        self.available = min(self.size, self.available + (now - self.at) * self.restore)
        self.at = now
        if self.available < cost:
            return (cost - self.available) / self.restore
        self.available -= cost
        return 0.0

    def refund(self, points: float) -> None:
        self.available = min(self.size, self.available + points)

    def status(self) -> dict:
        return {
            "maximumAvailable": _number(self.size),
            "currentlyAvailable": math.floor(self.available),
            "restoreRate": _number(self.restore),
        }


def _number(value: float) -> float | int:
    return int(value) if value == int(value) else value


@dataclass
class Config:
    tokens: dict[str, str | None]  # shop code -> the static access token it accepts (None: only granted ones)
    data: Settings = field(default_factory=Settings)
    timing: Timing = field(default_factory=Timing)
    bucket_size: float = 2000.0
    restore_rate: float = 100.0
    throttle_with_429: bool = False
    directory: Path | None = None
    webhook_url: str | None = None  # where bulk_operations/finish notifications go (none: not sent)
    webhook_secret: str = ""
    clock: Clock = field(default_factory=Clock)  # what "now" is for every operation, URL and bucket
    apps: dict[str, App] = field(default_factory=dict)  # shop code -> the app whose client credentials it grants
    token_lifetime: float = 86_399  # seconds a granted token is valid (expires_in)
    domains: dict[str, str] = field(default_factory=dict)  # shop code -> its domain (default <code>.myshopify.com)
    export_cache: Path | None = None  # exports kept here by shop, data and query, and served again (benchmarks)


class Shopify:
    """Every simulated shop, their operations and the counters."""

    def __init__(self, config: Config, faults: Faults | None = None) -> None:
        self.config = config
        self.clock = config.clock
        self.faults = faults or Faults(seed=config.data.seed)
        self.secret = secrets.token_bytes(32)
        self.auth = Auth(config.tokens, config.apps, config.clock, config.token_lifetime)
        self.rest_limits = Limits(config.clock)
        self._tmp = None
        if config.directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="bulk-sync-simulator-")
            config.directory = Path(self._tmp.name)
        catalogue = Catalogue(config.data)
        self.shops = {
            code: ShopData(code, index, config.data, catalogue) for index, code in enumerate(sorted(config.tokens))
        }
        now = self.clock()
        self.buckets = {
            code: Bucket(config.bucket_size, config.restore_rate, config.bucket_size, now) for code in self.shops
        }
        self.operations: dict[int, BulkOperation] = {}
        self.counters: Counter[tuple[str, str]] = Counter()
        self.max_concurrent: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._next = FIRST_OPERATION
        self._rng = random.Random(f"{config.data.seed}:changes")
        self.cache = ExportCache(config.export_cache) if config.export_cache else None
        self.revisions: Counter[str] = Counter()  # per shop, how many changes its data has had (a cache key part)
        threading.Thread(target=schema, daemon=True).start()  # built once per process, before the first request
        self.notifier = None
        if config.webhook_url:
            self.notifier = Notifier(self, config.webhook_url, config.webhook_secret)
            self.notifier.start()

    def close(self) -> None:
        if self.notifier is not None:
            self.notifier.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    # -- requests ---------------------------------------------------------------------------------------------
    def domain(self, code: str) -> str:
        """The shop's domain: as configured, else <code>.myshopify.com (also its webhooks' X-Shopify-Shop-Domain)."""
        return self.config.domains.get(code) or default_domain(code)

    def shop_for_host(self, host: str) -> str | None:
        """The shop whose domain a Host header names; when only one shop is served, that one whatever the host."""
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        for code in self.shops:
            if self.domain(code) == name.lower():
                return code
        return next(iter(self.shops)) if len(self.shops) == 1 else None

    def graphql(self, shop: str, version: str, body: dict, base_url: str) -> tuple[int, dict, dict]:
        """Executes one GraphQL request; returns (HTTP status, JSON body, extra headers)."""
        self.counters[(shop, "requests")] += 1
        query, variables = body.get("query"), body.get("variables") or {}
        name = body.get("operationName")
        if not isinstance(query, str) or not isinstance(variables, dict) or not isinstance(name, str | None):
            return 400, {"errors": [{"message": "Bad Request: query must be a string"}]}, {}
        try:
            document = parse_document(query)
            check(document, version)
            operation = select_operation(document, name)
            coerced = coerce_variables(operation, variables)
        except RequestErrors as exc:
            return 200, {"errors": exc.errors}, {}
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        costs = Cost(schema(), operation, fragments, coerced)
        cost = costs.requested()
        if cost > MAX_COST:
            return 200, {"errors": [max_cost_exceeded(cost)]}, {}
        bucket = self.buckets[shop]
        with self._lock:
            wait = bucket.take(cost, self.clock())
        nodes = any(isinstance(s, FieldNode) and s.name.value == "nodes" for s in operation.selection_set.selections)
        if nodes and self.faults.hit(shop, "nodes_5xx"):
            return 503, {"errors": [{"message": "Service Unavailable"}]}, {}
        forced = self.faults.hit(shop, "graphql_throttled") or (nodes and self.faults.hit(shop, "nodes_throttled"))
        as_429 = not (wait or forced) and self.faults.hit(shop, "graphql_429")
        if wait or forced or as_429:
            self.counters[(shop, "throttled")] += 1
            extensions = {"cost": {"requestedQueryCost": cost, "actualQueryCost": None,
                                   "throttleStatus": bucket.status()}}  # fmt: skip
            if as_429 or (wait and self.config.throttle_with_429):
                retry = str(max(1, math.ceil(wait)))
                return 429, {"errors": [{"message": "Too Many Requests"}]}, {"Retry-After": retry}
            error = {"message": "Throttled", "extensions": {"code": "THROTTLED",
                     "documentation": "https://shopify.dev/api/usage/rate-limits"}}  # fmt: skip
            return 200, {"errors": [error], "extensions": extensions}, {}
        result = Request(self, shop, version, base_url, variables).execute(document, operation)
        errors = []
        for error in result.errors or ():
            if isinstance(error.original_error, LostReport):
                self.counters[(shop, "lost_start_reports")] += 1
                return 200, {}, {"X-Simulator-Reset": "1"}
            if error.original_error is not None and not isinstance(error.original_error, RequestError):
                # the simulator's own failure: answered as Shopify answers its own, and told on stderr
                self.counters[(shop, "internal_errors")] += 1
                print(f"simulator: internal error: {error.original_error!r}", file=sys.stderr, flush=True)
                errors.append(internal_error())
                continue
            code = getattr(error.original_error, "code", "INTERNAL_SERVER_ERROR")
            errors.append({"message": error.message, "locations": [loc.formatted for loc in error.locations or ()],
                           "path": error.path, "extensions": {"code": code}})  # fmt: skip
        response: dict = {"data": result.data} if not errors else {"errors": errors, "data": result.data}
        actual = min(cost, costs.actual(result.data))
        with self._lock:
            bucket.refund(cost - actual)  # the bucket takes the requested cost, then gives back what was not used
        response["extensions"] = {
            "cost": {"requestedQueryCost": cost, "actualQueryCost": actual, "throttleStatus": bucket.status()}
        }
        return 200, response, {}

    def list_operations(self, shop: str, search: str | None, sort_key: str | None) -> list[BulkOperation]:
        """The app's operations of this shop for bulkOperations: filtered by status:, operation_type:, created_at:
        and id:, sorted by CREATED_AT (or COMPLETED_AT), oldest first."""
        ops = self.operations_of(shop)
        now = self.clock()
        for term in str(search or "").split():
            ops = [op for op in ops if _matches(term, op, op.state(now))]
        if sort_key == "COMPLETED_AT":
            return sorted(ops, key=lambda op: op.state(now)["completedAt"] or 0)
        return sorted(ops, key=lambda op: op.number)

    def operations_of(self, shop: str) -> list[BulkOperation]:
        # tuple() copies the values without running Python code in between, so another shop's thread adding an
        # operation cannot change the dict while it is read ("dictionary changed size during iteration")
        return [op for op in tuple(self.operations.values()) if op.shop == shop]

    def current(self, shop: str) -> BulkOperation | None:
        """The shop's most recent operation (what currentBulkOperation answers, terminal or not)."""
        mine = self.operations_of(shop)
        return max(mine, key=lambda op: op.number) if mine else None

    def lookup(self, shop: str, ident, strict: bool) -> BulkOperation | None:
        if not isinstance(ident, str) or not ident.startswith("gid://shopify/"):
            raise RequestError(f"Invalid global id '{ident}'", "argumentLiteralsIncompatible")
        kind, _, number = ident.removeprefix("gid://shopify/").partition("/")
        if kind != "BulkOperation":
            if strict:
                raise RequestError(f"Invalid id: {ident}", "RESOURCE_NOT_FOUND")
            return None
        op = self.operations.get(int(number)) if number.isdigit() else None
        return op if op is not None and op.shop == shop else None

    # -- bulk operations --------------------------------------------------------------------------------------
    def run_query(self, shop: str, version: str, query: str, group: bool) -> tuple[BulkOperation | None, list]:
        """Starts a bulk query: (the operation, []) or (None, Shopify's userErrors)."""
        document, errors = bulk_query_errors(query, version)
        if errors:
            return None, [_user_error(m, "INVALID") for m in errors]
        now = self.clock()
        with self._lock:
            if self.faults.hit(shop, "foreign_op"):
                self._new_op(shop, "{ foreign }", now, foreign_until=now + self.config.timing.foreign_op_seconds)
            blocking = [op for op in self.operations_of(shop) if op.active(now)]
            if len(blocking) >= concurrent_operations(version):
                self.counters[(shop, "in_progress_refusals")] += 1
                ids = ", ".join(op.gid for op in sorted(blocking, key=lambda o: o.number))
                message = f"A bulk query operation for this app and shop is already in progress: {ids}."
                return None, [_user_error(message, "OPERATION_IN_PROGRESS", None)]
            if any(o.query == query for o in blocking):
                self.counters[(shop, "duplicate_starts")] += 1  # the same query while the first one is alive
            op = self._new_op(shop, query, now)
            self.counters[(shop, "operations_started")] += 1
            op.report_lost = self.faults.hit(shop, "lost_start_report")
            self.max_concurrent[shop] = max(self.max_concurrent[shop], len(blocking) + 1)
        for kind, code in (("op_access_denied", "ACCESS_DENIED"), ("op_failed_internal", "INTERNAL_SERVER_ERROR"),
                           ("op_failed_timeout", "TIMEOUT"), ("op_failed_null", "")):  # fmt: skip
            if op.fail_with is None and self.faults.hit(shop, kind):
                op.fail_with = code
        op.stuck = op.fail_with is None and self.faults.hit(shop, "op_stuck")
        op.expire_on_handout = self.faults.hit(shop, "op_url_expired")
        export = Export(self.shops[shop], document, group)
        malformed = self.faults.hit(shop, "malformed_line")
        key, parts = "", None
        if self.cache:
            same = (shop, tuple(self.shops), self.config.data, self.revisions[shop], group)
            key = self.cache.key(*same, query)
            if split := export.day_parts():
                search, days = split
                rest = query.replace(search, "")  # the query but for its window: what each day's part shares
                parts = [(self.cache.key(*same, rest, day.created[0].isoformat()), day) for day in days]
        threading.Thread(
            target=write_export,
            args=(op, export, self.config.directory, malformed, self.cache, key, parts),
            daemon=True,
        ).start()
        if op.report_lost:
            raise LostReport(op.gid)
        return op, []

    def _new_op(self, shop: str, query: str, now: float, foreign_until: float | None = None) -> BulkOperation:
        op = BulkOperation(self._next, shop, query, now, self.config.timing, lifetime=self.config.timing.url_lifetime)
        op.foreign_until = foreign_until
        if foreign_until is not None:
            op.written = True
        self.operations[op.number] = op
        self._next += 1
        return op

    def cancel(self, shop: str, ident) -> tuple[BulkOperation | None, list]:
        """Cancels an operation: (the operation, []) or Shopify's userErrors beside it."""
        op = self.lookup(shop, ident, strict=False)
        if op is None or op.foreign_until is not None:
            return None, [{"field": ["id"], "message": "Bulk operation does not exist"}]
        status = op.state(self.clock())["status"]
        if status not in ("CREATED", "RUNNING"):
            return op, [{"field": None, "message": f"A bulk operation cannot be canceled when it is {status.lower()}"}]
        op.canceled_at = self.clock()
        return op, []

    def describe(self, op: BulkOperation, base_url: str) -> dict:
        """Every field of a BulkOperation as the API returns it (counts as strings)."""
        now = self.clock()
        state = op.state(now)
        status, count = state["status"], state["objectCount"]
        completed = status == "COMPLETED"
        roots = op.roots if completed else (op.roots * count // op.lines if op.lines else 0)
        has_partial = status == "FAILED" and state["errorCode"] in (None, "INTERNAL_SERVER_ERROR") and op.partial_lines
        if completed and op.lines and op.expire_on_handout:
            # The fault: the URL handed out now has expired by the time anyone uses it, and so has the operation.
            op.expire_on_handout = False
            op.lifetime = now - state["completedAt"] - 1e-6
        return {
            "id": op.gid,
            "status": status,
            "errorCode": state["errorCode"],
            "createdAt": iso(op.created),
            "completedAt": iso(state["completedAt"]),
            "objectCount": str(count),
            "rootObjectCount": str(roots),
            "fileSize": str(op.size) if completed and op.lines else None,
            "url": self.url(op, base_url, state["completedAt"]) if completed and op.lines else None,
            "partialDataUrl": self.url(op, base_url, state["completedAt"], partial=True) if has_partial else None,
            "query": op.query,
            "type": "QUERY",
        }

    def url(self, op: BulkOperation, base_url: str, completed: float, partial: bool = False) -> str:
        path = f"/{op.shop.lower()}/bulk/bulk-{op.number}{'.partial' if partial else ''}.jsonl"
        expires = int(completed + op.lifetime)
        signature = sign(self.secret, path, expires)
        return (
            f"{base_url}{path}?GoogleAccessId=simulator&Expires={expires}&Signature={signature}"
            f"&response-content-disposition=attachment%3B+filename%3D%22bulk-{op.number}.jsonl%22"
            "&response-content-type=application%2Fjsonl"
        )

    def download(self, path: str, expires: str | None, signature: str | None) -> tuple[int, str, object]:
        """Checks a signed download; returns (status, reason, (operation, byte count) or an XML error body)."""
        if not expires or not signature or not expires.isdigit() or signature != sign(self.secret, path, int(expires)):
            return (
                403,
                "SignatureDoesNotMatch",
                _gcs_error(
                    "SignatureDoesNotMatch",
                    "The request signature we calculated does not match the signature you provided.",
                ),
            )
        if int(expires) < self.clock():
            return 400, "ExpiredToken", _gcs_error("ExpiredToken", "The provided token has expired.")
        name = path.rsplit("/", 1)[-1]
        number = name.removeprefix("bulk-").split(".")[0]
        op = self.operations.get(int(number)) if number.isdigit() else None
        if op is None or op.path is None:
            return 404, "NoSuchKey", _gcs_error("NoSuchKey", "The specified key does not exist.")
        size = op.partial_size if name.endswith(".partial.jsonl") else op.size
        return 200, "OK", (op, size)

    # -- admin ------------------------------------------------------------------------------------------------
    def stats(self) -> dict:
        shops = {}
        for code in self.shops:
            shops[code] = {
                name: self.counters[(code, name)]
                for name in ("requests", "operations_started", "in_progress_refusals", "throttled", "duplicate_starts")
            }
            shops[code]["tokens_issued"] = self.auth.issued[code]
            shops[code]["tokens_rejected"] = self.auth.rejected[code]
            shops[code]["max_concurrent"] = self.max_concurrent[code]
        delivered = self.notifier.delivered if self.notifier else 0
        cache = {"hits": self.cache.hits, "misses": self.cache.misses} if self.cache else None
        return {"shops": shops, "faults": self.faults.summary(), "webhooks_delivered": delivered, "export_cache": cache}

    def change(
        self, shop: str, new_orders: int = 0, refunds: int = 0, edits: int = 0, deleted_orders: int = 0,
        deleted_variants: int = 0, refunded_lines: int = 0, deleted_customers: int = 0, redacted_customers: int = 0,
        edited_products: int = 0, deleted_products: int = 0,
    ) -> dict:  # fmt: skip
        """Live changes at the current time: new orders, refunds, edits of existing orders, deleted orders and
        deleted variants (with their webhooks when notifications are on); refunded_lines: a new order of that many
        lines, all refunded at once; customers deleted or redacted (their personal data emptied), products renamed or
        deleted with their variants."""
        now = dt.datetime.fromtimestamp(int(self.clock()), dt.UTC)
        data = self.shops[shop]
        with self._lock:
            self.revisions[shop] += 1
            added = data.add_orders(new_orders, now, self._rng)
            refunded = data.refund_orders(refunds, now, self._rng)
            edited = data.edit_orders(edits, now, self._rng)
            gone_orders = data.delete_orders(deleted_orders, self._rng, now)
            gone_variants = data.delete_variants(deleted_variants, now, self._rng)
            large = [data.add_refunded_order(refunded_lines, now, self._rng)] if refunded_lines else []
            data.version += 1
            gone_customers = data.delete_customers(deleted_customers, self._rng)
            redacted = data.redact_customers(redacted_customers, now, self._rng)
            renamed = data.edit_products(edited_products, now, self._rng)
            gone_products = data.delete_products(deleted_products, self._rng)
            data.version += 1
        if self.notifier is not None:
            self.notifier.changes(shop, gone_orders, gone_variants, tuple(gone_customers), tuple(renamed))
        return {"added": added, "refunded": refunded, "edited": edited, "deleted_orders": gone_orders,
                "deleted_variants": [v["id"] for v in gone_variants], "large_refunds": large,
                "deleted_customers": gone_customers, "redacted_customers": redacted, "edited_products": renamed,
                "deleted_products": gone_products}  # fmt: skip

    def truth(self, shop: str, table: str) -> Iterator[dict]:
        from runner.simulator.truth import rows

        return rows(self.shops[shop], table)


def _matches(term: str, op: BulkOperation, state: dict) -> bool:
    """One term of bulkOperations' search: status:, operation_type:, created_at: (with :, :<, :<=, :>, :>=) or id:."""
    name, _, value = term.partition(":")
    value = value.strip("'\"")
    if name == "status":
        return state["status"].lower() == value.lower()
    if name == "operation_type":
        return value.lower() == "query"
    if name == "id":
        return op.gid.endswith(f"/{value}") or op.gid == value
    if name == "created_at":
        compare, moment = "=", value
        for prefix in (">=", "<=", ">", "<"):
            if value.startswith(prefix):
                compare, moment = prefix, value[len(prefix) :].strip("'\"")
                break
        try:
            bound = dt.datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return False
        return {"=": op.created == bound, ">=": op.created >= bound, "<=": op.created <= bound,
                ">": op.created > bound, "<": op.created < bound}[compare]  # fmt: skip
    return True


def _user_error(message: str, code: str, fld: list | None = ("query",)) -> dict:
    return {"field": list(fld) if fld else None, "message": message, "code": code}


def _gcs_error(code: str, message: str) -> bytes:
    return (
        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
    )
