"""The REST Admin API common clients call, answered as Shopify does, driven by Shopify's own ShopifyAPI package
unchanged but for its site: the shop, the app's access scopes (REST and currentAppInstallation), orders through every
cursor page, and GraphQL with a search date written with a space; and the REST limit: 429 with Retry-After after a
burst, then recovery."""

import json
import subprocess
import sys

import httpx

from runner.simulator.clock import Clock
from tests.sim import TOKEN, start

CLIENT = """
import json, sys
import shopify
from shopify.api_version import ApiVersion, Release

ApiVersion.define_version(Release("2026-01"))
shopify.ShopifyResource.activate_session(shopify.Session("de.myshopify.com", "2026-01", sys.argv[2]))
shopify.ShopifyResource.set_site(sys.argv[1] + "/admin/api/2026-01")
shop = shopify.Shop.current()
scopes = sorted(s.handle for s in shopify.AccessScope.find())
page = shopify.Order.find(status="any", updated_at_min="2025-09-01T00:00:00Z", limit=7)
orders, pages = [], 0
while True:
    pages += 1
    orders += [{"id": o.admin_graphql_api_id, "name": o.name, "total_price": o.total_price,
                "updated_at": o.updated_at, "lines": len(o.line_items)} for o in page]
    if not page.has_next_page():
        break
    page = page.next_page()
search = "created_at:>='2025-09-02 00:00:00+00:00' created_at:<'2025-09-03 00:00:00+00:00'"
found = json.loads(shopify.GraphQL().execute(
    "query($q: String!) { orders(first: 250, query: $q) { edges { node { id } } } }", {"q": search}))
installed = json.loads(shopify.GraphQL().execute("{ currentAppInstallation { accessScopes { handle } } }"))
print(json.dumps({"installed": sorted(s["handle"] for s in installed["data"]["currentAppInstallation"]["accessScopes"]),
                  "shop": shop.myshopify_domain, "currency": shop.currency, "scopes": scopes, "orders": orders,
                  "pages": pages, "day": [e["node"]["id"] for e in found["data"]["orders"]["edges"]]}))
"""


def test_shopifys_python_library_reads_shop_scopes_and_every_order_page() -> None:
    server = start(("DE",), days=3, orders_per_day=15)
    try:
        done = subprocess.run([sys.executable, "-c", CLIENT, server.base_url, TOKEN], capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        got = json.loads(done.stdout)
        assert (got["shop"], got["currency"]) == ("de.myshopify.com", "EUR")
        assert (
            got["scopes"] == got["installed"] == ["read_all_orders", "read_customers", "read_orders", "read_products"]
        )
        truth = {row["id"]: row for row in server.shopify.truth("DE", "orders")}
        lines = {}
        for li in server.shopify.truth("DE", "order_line_items"):
            lines[li["order_id"]] = lines.get(li["order_id"], 0) + 1
        assert sorted(o["id"] for o in got["orders"]) == sorted(truth)  # every order, once, through every page
        assert got["pages"] == -(-len(truth) // 7) > 1
        for order in got["orders"]:
            row = truth[order["id"]]
            assert (order["name"], order["total_price"], order["updated_at"]) == (
                row["name"], row["total_price"], row["updated_at"])  # fmt: skip
            assert order["lines"] == lines[order["id"]]
        assert got["day"] == [i for i, row in truth.items() if row["created_at"].startswith("2025-09-02")]
    finally:
        server.stop()


def test_the_rest_bucket_refuses_a_burst_with_retry_after_then_recovers() -> None:
    clock = Clock(frozen=True)
    server = start(("DE",), days=1, orders_per_day=3, clock=clock)
    try:
        url = f"{server.shop_url('DE')}/admin/api/2026-01/shop.json"
        headers = {"X-Shopify-Access-Token": TOKEN}
        answers = [httpx.get(url, headers=headers, timeout=30) for _ in range(41)]
        assert [a.status_code for a in answers[:40]] == [200] * 40
        assert [a.headers["X-Shopify-Shop-Api-Call-Limit"] for a in answers[:3]] == ["1/40", "2/40", "3/40"]
        refused = answers[40]
        assert refused.status_code == 429 and float(refused.headers["Retry-After"]) > 0
        assert refused.headers["X-Shopify-Shop-Api-Call-Limit"] == "40/40"
        clock.advance(float(refused.headers["Retry-After"]))  # the bucket leaks 2 calls a second
        again = httpx.get(url, headers=headers, timeout=30)
        assert again.status_code == 200 and again.headers["X-Shopify-Shop-Api-Call-Limit"] == "40/40"
        # the rest of the REST API: Shopify's 404; a wrong token: its 401
        clock.advance(20)  # the bucket empty again
        assert httpx.get(url.replace("shop.json", "products.json"), headers=headers).status_code == 404
        assert httpx.get(url, headers={"X-Shopify-Access-Token": "wrong"}).status_code == 401
    finally:
        server.stop()


def test_deleted_orders_are_destroy_events() -> None:
    server = start(("DE",), days=1, orders_per_day=10)
    try:
        gone = server.shopify.change("DE", deleted_orders=3)["deleted_orders"]
        url = f"{server.shop_url('DE')}/admin/api/2026-01/events.json?filter=Order&verb=destroy"
        events = httpx.get(url, headers={"X-Shopify-Access-Token": TOKEN}, timeout=30).json()["events"]
        assert sorted(e["subject_id"] for e in events) == sorted(int(g.rsplit("/", 1)[1]) for g in gone)
        assert {(e["subject_type"], e["verb"]) for e in events} == {("Order", "destroy")}
    finally:
        server.stop()


def test_orders_json_orders_selects_and_pages_both_ways() -> None:
    server = start(("DE",), days=2, orders_per_day=12)
    try:
        url = f"{server.shop_url('DE')}/admin/api/2026-01/orders.json"
        headers = {"X-Shopify-Access-Token": TOKEN}
        truth = list(server.shopify.truth("DE", "orders"))
        newest = sorted(truth, key=lambda r: (r["updated_at"], int(r["id"].rsplit("/", 1)[1])), reverse=True)

        def links(answer: httpx.Response) -> dict[str, str]:
            parts = [p.split(">; rel=") for p in answer.headers.get("Link", "").split(", ") if p]
            return {rel.strip('"'): link.lstrip("<") for link, rel in parts}

        first = httpx.get(url, params={"status": "any", "limit": 5, "order": "updated_at desc"}, headers=headers)
        assert [o["admin_graphql_api_id"] for o in first.json()["orders"]] == [r["id"] for r in newest[:5]]
        assert set(links(first)) == {"next"}
        second = httpx.get(links(first)["next"], headers=headers)
        assert [o["admin_graphql_api_id"] for o in second.json()["orders"]] == [r["id"] for r in newest[5:10]]
        assert set(links(second)) == {"previous", "next"}
        back = httpx.get(links(second)["previous"], headers=headers)
        assert back.json()["orders"] == first.json()["orders"]
        since = int(truth[10]["id"].rsplit("/", 1)[1])
        later = httpx.get(url, params={"status": "any", "since_id": since, "limit": 250, "fields": "id,name"},
                          headers=headers).json()["orders"]  # fmt: skip
        assert [o["id"] for o in later] == sorted(int(r["id"].rsplit("/", 1)[1]) for r in truth[11:])
        assert all(set(o) == {"id", "name"} for o in later)
        bad = httpx.get(url, params={"order": "sideways"}, headers=headers)
        assert bad.status_code == 400 and bad.json() == {"errors": {"order": "Invalid value."}}
    finally:
        server.stop()
