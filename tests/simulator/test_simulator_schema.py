"""The simulator judges requests and bulk queries by Shopify's real Admin API schema (the cut in
runner/simulator/vendor/), answers in Shopify's words, follows the API version, and serves Shopify's own paths."""

import json
import subprocess
import sys

import httpx
import pytest

from runner.simulator import schema as admin
from runner.simulator.cut_schema import main as cut_main
from tests.sim import EDGES, TOKEN, Client, start


@pytest.fixture(scope="module")
def sim():
    server = start(days=2, orders_per_day=5)
    yield server
    server.stop()


@pytest.fixture
def client(sim) -> Client:
    return Client(sim, version="2026-01")


def errors(client: Client, query: str, **variables) -> list[dict]:
    body = client.gql(query, **variables)
    assert "errors" in body and "data" not in body, body
    return body["errors"]


# -- answers captured from a live shop (2025-01), reproduced exactly ---------------------------------------------------
def test_missing_subselection_is_refused_as_shopify_does(client: Client) -> None:
    query = "query GraphqlBaseValidationMissingSubselection {\n  shop\n}\n"
    assert errors(client, query) == [{
        "message": "Field must have selections (field 'shop' returns Shop but has no selections. "
                   "Did you mean 'shop { ... }'?)",
        "locations": [{"line": 2, "column": 3}],
        "path": ["query GraphqlBaseValidationMissingSubselection", "shop"],
        "extensions": {"code": "selectionMismatch", "nodeName": "field 'shop'", "typeName": "Shop"},
    }]  # fmt: skip


def test_unknown_fields_are_refused_naming_the_field(client: Client) -> None:
    query = "query GraphqlBaseValidationUnknownOrderField {\n  orders(first: 1) {\n    nodes {\n      id\n      " \
            "definitelyNotAnOrderField\n    }\n  }\n}\n"  # fmt: skip
    assert errors(client, query) == [{
        "message": "Field 'definitelyNotAnOrderField' doesn't exist on type 'Order'",
        "locations": [{"line": 5, "column": 7}],
        "path": ["query GraphqlBaseValidationUnknownOrderField", "orders", "nodes", "definitelyNotAnOrderField"],
        "extensions": {"code": "undefinedField", "typeName": "Order", "fieldName": "definitelyNotAnOrderField"},
    }]  # fmt: skip
    root = errors(client, "mutation M {\n  definitelyNotAShopifyMutationRoot(input: {}) {\n    id\n  }\n}\n")
    assert root[0]["message"] == "Field 'definitelyNotAShopifyMutationRoot' doesn't exist on type 'Mutation'"
    assert root[0]["path"] == ["mutation M", "definitelyNotAShopifyMutationRoot"]


def test_syntax_errors_are_located_as_shopify_does(client: Client) -> None:
    query = "query GraphqlBaseValidationInvalidSyntax {\n  shop {\n    id\n"
    assert errors(client, query) == [{
        "message": "syntax error, unexpected end of file at [3, 5]",
        "locations": [{"line": 3, "column": 5}],
        "extensions": {"code": "PARSE_ERROR"},
    }]  # fmt: skip
    assert errors(client, "{ shop { name } } }")[0]["message"] == 'syntax error, unexpected RCURLY ("}") at [1, 19]'


# -- arguments ---------------------------------------------------------------------------------------------------------
BAD_ARGUMENTS = [
    ("{ orders(bogus: 1) { edges { node { id } } } }", "Field 'orders' doesn't accept argument 'bogus'",
     "argumentNotAccepted"),
    ("{ orders(sortKey: NEWEST) { edges { node { id } } } }",
     "Argument 'sortKey' on Field 'orders' has an invalid value (NEWEST). Expected type 'OrderSortKeys'.",
     "argumentLiteralsIncompatible"),
    ('{ orders(first: "ten") { edges { node { id } } } }',
     "Argument 'first' on Field 'orders' has an invalid value (\"ten\"). Expected type 'Int'.",
     "argumentLiteralsIncompatible"),
    ("{ bulkOperation { id } }", "Field 'bulkOperation' is missing required arguments: id",
     "missingRequiredArguments"),
]  # fmt: skip


@pytest.mark.parametrize(("query", "message", "code"), BAD_ARGUMENTS)
def test_bad_arguments_are_refused_with_shopifys_message(client: Client, query: str, message: str, code: str) -> None:
    found = errors(client, query)
    assert [(e["message"], e["extensions"]["code"]) for e in found] == [(message, code)]
    # the same inside a bulk query: refused as a userError, nothing started
    if "bulkOperation" not in query:
        started = client.run(query)
        assert started == {"bulkOperation": None, "userErrors": [{"field": ["query"], "message": message,
                                                                    "code": "INVALID"}]}  # fmt: skip


def test_variables_are_checked(client: Client) -> None:
    undefined = errors(client, "query Q { bulkOperation(id: $id) { id } }")
    assert undefined[0]["message"] == "Variable $id is used by operation 'Q' but not declared"
    mismatch = errors(client, "query Q($id: ID) { bulkOperation(id: $id) { id } }", id="gid://shopify/BulkOperation/1")
    assert mismatch[0]["message"] == "Nullability mismatch on variable $id and argument id (ID / ID!)"
    assert mismatch[0]["extensions"]["code"] == "variableMismatch"
    missing = errors(client, "query Q($id: ID!) { bulkOperation(id: $id) { id } }")
    assert missing[0]["message"] == "Variable $id of type ID! was provided invalid value"
    assert missing[0]["extensions"]["problems"] == [{"path": [], "explanation": "Expected value to not be null"}]


def test_operation_name_chooses_the_operation(client: Client) -> None:
    document = "query A { shop { name } } query B { shop { currencyCode } }"
    assert client.http.post(client.url, json={"query": document, "operationName": "B"}).json()["data"] == {
        "shop": {"currencyCode": "EUR"}
    }
    unnamed = client.http.post(client.url, json={"query": document}).json()
    assert unnamed["errors"] == [{"message": "An operation name is required"}]
    unknown = client.http.post(client.url, json={"query": document, "operationName": "C"}).json()
    assert unknown["errors"] == [{"message": 'No operation named "C"'}]


def test_directives_and_fragments_are_checked(client: Client) -> None:
    assert errors(client, "{ shop { name @nope } }")[0]["message"] == "Directive @nope is not defined"
    assert errors(client, "{ shop { ...S } }")[0]["message"] == "Fragment S was used, but not defined"
    unused = errors(client, "fragment S on Shop { name } { shop { name } }")
    assert unused[0]["message"] == "Fragment S was defined, but not used"
    wrong = errors(client, "{ shop { ... on Order { id } } }")
    assert wrong[0]["message"] == "Fragment on Order can't be spread inside Shop"
    assert wrong[0]["extensions"]["code"] == "cannotSpreadFragment"


# -- any valid selection is answered -----------------------------------------------------------------------------------
def test_fields_beyond_the_data_model_are_exported_with_values_of_their_type(client: Client) -> None:
    query = (
        "fragment Money on MoneyBag { shopMoney { amount currencyCode } } "
        "{ orders { edges { node { id paymentGatewayNames legacyResourceId totalPriceSet { ...Money } "
        "cancelledAt @include(if: false) note @skip(if: true) "
        "lineItems { edges { node { id discountedUnitPriceSet { ...Money } requiresShipping } } } } } } }"
    )
    op, lines = client.export(query)
    rows = [json.loads(line) for line in lines]
    orders = [r for r in rows if "__parentId" not in r]
    items = [r for r in rows if "__parentId" in r]
    assert orders and items and len(rows) == int(op["objectCount"])
    for order in orders:
        assert list(order) == ["id", "paymentGatewayNames", "legacyResourceId", "totalPriceSet"]  # no cancelledAt, note
        assert order["paymentGatewayNames"] == [] and order["legacyResourceId"] == order["id"].rsplit("/", 1)[1]
        assert set(order["totalPriceSet"]["shopMoney"]) == {"amount", "currencyCode"}
        assert float(order["totalPriceSet"]["shopMoney"]["amount"]) > 0  # from the data model
    currency = next(iter(admin.schema().get_type("CurrencyCode").values))  # an enum's value: its first one
    for item in items:
        assert list(item) == ["id", "discountedUnitPriceSet", "requiresShipping", "__parentId"]
        assert item["discountedUnitPriceSet"] == {"shopMoney": {"amount": "0.0", "currencyCode": currency}}
        assert item["requiresShipping"] is False


def test_a_connection_inside_an_object_of_a_node_is_exported(client: Client, sim) -> None:
    query = "{ productVariants { edges { node { id product { id variants { edges { node { id } } } } } } } }"
    op, lines = client.export(query)
    assert op["status"] == "COMPLETED"
    rows = [json.loads(line) for line in lines]
    variants = [r for r in rows if "__parentId" not in r]
    nested = [r for r in rows if "__parentId" in r]
    by_product: dict[str, set] = {}
    for v in variants:
        by_product.setdefault(v["product"]["id"], set()).add(v["id"])
    # each variant line is followed (somewhere) by its product's variants, with the product as their parent
    assert len(nested) == sum(len(by_product[v["product"]["id"]]) for v in variants)
    for row in nested:
        assert row["id"] in by_product[row["__parentId"]]
    assert int(op["rootObjectCount"]) == len(variants) and int(op["objectCount"]) == len(rows)


def test_regular_queries_are_answered_with_pages(client: Client) -> None:
    first = client.gql("{ orders(first: 2) { edges { cursor node { id name } } pageInfo { hasNextPage } } }")
    page = first["data"]["orders"]
    assert len(page["edges"]) == 2 and page["pageInfo"]["hasNextPage"] is True
    after = page["edges"][-1]["cursor"]
    second = client.gql("query($a: String) { orders(first: 2, after: $a) { nodes { id } } }", a=after)
    assert second["data"]["orders"]["nodes"][0]["id"] not in {e["node"]["id"] for e in page["edges"]}
    unpaged = client.gql("{ orders { nodes { id } } }")
    assert unpaged["errors"][0]["message"] == "you must provide one of first or last"


# -- versions ----------------------------------------------------------------------------------------------------------
GROUPED = "mutation { bulkOperationRunQuery(query: \"{ orders { edges { node { id } } } }\", groupObjects: true) " \
          "{ userErrors { message } } }"  # fmt: skip


def test_group_objects_exists_from_2025_07(sim) -> None:
    refused = errors(Client(sim, version="2025-04"), GROUPED)
    assert refused[0]["message"] == "Field 'bulkOperationRunQuery' doesn't accept argument 'groupObjects'"
    assert refused[0]["extensions"]["code"] == "argumentNotAccepted"
    assert Client(sim, version="2025-07").gql(GROUPED)["data"]["bulkOperationRunQuery"]["userErrors"] == []


def test_bulk_operation_lookups_exist_from_2026_01(sim) -> None:
    old = Client(sim, version="2025-10")
    for query in ("{ bulkOperations(first: 1) { nodes { id } } }", '{ bulkOperation(id: "gid://shopify/X/1") { id } }'):
        found = errors(old, query)
        assert found[0]["extensions"] == {"code": "undefinedField", "typeName": "QueryRoot",
                                          "fieldName": query.split("(")[0].strip("{ ")}  # fmt: skip
    assert "errors" not in Client(sim, version="2026-01").gql("{ bulkOperations(first: 1) { nodes { id } } }")


def test_group_objects_default_follows_the_version(sim) -> None:
    """Through 2025-10 children follow their parent (grouped); from 2026-01 they need not."""
    query = "{ orders { edges { node { id lineItems { edges { node { id } } } } } } }"

    def adjacent(version: str) -> bool:
        _, lines = Client(sim, version=version).export(query)
        last_parent = None
        for row in map(json.loads, lines):
            if "__parentId" not in row:
                last_parent = row["id"]
            elif row["__parentId"] != last_parent:
                return False
        return True

    assert adjacent("2025-10") and not adjacent("2026-01")


# -- Shopify's own paths -----------------------------------------------------------------------------------------------
def test_shops_are_chosen_by_host_at_shopifys_paths() -> None:
    server = start(shops=("DE", "NL"), days=1, orders_per_day=2)
    server.shopify.config.domains["NL"] = "nl-shop.example"
    try:
        url = f"{server.base_url}/admin/api/2026-01/graphql.json"
        headers = {"X-Shopify-Access-Token": TOKEN}
        query = {"query": "{ shop { currencyCode myshopifyDomain } }"}
        de = httpx.post(url, json=query, headers={**headers, "Host": "de.myshopify.com"}).json()
        assert de["data"]["shop"]["myshopifyDomain"] == "de.myshopify.com"
        nl = httpx.post(url, json=query, headers={**headers, "Host": "nl-shop.example:443"}).json()
        assert nl["data"]["shop"]["currencyCode"] == "EUR"
        assert httpx.post(url, json=query, headers={**headers, "Host": "other.example"}).status_code == 404
        assert server.shopify.counters[("NL", "requests")] == 1
    finally:
        server.stop()


def test_shopifys_python_library_runs_a_bulk_query_unchanged(sim) -> None:
    """Shopify's ShopifyAPI package, its site set to the simulator's address: start, poll, download."""
    script = f"""
import json, sys, time, urllib.request
import shopify
from shopify.api_version import ApiVersion, Release

ApiVersion.define_version(Release("2026-01"))
session = shopify.Session("de.myshopify.com", "2026-01", {TOKEN!r})
shopify.ShopifyResource.activate_session(session)
shopify.ShopifyResource.set_site("{sim.base_url}/admin/api/2026-01")
client = shopify.GraphQL()
run = json.loads(client.execute(
    "mutation Run($q: String!) {{ bulkOperationRunQuery(query: $q) "
    "{{ bulkOperation {{ id }} userErrors {{ message }} }} }}",
    {{"q": {EDGES!r}}}, "Run"))
op_id = run["data"]["bulkOperationRunQuery"]["bulkOperation"]["id"]
for _ in range(600):
    op = json.loads(client.execute("query Poll($id: ID!) {{ bulkOperation(id: $id) {{ status url objectCount }} }}",
                                   {{"id": op_id}}, "Poll"))["data"]["bulkOperation"]
    if op["status"] == "COMPLETED":
        break
    time.sleep(0.05)
lines = urllib.request.urlopen(op["url"]).read().decode().splitlines()
print(json.dumps({{"count": op["objectCount"], "ids": [json.loads(line)["id"] for line in lines],
                   "version": shopify.VERSION}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    truth = sorted(row["id"] for row in sim.shopify.truth("DE", "orders"))
    assert sorted(result["ids"]) == truth and result["count"] == str(len(truth))


# -- the schema file ---------------------------------------------------------------------------------------------------
FULL = """
schema { query: QueryRoot mutation: Mutation }
directive @accessRestricted(reason: String = null) on FIELD_DEFINITION | OBJECT
"A node" interface Node { id: ID! }
type QueryRoot { orders(first: Int): OrderConnection! node(id: ID!): Node unrelated: Lonely }
type Mutation { bulkOperationCancel(id: ID!): Payload other: Lonely }
type Payload { bulkOperation: BulkOperation }
type BulkOperation implements Node { id: ID! }
type OrderConnection { edges: [OrderEdge!]! }
type OrderEdge { node: Order! }
type Order implements Node { id: ID! "the total" total: Money }
scalar Money
type Product implements Node { id: ID! }
type Lonely { x: Int }
"""


def test_the_cut_keeps_what_the_roots_reach(tmp_path) -> None:
    (tmp_path / "full.graphql").write_text(FULL)
    out = tmp_path / "cut.graphql"
    roots = {"QueryRoot": ("orders", "node"), "Mutation": ("bulkOperationCancel",)}
    argv = [str(tmp_path / "full.graphql"), "--version", "2099-01", "--out", str(out)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("runner.simulator.cut_schema.ROOTS", roots)
        assert cut_main(argv) == 0
    text = out.read_text()
    assert "# version: 2099-01" in text and "Types kept: 10 of 11" in text
    for kept in ("type Product implements Node", "type BulkOperation", "scalar Money", "directive @accessRestricted"):
        assert kept in text  # Product: it implements Node, which node(id:) returns
    assert "Lonely" not in text and "unrelated" not in text and "the total" not in text


def test_the_served_schema_is_shopifys_2026_01_cut() -> None:
    assert admin.schema_version() == "2026-01"
    header = admin.SCHEMA_FILE.read_text()[:2000]
    assert "sha256 7ed55efe33649e82666016b7cb89cc16d376b877fc5eb48f731410e9ef87c567" in header
    root = admin.schema().query_type
    assert {"orders", "productVariants", "products", "bulkOperation", "bulkOperations"} <= set(root.fields)
    assert str(root.fields["orders"].args["sortKey"].type) == "OrderSortKeys"
    assert len(admin.schema().type_map) > 1500
