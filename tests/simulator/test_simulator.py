"""The simulator over real HTTP: Shopify's validation messages, limits, lifecycle, JSONL, throttling and faults."""

import json

import httpx
import pytest

from runner.simulator.clock import Clock
from runner.simulator.faults import Faults
from runner.simulator.truth import TABLES
from tests.sim import EDGES, RUN, TOKEN, Client, day_query, start


def test_tokens_are_checked(sim) -> None:
    url = f"{sim.shop_url('DE')}/admin/api/2026-10/graphql.json"
    wrong = httpx.post(url, json={"query": "{ shop { name } }"}, headers={"X-Shopify-Access-Token": "nope"})
    assert wrong.status_code == 401 and "Invalid API key or access token" in wrong.text
    assert httpx.post(url, json={"query": "{ x }"}).status_code == 401
    assert (
        httpx.post(url.replace("/de/", "/xx/"), json={}, headers={"X-Shopify-Access-Token": TOKEN}).status_code == 404
    )


SIX = "{ " + " ".join(f"o{i}: orders {{ edges {{ node {{ id }} }} }}" for i in range(6)) + " }"
INVALID = [
    ("{ shop { name } }", "Bulk queries must contain at least one connection."),
    (SIX, "Bulk queries cannot contain more than 5 connections."),
    (
        "{ customers { edges { node { id orders { edges { node { id lineItems { edges { node { id } } } } } } } } } }",
        "Bulk queries cannot contain connections with a nesting depth greater than 2.",
    ),
    (
        "{ orders { nodes { id } } }",
        "All connection fields in a bulk query must select their contents using 'edges' > 'node', e.g: "
        "'orders { edges { node {'. Selecting via 'nodes' is not supported. Invalid connection fields: 'orders'.",
    ),
    (
        "{ products { edges { node { title variants { edges { node { id } } } } } } }",
        "The parent 'node' field for a nested connection must select the 'id' field without an alias and must be "
        "of 'ID' return type. Connection fields without 'id': variants.",
    ),
    (
        "{ products { edges { node { pid: id variants { edges { node { id } } } } } } }",
        "The parent 'node' field for a nested connection must select the 'id' field without an alias and must be "
        "of 'ID' return type. Connection fields without 'id': variants.",
    ),
    (
        "{ orders { edges { node { id refunds { id transactions { edges { node { id } } } } } } } }",
        "Queries that contain a connection field within a list field are not currently supported.",
    ),
    (
        "{ orders { edges { node { id shippingLines { edges { node { title } } } } } } }",
        "Bulk queries can only contain connections whose nodes implement the Node interface. "
        "Invalid connection fields: shippingLines.",
    ),
    ('{ node(id: "gid://shopify/Order/1") { id } }', "Bulk queries cannot contain a top level `node` field."),
    ("mutation { bulkOperationCancel(id: 1) { userErrors { message } } }",
     "Invalid operation type. Only `query` operations are supported."),
    ("{ orders { edges { node { id }", "Invalid bulk query: syntax error, unexpected end of file"),
    ("{ orders { edges { node { id nope } } } }", "Field 'nope' doesn't exist on type 'Order'"),
    ("#" + "x" * 65_535 + "\n" + EDGES, None),
]  # fmt: skip


@pytest.mark.parametrize(("query", "message"), INVALID)
def test_invalid_bulk_queries_get_shopifys_messages(client: Client, query: str, message: str | None) -> None:
    result = client.run(query)
    size = len(query.encode())
    expected = message or f"Query is too large ({size} bytes; maximum is 65535 bytes)"
    assert result["bulkOperation"] is None
    assert result["userErrors"] == [{"field": ["query"], "message": expected, "code": "INVALID"}]
    assert client.stats()["shops"]["DE"]["operations_started"] == 0


def test_a_query_of_exactly_the_limit_is_accepted(client: Client) -> None:
    padding = 65_535 - len(EDGES.encode()) - 2
    assert client.run("#" + "x" * padding + "\n" + EDGES)["userErrors"] == []


@pytest.mark.parametrize(("version", "limit"), [("2026-01", 5), ("2026-10", 5), ("2025-10", 1)])
def test_concurrent_operations_are_limited_per_version(version: str, limit: int) -> None:
    clock = Clock(frozen=True)
    server = start(clock=clock, start_latency=3600)
    try:
        client = Client(server, version=version)
        ids = [client.run(EDGES)["bulkOperation"]["id"] for _ in range(limit)]
        refused = client.run(EDGES)
        assert refused["bulkOperation"] is None
        message = f"A bulk query operation for this app and shop is already in progress: {', '.join(ids)}."
        assert refused["userErrors"] == [{"field": None, "message": message, "code": "OPERATION_IN_PROGRESS"}]
        stats = client.stats()["shops"]["DE"]
        assert (stats["operations_started"], stats["max_concurrent"], stats["in_progress_refusals"]) == (
            limit,
            limit,
            1,
        )
        # a canceled operation frees its slot once it is CANCELED, not while CANCELING
        client.gql("mutation($id: ID!) { bulkOperationCancel(id: $id) { userErrors { message } } }", id=ids[0])
        assert client.poll(ids[0])["status"] == "CANCELING"
        assert client.run(EDGES)["userErrors"][0]["code"] == "OPERATION_IN_PROGRESS"
        clock.advance(0.5)  # cancel_seconds
        assert client.poll(ids[0])["status"] == "CANCELED"
        assert client.run(EDGES)["userErrors"] == []
    finally:
        server.stop()


def test_one_day_window_exports_exactly_that_days_orders_and_fields(client: Client, sim) -> None:
    op, lines = client.export(day_query("2025-09-02", "2025-09-03"), group=True)
    assert all(line.endswith("\n") for line in lines)
    assert '"gid:\\/\\/shopify\\/Order\\/' in lines[0]  # slashes escaped, as Shopify writes them
    rows = [json.loads(line) for line in lines]
    orders = [r for r in rows if "__parentId" not in r]
    items = [r for r in rows if "__parentId" in r]
    truth = [o for o in sim.shopify.truth("DE", "orders") if o["created_at"].startswith("2025-09-02")]
    assert [o["id"] for o in orders] == [t["id"] for t in truth]
    assert all(list(o) == ["id", "name", "createdAt", "total", "refunds"] for o in orders)
    assert [o["total"]["shopMoney"]["amount"] for o in orders] == [t["total_price"] for t in truth]
    truth_items = [i for i in sim.shopify.truth("DE", "order_line_items") if i["order_id"] in {t["id"] for t in truth}]
    assert sorted((i["id"], i["__parentId"]) for i in items) == sorted((t["id"], t["order_id"]) for t in truth_items)
    assert all(list(i) == ["id", "sku", "quantity", "__parentId"] for i in items)
    assert (op["objectCount"], op["rootObjectCount"]) == (str(len(rows)), str(len(orders)))
    assert op["fileSize"] == str(sum(len(line.encode()) for line in lines))
    # grouped: each child directly follows its parent or a sibling
    parents = {o["id"] for o in orders}
    for before, row in zip(rows, rows[1:], strict=False):
        if "__parentId" in row:
            assert before.get("__parentId", before["id"]) == row["__parentId"] or before["id"] == row["__parentId"]
    assert parents


@pytest.mark.parametrize(
    "lo, hi",
    [
        ("'2025-09-02 00:00:00+00:00'", "'2025-09-03 00:00:00+00:00'"),  # a space, as some clients write it
        ("'2025-09-02'", "'2025-09-03'"),
        ('\\"2025-09-02T02:00:00+02:00\\"', '\\"2025-09-03T00:00:00.000Z\\"'),  # double quotes, escaped in GraphQL
        ("2025-09-02T00:00:00", "2025-09-03T00:00:00"),  # no zone: UTC
    ],
)
def test_search_takes_every_date_form_shopify_does(client: Client, sim, lo: str, hi: str) -> None:
    query = f'{{ orders(first: 250, query: "created_at:>={lo} created_at:<{hi}") {{ edges {{ node {{ id }} }} }} }}'
    answer = client.gql(query)
    assert "errors" not in answer, answer
    found = [e["node"]["id"] for e in answer["data"]["orders"]["edges"]]
    truth = [o["id"] for o in sim.shopify.truth("DE", "orders") if o["created_at"].startswith("2025-09-02")]
    assert found == truth and truth


def test_a_search_value_that_is_no_time_filters_nothing(client: Client, sim) -> None:
    answer = client.gql("{ orders(first: 250, query: \"created_at:>='soon'\") { edges { node { id } } } }")
    assert "errors" not in answer, answer
    assert len(answer["data"]["orders"]["edges"]) == len(list(sim.shopify.truth("DE", "orders")))


def test_date_filters_and_sort_keys_apply_to_every_root(client: Client, sim) -> None:
    data = sim.shopify.shops["DE"]

    def ids(query: str, root: str) -> list[str]:
        answer = client.gql(query)
        assert "errors" not in answer, answer
        return [e["node"]["id"] for e in answer["data"][root]["edges"]]

    variants = sorted(data.variants(), key=lambda v: v["updatedAt"])
    middle = variants[len(variants) // 2]["updatedAt"]
    later = ids(f'{{ productVariants(first: 250, query: "updated_at:>=\'{middle}\'", sortKey: ID) '
                "{ edges { node { id } } } }", "productVariants")  # fmt: skip
    expected = sorted((v["id"] for v in variants if v["updatedAt"] >= middle), key=lambda i: int(i.split("/")[-1]))
    assert later == expected[:250] and 0 < len(expected) < len(variants)
    titles = ids("{ products(first: 250, sortKey: TITLE, reverse: true) { edges { node { id } } } }", "products")
    by_title = sorted(data.products(), key=lambda p: (p["title"], p["id"]), reverse=True)
    assert titles == [p["id"] for p in by_title][:250]
    newest = ids("{ orders(first: 20, sortKey: UPDATED_AT, reverse: true) { edges { node { id } } } }", "orders")
    assert (
        newest == [o["id"] for o in sorted(data.orders(), key=lambda o: (o["updatedAt"], o["id"]), reverse=True)][:20]
    )
    first_day = ids('{ customers(first: 250, query: "created_at:<\'2025-09-02\'") { edges { node { id } } } }',
                    "customers")  # fmt: skip
    assert first_day == [c["id"] for c in data.customers() if c["createdAt"] < "2025-09-02"] and first_day


def test_children_are_not_adjacent_without_grouping(client: Client) -> None:
    _, lines = client.export(day_query("2025-09-01", "2025-09-02"), group=False)
    rows = [json.loads(line) for line in lines]
    seen: set[str] = set()
    far = 0
    for before, row in zip([{}, *rows], rows, strict=False):
        if "__parentId" in row:
            assert row["__parentId"] in seen  # after its parent
            far += before.get("__parentId", before.get("id")) != row["__parentId"]
        else:
            seen.add(row["id"])
    assert far > 0
    # the 2026-01 default is groupObjects: false
    _, default = client.export(day_query("2025-09-01", "2025-09-02"))
    assert default == lines


def test_lifecycle_counts_and_empty_result(client: Client) -> None:
    clock = Clock(frozen=True)
    server = start(start_latency=0.25, objects_per_second=200, orders_per_day=30, clock=clock)
    try:
        slow = Client(server)
        op_id = slow.run(day_query("2025-09-01", "2025-09-03"))["bulkOperation"]["id"]
        slow.written(op_id)
        assert slow.poll(op_id)["status"] == "CREATED"
        clock.advance(0.25)
        counts = []
        while (op := slow.poll(op_id))["status"] != "COMPLETED":
            assert op["status"] == "RUNNING"
            counts.append(int(op["objectCount"]))
            assert isinstance(op["objectCount"], str) and op["url"] is None and op["fileSize"] is None
            clock.advance(0.125)  # 25 objects at 200 a second
        lines = int(op["objectCount"])
        assert counts == [25 * i for i in range(len(counts))] and counts[-1] < lines <= counts[-1] + 25
        assert op["completedAt"] is not None and op["url"].startswith(server.base_url)
    finally:
        server.stop()
    op, lines = client.export(day_query("2030-01-01", "2030-01-02"))
    assert (op["objectCount"], op["url"], op["fileSize"], lines) == ("0", None, None, [])


def test_polling_by_node_and_current_operation_before_2026_01(sim) -> None:
    client = Client(sim, version="2025-10")
    op_id = client.run(EDGES)["bulkOperation"]["id"]
    missing = client.post("query($id: ID!) { bulkOperation(id: $id) { id } }", id=op_id).json()
    assert missing["errors"][0]["message"] == "Field 'bulkOperation' doesn't exist on type 'QueryRoot'"
    node = client.gql("query($id: ID!) { node(id: $id) { ... on BulkOperation { id status } } }", id=op_id)
    assert node["data"]["node"]["id"] == op_id
    current = client.gql("{ currentBulkOperation { id status objectCount } }")["data"]["currentBulkOperation"]
    assert current["id"] == op_id
    bad = Client(sim).post('{ bulkOperation(id: "gid://shopify/Product/1") { id } }').json()
    assert bad["errors"][0]["message"] == "Invalid id: gid://shopify/Product/1"
    assert Client(sim).gql('{ bulkOperation(id: "gid://shopify/BulkOperation/1") { id } }')["data"] == {
        "bulkOperation": None
    }


def test_cancel(client: Client) -> None:
    clock = Clock(frozen=True)
    server = start(clock=clock)
    try:
        slow = Client(server)
        op_id = slow.run(EDGES)["bulkOperation"]["id"]
        cancel = "mutation($id: ID!) { bulkOperationCancel(id: $id) { bulkOperation { id status } userErrors { field message } } }"  # noqa: E501
        result = slow.gql(cancel, id=op_id)["data"]["bulkOperationCancel"]
        assert result == {"bulkOperation": {"id": op_id, "status": "CANCELING"}, "userErrors": []}
        clock.advance(0.25)
        assert slow.poll(op_id)["status"] == "CANCELING"
        clock.advance(0.25)
        assert slow.poll(op_id)["status"] == "CANCELED"
        unknown = slow.gql(cancel, id="gid://shopify/BulkOperation/1")["data"]["bulkOperationCancel"]
        assert unknown["userErrors"] == [{"field": ["id"], "message": "Bulk operation does not exist"}]
    finally:
        server.stop()
    done, _ = client.export(EDGES)
    again = client.gql(cancel, id=done["id"])["data"]["bulkOperationCancel"]
    assert again["userErrors"] == [
        {"field": None, "message": "A bulk operation cannot be canceled when it is completed"}
    ]


def test_urls_expire_and_signatures_are_checked() -> None:
    clock = Clock(frozen=True)
    server = start(clock=clock, start_latency=0, url_lifetime=7 * 86_400)
    try:
        client = Client(server)
        op_id = client.run(EDGES)["bulkOperation"]["id"]
        client.written(op_id)
        clock.advance(1)
        op = client.poll(op_id)
        assert op["status"] == "COMPLETED" and httpx.get(op["url"]).status_code == 200
        forged = op["url"].replace("Signature=", "Signature=0")
        assert httpx.get(forged).status_code == 403
        clock.advance(7 * 86_400 - 2)  # a second before the URL's expiry it still works
        assert client.poll(op["id"])["status"] == "COMPLETED"
        assert httpx.get(op["url"]).status_code == 200
        clock.advance(2)
        assert client.poll(op["id"])["status"] == "EXPIRED"
        expired = httpx.get(op["url"])
        assert expired.status_code == 400 and b"ExpiredToken" in expired.content
    finally:
        server.stop()


def test_range_requests_resume_a_download(client: Client) -> None:
    op, lines = client.export(EDGES)
    whole = "".join(lines).encode()
    part = httpx.get(op["url"], headers={"Range": "bytes=100-"})
    assert part.status_code == 206 and part.content == whole[100:]
    assert part.headers["Content-Range"] == f"bytes 100-{len(whole) - 1}/{len(whole)}"


def test_cost_based_throttling() -> None:
    server = start(bucket_size=25, restore_rate=1, clock=Clock(frozen=True))
    try:
        client = Client(server)
        first = client.post(RUN, q=EDGES).json()
        assert first["extensions"]["cost"]["throttleStatus"] == {
            "maximumAvailable": 25, "currentlyAvailable": 15, "restoreRate": 1,
        }  # fmt: skip
        client.post(RUN, q=EDGES)
        throttled = client.post(RUN, q=EDGES)
        assert throttled.status_code == 200
        body = throttled.json()
        assert body["errors"][0]["extensions"]["code"] == "THROTTLED"
        assert body["extensions"]["cost"]["actualQueryCost"] is None
        assert client.stats()["shops"]["DE"]["throttled"] == 1
    finally:
        server.stop()
    server = start(bucket_size=5, restore_rate=1, throttle_with_429=True, clock=Clock(frozen=True))
    try:
        response = Client(server).post(RUN, q=EDGES)
        assert response.status_code == 429 and int(response.headers["Retry-After"]) == 5
    finally:
        server.stop()


def _with_fault(kind: str, clock: Clock | None = None, **timing: float):
    return start(faults={"DE": {kind: 1}}, clock=clock, **timing)


@pytest.mark.parametrize(
    ("kind", "code", "partial"),
    [
        ("op_failed_internal", "INTERNAL_SERVER_ERROR", True),
        ("op_failed_null", None, True),
        ("op_failed_timeout", "TIMEOUT", False),
        ("op_access_denied", "ACCESS_DENIED", False),
    ],
)
def test_failed_operations(kind: str, code: str | None, partial: bool) -> None:
    server = _with_fault(kind)
    try:
        client = Client(server)
        op = client.wait(client.run(day_query("2025-09-01", "2025-09-03"))["bulkOperation"]["id"])
        assert (op["status"], op["errorCode"], op["url"]) == ("FAILED", code, None)
        assert (op["partialDataUrl"] is not None) == partial
        if partial:
            lines = httpx.get(op["partialDataUrl"]).text.splitlines()
            assert len(lines) == int(op["objectCount"]) > 0
        assert client.stats()["faults"] == {"DE": {kind: 1}}
        assert client.export(EDGES)[0]["status"] == "COMPLETED"  # a count of 1: the next one succeeds
    finally:
        server.stop()


def test_stuck_operation_stays_running() -> None:
    clock = Clock(frozen=True)
    server = _with_fault("op_stuck", clock)
    try:
        client = Client(server)
        op_id = client.run(EDGES)["bulkOperation"]["id"]
        client.written(op_id)
        clock.advance(86_400)
        op = client.poll(op_id)
        assert op["status"] == "RUNNING" and int(op["objectCount"]) > 0
    finally:
        server.stop()


def test_expired_url_fault() -> None:
    clock = Clock(frozen=True)
    server = _with_fault("op_url_expired", clock)
    try:
        client = Client(server)
        op_id = client.run(EDGES)["bulkOperation"]["id"]
        client.written(op_id)
        clock.advance(1)
        op = client.poll(op_id)  # the poll that hands out the URL sees COMPLETED ...
        assert op["status"] == "COMPLETED" and op["url"]
        assert httpx.get(op["url"]).status_code == 400  # ... which has expired when it is used, the clock unmoved
        assert client.poll(op["id"])["status"] == "EXPIRED"
        again = client.run(EDGES)["bulkOperation"]["id"]  # a count of 1: the next one is not affected
        client.written(again)
        clock.advance(1)
        assert httpx.get(client.poll(again)["url"]).status_code == 200
    finally:
        server.stop()


def test_foreign_operation_occupies_a_slot() -> None:
    clock = Clock(frozen=True)
    server = _with_fault("foreign_op", clock, foreign_op_seconds=5)
    try:
        client = Client(server, version="2025-10")
        refused = client.run(EDGES)
        assert refused["userErrors"][0]["code"] == "OPERATION_IN_PROGRESS"
        assert "gid://shopify/BulkOperation/" in refused["userErrors"][0]["message"]
        clock.advance(4.5)
        assert client.run(EDGES)["userErrors"][0]["code"] == "OPERATION_IN_PROGRESS"
        clock.advance(0.5)
        assert client.run(EDGES)["userErrors"] == []
    finally:
        server.stop()


def test_malformed_line_keeps_the_count() -> None:
    server = _with_fault("malformed_line")
    try:
        op, lines = Client(server).export(day_query("2025-09-01", "2025-09-02"))
        assert len(lines) == int(op["objectCount"])
        bad = []
        for line in lines:
            try:
                json.loads(line)
            except json.JSONDecodeError:
                bad.append(line)
        assert len(bad) == 1
    finally:
        server.stop()


GRAPHQL_FAULTS = ["graphql_5xx", "graphql_reset", "graphql_throttled", "graphql_429", "graphql_internal"]


@pytest.mark.parametrize("kind", GRAPHQL_FAULTS)
def test_graphql_faults(kind: str) -> None:
    server = _with_fault(kind)
    try:
        client = Client(server)
        if kind == "graphql_reset":
            with pytest.raises(httpx.TransportError):
                client.post(RUN, q=EDGES)
        else:
            response = client.post(RUN, q=EDGES)
            expected = {"graphql_5xx": 503, "graphql_throttled": 200, "graphql_429": 429, "graphql_internal": 200}[kind]
            assert response.status_code == expected
            if kind in ("graphql_throttled", "graphql_internal"):
                code = response.json()["errors"][0]["extensions"]["code"]
                assert code == {"graphql_throttled": "THROTTLED", "graphql_internal": "INTERNAL_SERVER_ERROR"}[kind]
            if kind == "graphql_429":
                assert response.headers["Retry-After"] == "1"
        assert client.stats()["faults"] == {"DE": {kind: 1}}
        assert client.post(RUN, q=EDGES).status_code == 200
        assert client.stats()["shops"]["DE"]["operations_started"] == 1
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["download_5xx", "download_reset", "download_cut"])
def test_download_faults(kind: str) -> None:
    server = _with_fault(kind)
    try:
        client = Client(server)
        op = client.wait(client.run(day_query("2025-09-01", "2025-09-03"))["bulkOperation"]["id"])
        if kind == "download_5xx":
            assert httpx.get(op["url"]).status_code == 503
        else:
            with pytest.raises(httpx.TransportError):
                httpx.get(op["url"])
        whole = httpx.get(op["url"])
        assert whole.status_code == 200 and str(len(whole.content)) == op["fileSize"]
        assert client.stats()["faults"] == {"DE": {kind: 1}}
    finally:
        server.stop()


def test_probabilistic_faults_and_runtime_rules() -> None:
    server = start(faults={"*": {"graphql_5xx": 0.5}})
    try:
        client = Client(server)
        codes = [client.post("{ currentBulkOperation { id } }").status_code for _ in range(60)]
        assert 10 < codes.count(503) < 50
        assert client.stats()["faults"]["DE"]["graphql_5xx"] == codes.count(503)
        assert httpx.post(f"{server.base_url}/_admin/faults", json={"DE": {"nope": 1}}).status_code == 400
        assert httpx.post(f"{server.base_url}/_admin/faults", json={}).status_code == 200
        assert {client.post("{ currentBulkOperation { id } }").status_code for _ in range(10)} == {200}
    finally:
        server.stop()


def test_live_changes_move_updated_at_and_reach_the_truth(client: Client, sim) -> None:
    before = {o["id"]: o for o in sim.shopify.truth("DE", "orders")}
    changed = httpx.post(f"{sim.base_url}/_admin/shops/de/changes", json={"new_orders": 3, "refunds": 2}).json()
    after = {o["id"]: o for o in sim.shopify.truth("DE", "orders")}
    assert len(after) == len(before) + 3 and set(changed["added"]) == set(after) - set(before)
    for order_id in changed["refunded"]:
        assert after[order_id]["updated_at"] > before[order_id]["updated_at"]
        assert after[order_id]["total_refunded"] != before[order_id]["total_refunded"]
    today = after[changed["added"][0]]["created_at"][:10]
    _, lines = client.export(
        f"{{ orders(query: \"updated_at:>='{today}T00:00:00Z'\") {{ edges {{ node {{ id updatedAt }} }} }} }}"
    )
    exported = {json.loads(line)["id"] for line in lines}
    assert exported == set(changed["added"]) | set(changed["refunded"])
    truth = httpx.get(f"{sim.base_url}/_admin/truth/de/refunds").text.splitlines()
    assert len(truth) == sum(1 for _ in sim.shopify.truth("DE", "refunds"))
    counted = httpx.get(f"{sim.base_url}/_admin/truth/de").json()  # every table's count in one pass
    assert counted == {name: sum(1 for _ in sim.shopify.truth("DE", name)) for name in TABLES}
    assert counted["orders"] > 0 and counted["order_transactions"] > counted["orders"]


def test_the_export_cache_serves_the_same_export_until_the_data_changes(tmp_path) -> None:
    query = day_query("2025-09-01", "2025-09-02")
    first = start(export_cache=tmp_path)
    try:
        made, lines = Client(first).export(query)
    finally:
        first.stop()
    assert first.shopify.stats()["export_cache"] == {"hits": 0, "misses": 1}
    second = start(export_cache=tmp_path)  # another process of the same data: served from the cache
    try:
        client = Client(second)
        served, again = client.export(query)
        assert again == lines and len(lines) > 10
        assert (served["objectCount"], served["rootObjectCount"], served["fileSize"]) == (
            made["objectCount"], made["rootObjectCount"], made["fileSize"]
        )  # fmt: skip
        assert second.shopify.stats()["export_cache"] == {"hits": 1, "misses": 0}
        # a fault that changes the file is never served from, nor kept in, the cache
        second.shopify.faults = Faults({"DE": {"malformed_line": 1}})
        assert client.export(query)[1] != lines
        second.shopify.faults = Faults({})
        # changed data is made again, not served
        second.shopify.change("DE", edits=5)
        client.export(query)
        assert second.shopify.stats()["export_cache"] == {"hits": 1, "misses": 1}
    finally:
        second.stop()


def test_the_export_cache_makes_an_export_of_days_from_the_days_of_earlier_exports(tmp_path) -> None:
    sim = start(export_cache=tmp_path)
    try:
        client = Client(sim)
        client.export(day_query("2025-09-01", "2025-09-03"))
        client.export(day_query("2025-09-03", "2025-09-04"))
        assert sim.shopify.stats()["export_cache"] == {"hits": 0, "misses": 2}
        served, lines = client.export(day_query("2025-09-01", "2025-09-04"))  # other windows, the same days
        assert sim.shopify.stats()["export_cache"] == {"hits": 1, "misses": 2}
    finally:
        sim.stop()
    plain = start()  # no cache: made whole
    try:
        made, expected = Client(plain).export(day_query("2025-09-01", "2025-09-04"))
    finally:
        plain.stop()
    assert sorted(lines) == sorted(expected) and len(lines) > 10
    assert (served["objectCount"], served["rootObjectCount"], served["fileSize"]) == (
        made["objectCount"], made["rootObjectCount"], made["fileSize"]
    )  # fmt: skip
    positions = {json.loads(line)["id"]: n for n, line in enumerate(lines)}
    for line in lines:  # each child after its parent
        parent = json.loads(line).get("__parentId")
        assert parent is None or positions[parent] < positions[json.loads(line)["id"]]


REFUNDS = (
    "query r($ids: [ID!]!, $first: Int!) { nodes(ids: $ids) { ... on Refund { id refundLineItems(first: $first) { "
    "pageInfo { hasNextPage } edges { node { quantity lineItem { id } subtotalSet { shopMoney { amount } } } } } } } }"
)


def test_query_cost_is_shopifys_requested_then_actual_and_over_1000_refused() -> None:
    server = start(days=2, orders_per_day=40, clock=Clock(frozen=True))
    try:
        client = Client(server)
        cost = client.gql(RUN, q=EDGES)["extensions"]["cost"]
        assert (cost["requestedQueryCost"], cost["actualQueryCost"]) == (10, 10)  # a mutation
        listed = client.gql("{ bulkOperations(first: 50) { nodes { id } } }")["extensions"]["cost"]
        assert (listed["requestedQueryCost"], listed["actualQueryCost"]) == (52, 3)  # 2 + 50 asked, 2 + 1 returned
        refunds = [r["id"] for r in server.shopify.truth("DE", "refunds")][:3]
        assert len(refunds) == 3
        # each refund: itself, its connection (2) and per line its object, lineItem, subtotalSet and shopMoney (4)
        answer = client.gql(REFUNDS, ids=[*refunds, "gid://shopify/Refund/1"], first=10)
        assert answer["extensions"]["cost"]["requestedQueryCost"] == 4 * (1 + 2 + 10 * 4)
        assert answer["extensions"]["cost"]["actualQueryCost"] == 3 * (1 + 2 + 1 * 4)  # one line each, one unknown
        assert answer["data"]["nodes"][3] is None
        bucket = answer["extensions"]["cost"]["throttleStatus"]
        assert bucket["currentlyAvailable"] == bucket["maximumAvailable"] - 10 - 3 - 21  # the rest given back
        refused = client.gql(REFUNDS, ids=refunds * 8, first=10)
        assert refused["errors"][0]["extensions"] == {"code": "MAX_COST_EXCEEDED", "cost": 24 * 43, "maxCost": 1000}
        assert refused["errors"][0]["message"].startswith(
            "Query cost is 1032, which exceeds the single query max cost limit (1000).")  # fmt: skip
        assert "data" not in refused
    finally:
        server.stop()


def test_regular_pages_list_the_data_once_per_version(client: Client, sim) -> None:
    """Paging through orders lists them once, then each page is a slice of that listing; a change of the data makes
    the next page list again, from the data as it is now."""
    data = sim.shopify.shops["DE"]
    query = "query($a: String) { orders(first: 7, after: $a) { edges { node { id } } pageInfo { endCursor } } }"
    seen, cursor = [], None
    for _ in range(3):
        found = client.gql(query, a=cursor)["data"]["orders"]
        seen += [e["node"]["id"] for e in found["edges"]]
        cursor = found["pageInfo"]["endCursor"]
    assert seen == [o["id"] for o in data.orders()][:21] and len(data.listings) == 1
    sim.shopify.change("DE", new_orders=1)
    client.gql(query, a=cursor)
    versions = [key[0] for key in data.listings]
    assert len(versions) == 2 and versions[-1] == data.version > versions[0]
