"""The Shopify Admin GraphQL client for bulk operations: a timeout on every call, cost-based throttling, and every
failure turned into one of a few outcomes the database understands. It never logs or raises a token or a URL."""

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from runner import tls

RUN = (
    "mutation bulkSyncRun($query: String!) { bulkOperationRunQuery(query: $query) "
    "{ bulkOperation { id status } userErrors { field message code } } }"
)
FIELDS = "id status errorCode objectCount rootObjectCount fileSize url partialDataUrl"
POLL_BY_ID = f"query bulkSyncPoll($id: ID!) {{ bulkOperation(id: $id) {{ {FIELDS} }} }}"
POLL_BY_NODE = f"query bulkSyncPoll($id: ID!) {{ node(id: $id) {{ ... on BulkOperation {{ {FIELDS} }} }} }}"
# The app's operations created since a moment (2026-01+), and before 2026-01 the latest one: to adopt an operation
# whose start reached Shopify while its report was lost.
FIND = (
    "query bulkSyncFind($q: String!) { bulkOperations(first: 50, query: $q, sortKey: CREATED_AT, reverse: true) "
    "{ nodes { id status query createdAt } } }"
)
FIND_CURRENT = "query bulkSyncFind { currentBulkOperation(type: QUERY) { id status query createdAt } }"
ADOPTABLE = ("CREATED", "RUNNING", "COMPLETED")
# Which shop answers: before a shop's first start, its registered domain is compared with this.
WHO = "query bulkSyncWho { shop { myshopifyDomain } }"
CANCEL = "mutation bulkSyncCancel($id: ID!) { bulkOperationCancel(id: $id) { userErrors { message } } }"
COSTS = {RUN: 10, CANCEL: 10, FIND: 52}  # requested costs: a mutation 10, a connection 2 + its page size
REJECTIONS_AFTER_RENEWAL = 3  # 401s in a row right after a new token before the shop's task fails


class ShopifyError(Exception):
    """A failed call, already phrased for last_error (no token, no URL)."""


class Transient(ShopifyError):
    """5xx, a reset, a timeout: worth repeating after backoff."""


class Fatal(ShopifyError):
    """401/403, an invalid query: repeating will not help."""


class Throttled(ShopifyError):
    def __init__(self, wait: float) -> None:
        super().__init__(f"throttled, retry after {wait:.1f} s")
        self.wait = wait


class InProgress(ShopifyError):
    """OPERATION_IN_PROGRESS: another operation of this app holds the shop."""


@dataclass
class Operation:
    id: str
    status: str
    error_code: str | None
    object_count: int
    file_size: int | None
    url: str | None


def api_at_least(version: str, minimum: str) -> bool:
    return version == "unstable" or version >= minimum


class ShopifyClient:
    """One shop's Admin API. Thread-safe; keeps the shop's cost bucket as the last response described it. `auth`
    gives the access token (runner.tokens: a static one, or client credentials renewed on a 401). `on_request` is
    told each request's HTTP status (None: no answer) and seconds, `on_wait` each wait for the budget."""

    def __init__(
        self, base_url: str, auth, api_version: str, timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
        on_request: Callable[[int | None, float], None] = lambda status, seconds: None,
        on_wait: Callable[[float], None] = lambda seconds: None,
    ) -> None:  # fmt: skip
        self.endpoint = f"{base_url.rstrip('/')}/admin/api/{api_version}/graphql.json"
        self.api_version = api_version
        self.verified: str | None = None  # the registered domain the shop answering was found to be
        self.auth = auth
        self._http = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0), verify=tls.context())
        self._lock = threading.Lock()
        self._available: float | None = None
        self._restore = 50.0
        self._clock, self._sleep = clock, sleep
        self._on_request, self._on_wait = on_request, on_wait
        self._seen = clock()

    def close(self) -> None:
        self._http.close()

    def _wait_for_budget(self, cost: int) -> None:
        """Waits until the bucket, as the last throttleStatus said, holds `cost` points."""
        with self._lock:
            if self._available is None:
                return
            now = self._clock()
            available = self._available + (now - self._seen) * self._restore
            wait = max(0.0, (cost - available) / self._restore)
            self._available, self._seen = available - cost, now + wait
        if wait:
            self._on_wait(min(wait, 60.0))
            self._sleep(min(wait, 60.0))

    def _note_cost(self, body: dict) -> float | None:
        """Remembers throttleStatus; returns the wait Shopify implies when the call was throttled."""
        cost = (body.get("extensions") or {}).get("cost") or {}
        status = cost.get("throttleStatus") or {}
        if "currentlyAvailable" in status and status.get("restoreRate"):
            with self._lock:
                self._available = float(status["currentlyAvailable"])
                self._restore = float(status["restoreRate"])
                self._seen = self._clock()
        errors = body.get("errors") or []
        if any(isinstance(e, dict) and (e.get("extensions") or {}).get("code") == "THROTTLED" for e in errors):
            requested = cost.get("requestedQueryCost") or 10
            available = float(status.get("currentlyAvailable", 0))
            return max(1.0, (requested - available) / float(status.get("restoreRate") or 50.0))
        return None

    def call(self, query: str, variables: dict, cost: int | None = None) -> dict:
        """POSTs one GraphQL request (its requested cost: `cost`, else as COSTS says); returns `data` or raises
        Transient, Fatal or Throttled."""
        self._wait_for_budget(cost or COSTS.get(query, 1))
        token = self.auth.get()
        response = self._post(token, query, variables)
        if response.status_code == 401 and self.auth.renewable:
            # Expired or revoked: renew once and repeat. A 401 right after a new token may be another runner's
            # renewal racing this one (whether a grant revokes older tokens is not documented): transient, until
            # it happens three times in a row.
            response = self._post(self.auth.renew(token), query, variables)
            if response.status_code == 401:
                count = self.auth.rejected_after_renewal()
                if count >= REJECTIONS_AFTER_RENEWAL:
                    raise Fatal(f"HTTP 401 from Shopify {count} times in a row with a new token: the app has lost "
                                "access to the shop (uninstalled?)")  # fmt: skip
                raise Transient(f"HTTP 401 from Shopify with a new token ({count} of {REJECTIONS_AFTER_RENEWAL})")
        if response.status_code != 401:
            self.auth.accepted()
        if response.status_code == 429:
            raise Throttled(_retry_after(response))
        if response.status_code in (401, 403):
            raise Fatal(f"HTTP {response.status_code} from Shopify: the access token is invalid or lacks a scope")
        if response.status_code in (402, 404, 423):
            raise Fatal(f"HTTP {response.status_code} from Shopify: the shop is unavailable (frozen, unpaid or gone)")
        if response.status_code >= 500:
            raise Transient(f"HTTP {response.status_code} from Shopify")
        if response.status_code != 200:
            raise Fatal(f"HTTP {response.status_code} from Shopify")
        try:
            body = response.json()
        except ValueError:
            raise Transient("Shopify answered with a body that is not JSON") from None
        wait = self._note_cost(body)
        if wait is not None:
            raise Throttled(wait)
        if body.get("errors"):
            errors = [e for e in body["errors"] if isinstance(e, dict)]
            messages = "; ".join(str(e.get("message", e)) for e in errors)
            if any((e.get("extensions") or {}).get("code") == "INTERNAL_SERVER_ERROR" for e in errors):
                # Shopify's own failure, answered in a 200: as a 5xx, worth another try
                raise Transient(f"GraphQL error INTERNAL_SERVER_ERROR from Shopify: {messages[:300]}")
            raise Fatal(f"GraphQL error: {messages[:500]}")
        return body.get("data") or {}

    def _post(self, token: str, query: str, variables: dict) -> httpx.Response:
        headers = {"X-Shopify-Access-Token": token, "Content-Type": "application/json"}
        started, status = time.monotonic(), None
        try:
            response = self._http.post(self.endpoint, json={"query": query, "variables": variables}, headers=headers)
            status = response.status_code
            return response
        except httpx.TimeoutException:
            raise Transient("Shopify did not answer in time") from None
        except httpx.TransportError as exc:
            raise Transient(f"connection to Shopify failed ({type(exc).__name__})") from None
        finally:
            self._on_request(status, time.monotonic() - started)

    def run_query(self, bulk_query: str) -> str:
        """Starts a bulk operation; returns its id."""
        payload = self.call(RUN, {"query": bulk_query})["bulkOperationRunQuery"]
        errors = payload.get("userErrors") or []
        if any(e.get("code") == "OPERATION_IN_PROGRESS" for e in errors):
            raise InProgress(next(e["message"] for e in errors if e.get("code") == "OPERATION_IN_PROGRESS"))
        if any(e.get("code") == "LIMIT_REACHED" for e in errors):
            raise Transient("Shopify: bulk operations limit reached")
        if errors:
            raise Fatal("bulk query refused: " + "; ".join(e.get("message", "") for e in errors)[:500])
        return payload["bulkOperation"]["id"]

    def find_operation(self, bulk_query: str, since: dt.datetime) -> str | None:
        """The id of the newest operation created since `since` whose query is exactly `bulk_query` and that is not
        failed or canceled; None when there is none."""
        since_text = (since.astimezone(dt.UTC) - dt.timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
        if api_at_least(self.api_version, "2026-01"):
            found = self.call(FIND, {"q": f"operation_type:query created_at:>='{since_text}'"})
            nodes = (found.get("bulkOperations") or {}).get("nodes") or []
        else:
            nodes = [self.call(FIND_CURRENT, {}).get("currentBulkOperation")]
        for node in nodes:
            if (
                node
                and node.get("query") == bulk_query
                and node.get("status") in ADOPTABLE
                and (node.get("createdAt") or "") >= since_text
            ):
                return node["id"]
        return None

    def poll(self, operation_id: str) -> Operation:
        if api_at_least(self.api_version, "2026-01"):
            node = self.call(POLL_BY_ID, {"id": operation_id}).get("bulkOperation")
        else:
            node = self.call(POLL_BY_NODE, {"id": operation_id}).get("node")
        if not node:
            raise Fatal(f"Shopify does not know bulk operation {operation_id}")
        return Operation(
            id=node["id"],
            status=node["status"],
            error_code=node.get("errorCode"),
            object_count=int(node.get("objectCount") or 0),
            file_size=int(node["fileSize"]) if node.get("fileSize") is not None else None,
            url=node.get("url"),
        )

    def require_shop(self, code: str, domain: str) -> None:
        """Raises Fatal unless the shop answering is `domain`, the one registered as `code`; asked once per client
        and registered domain (a client is made again when its URL or API version changes)."""
        if self.verified != domain:
            answered = ((self.call(WHO, {}).get("shop") or {}).get("myshopifyDomain") or "").lower()
            if answered != domain.lower():
                raise Fatal(f"shop {code} is registered as {domain} but {answered or 'a shop without a domain'} "
                            f"answers at {self.endpoint.split('/admin/')[0]}: check SHOP_{code}_URL and the "
                            "credentials; no bulk operation started")  # fmt: skip
            self.verified = domain

    def cancel(self, operation_id: str) -> None:
        self.call(CANCEL, {"id": operation_id})


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(1.0, float(response.headers.get("Retry-After", "2")))
    except ValueError:
        return 2.0
