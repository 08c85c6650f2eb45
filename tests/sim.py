"""Starting the simulator in-process on a free port, and talking to it over real HTTP."""

import datetime as dt
import time
from types import SimpleNamespace

import httpx
from graphql import parse

from runner.shopify_client import api_at_least
from runner.simulator.api import Request
from runner.simulator.auth import App
from runner.simulator.clock import Clock
from runner.simulator.data import Settings, ShopData
from runner.simulator.faults import Faults
from runner.simulator.operations import Timing
from runner.simulator.server import SimulatorServer
from runner.simulator.shopify import Config, Shopify
from runner.simulator.truth import key

TOKEN = "shpat_test_token_0123456789"  # noqa: S105 - a recognisable fake
RUN = "mutation run($q: String!, $g: Boolean) { bulkOperationRunQuery(query: $q, groupObjects: $g) { bulkOperation { id status } userErrors { field message code } } }"  # noqa: E501
FIELDS = "id status errorCode objectCount rootObjectCount fileSize url partialDataUrl completedAt"
POLL = f"query poll($id: ID!) {{ bulkOperation(id: $id) {{ {FIELDS} }} }}"
POLL_BY_NODE = f"query poll($id: ID!) {{ node(id: $id) {{ ... on BulkOperation {{ {FIELDS} }} }} }}"  # before 2026-01
EDGES = "{ orders { edges { node { id } } } }"
ORDERS = (
    "{{ orders(query: \"created_at:>='{}' created_at:<'{}'\") {{ edges {{ node {{ id name createdAt "
    "total: totalPriceSet {{ shopMoney {{ amount currencyCode }} }} refunds {{ id createdAt }} "
    "lineItems {{ edges {{ node {{ id sku quantity }} }} }} }} }} }} }}"
)


def start(
    shops: tuple[str, ...] = ("DE",),
    faults: dict | None = None,
    days: int = 3,
    orders_per_day: int = 20,
    clock: Clock | None = None,
    apps: dict[str, App] | None = None,
    **timing: object,
) -> SimulatorServer:
    """A simulator on a free port; pass a frozen Clock to move its time by hand. Shops with an app accept only the
    tokens its client credentials grant; the others TOKEN."""
    settings = Settings(
        first_day=dt.date(2025, 9, 1), last_day=dt.date(2025, 9, days), orders_per_day=orders_per_day, spike_day=None
    )
    keys = (
        "bucket_size", "restore_rate", "throttle_with_429", "webhook_url", "webhook_secret", "token_lifetime",
        "export_cache",
    )  # fmt: skip
    bucket = {k: timing.pop(k) for k in keys if k in timing}
    options = {"start_latency": 0.05, "objects_per_second": 100_000.0, **timing}
    tokens = {code: None if code in (apps or {}) else TOKEN for code in shops}
    config = Config(tokens, settings, Timing(**options), **bucket, clock=clock or Clock(), apps=apps or {})
    return SimulatorServer(Shopify(config, Faults(faults or {}))).start()


def answer_from(shop: ShopData):
    """Answers a regular query as the simulator would for one shop's data, without a server: answer(query,
    variables) -> data (tests.jobs.fetch_all)."""

    def answer(query: str, variables: dict) -> dict:
        document = parse(query)
        request = Request(SimpleNamespace(shops={shop.code: shop}), shop.code, "2026-01", "", variables)
        result = request.execute(document, document.definitions[0])
        assert not result.errors, result.errors
        return result.data

    return answer


def next_second(db, server: SimulatorServer) -> None:
    """Waits until the database's clock has passed the whole second the simulator's clock is in now (updated_at has
    whole seconds: a window queued after this ends after the changes made before)."""
    second = int(server.shopify.clock())
    deadline = time.monotonic() + 60  # guards a hang only
    while db.execute("select extract(epoch from clock_timestamp()) < %s", (second + 1,)).fetchone()[0]:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def truth(server: SimulatorServer, codes, table: str) -> list[dict]:
    """The ground truth of `table` over the shops `codes`, ordered by id as runner.simulator.truth.database_rows."""
    return sorted((row for code in codes for row in server.shopify.truth(code, table)), key=key(table))


class Client:
    def __init__(self, server: SimulatorServer, shop: str = "DE", version: str = "2026-10") -> None:
        self.server = server
        self.version = version
        self.url = f"{server.shop_url(shop)}/admin/api/{version}/graphql.json"
        self.http = httpx.Client(headers={"X-Shopify-Access-Token": TOKEN}, timeout=10)

    def post(self, query: str, **variables: object) -> httpx.Response:
        return self.http.post(self.url, json={"query": query, "variables": variables})

    def gql(self, query: str, **variables: object) -> dict:
        response = self.post(query, **variables)
        assert response.status_code == 200, response.text
        return response.json()

    def run(self, bulk_query: str, group: bool | None = None) -> dict:
        """Starts a bulk query; without `group`, groupObjects is left to the version's default (an explicit null
        is an error, as at Shopify)."""
        grouping = {} if group is None else {"g": group}
        return self.gql(RUN, q=bulk_query, **grouping)["data"]["bulkOperationRunQuery"]

    def poll(self, op_id: str) -> dict:
        if api_at_least(self.version, "2026-01"):
            return self.gql(POLL, id=op_id)["data"]["bulkOperation"]
        return self.gql(POLL_BY_NODE, id=op_id)["data"]["node"]

    def wait(self, op_id: str, until: tuple[str, ...] = ("COMPLETED", "FAILED", "CANCELED", "EXPIRED")) -> dict:
        deadline = time.monotonic() + 120  # guards a hang only
        while time.monotonic() < deadline:
            op = self.poll(op_id)
            if op["status"] in until:
                return op
            time.sleep(0.02)
        raise AssertionError(f"operation {op_id} still {op['status']}")

    def written(self, op_id: str) -> None:
        """Waits until the simulator has written the operation's whole export (it does so in a thread)."""
        op = self.server.shopify.operations[int(op_id.rsplit("/", 1)[1])]
        deadline = time.monotonic() + 120  # guards a hang only
        while not op.written:
            assert time.monotonic() < deadline, f"export of {op_id} never written"
            time.sleep(0.01)

    def export(self, bulk_query: str, group: bool | None = None) -> tuple[dict, list[str]]:
        """Runs a bulk query to completion and downloads it: (final operation, lines)."""
        started = self.run(bulk_query, group)
        assert started["userErrors"] == [], started
        op = self.wait(started["bulkOperation"]["id"])
        assert op["status"] == "COMPLETED", op
        if op["url"] is None:
            return op, []
        body = httpx.get(op["url"], timeout=30)
        assert body.status_code == 200
        return op, body.text.splitlines(keepends=True)

    def stats(self) -> dict:
        return httpx.get(f"{self.server.base_url}/_admin/stats").json()


def day_query(day: str, next_day: str) -> str:
    return ORDERS.format(f"{day}T00:00:00Z", f"{next_day}T00:00:00Z")
