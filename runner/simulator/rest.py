"""The REST Admin API that common Shopify clients call besides GraphQL: shop.json and oauth/access_scopes.json on
start, orders.json (status, created_at_min/max, updated_at_min/max, since_id, ids, order, fields, limit up to 250,
cursor pages both ways through page_info and the Link header) and events.json (deleted orders), under Shopify's
leaky-bucket REST limit: a bucket of 40 calls leaking 2 a second, the X-Shopify-Shop-Api-Call-Limit header on every
answer, and 429 with Retry-After when it is full. Any other REST path gets Shopify's 404."""

import base64
import datetime as dt
import json
import math
import threading
from urllib.parse import urlencode

from runner.simulator.data import ShopData, within
from runner.simulator.export import moment
from runner.simulator.truth import order_rows

BUCKET, LEAK = 40, 2.0  # Shopify's standard REST limit
MAX_LIMIT, DEFAULT_LIMIT = 250, 50
NOT_FOUND = {"errors": "Not Found"}
SCOPES = ("read_orders", "read_all_orders", "read_products", "read_customers")


class Limits:
    """Each shop's leaky bucket of REST calls, on the simulator's clock."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.levels: dict[str, tuple[float, float]] = {}  # shop -> (level, when)
        self.lock = threading.Lock()

    def take(self, shop: str) -> tuple[bool, int, float]:
        """One call: (allowed, the bucket's level after it, seconds to wait when refused)."""
        with self.lock:
            now = self.clock()
            level, at = self.levels.get(shop, (0.0, now))
            level = max(0.0, level - (now - at) * LEAK)
            if level + 1 > BUCKET:
                self.levels[shop] = (level, now)
                return False, math.ceil(level), (level + 1 - BUCKET) / LEAK
            self.levels[shop] = (level + 1, now)
            return True, math.ceil(level + 1), 0.0


def rest_id(gid: str | None) -> int | None:
    return None if gid is None else int(gid.rsplit("/", 1)[1])


def answer(shopify, code: str, resource: str, params: dict[str, str], base_url: str) -> tuple[int, dict, dict]:
    """(status, body, headers) of GET <resource>.json (resource: 'shop', 'orders', 'events', 'oauth/access_scopes');
    base_url and the path before the resource make the Link header's URLs."""
    allowed, level, wait = shopify.rest_limits.take(code)
    headers = {"X-Shopify-Shop-Api-Call-Limit": f"{level}/{BUCKET}"}
    if not allowed:
        refused = "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."
        return 429, {"errors": refused}, headers | {"Retry-After": f"{max(wait, 0.1):.1f}"}
    data = shopify.shops[code]
    if resource == "shop":
        return 200, {"shop": _shop(shopify, code, data)}, headers
    if resource == "oauth/access_scopes":
        return 200, {"access_scopes": [{"handle": s} for s in SCOPES]}, headers
    if resource == "orders":
        try:
            orders, after, before = _orders(data, params)
        except ValueError as exc:
            return 400, {"errors": {exc.args[0]: "Invalid value."}}, headers
        links = [
            f'<{base_url}.json?{urlencode({"limit": _limit(params), "page_info": cursor})}>; rel="{rel}"'
            for rel, cursor in (("previous", before), ("next", after)) if cursor
        ]  # fmt: skip
        if links:
            headers["Link"] = ", ".join(links)
        return 200, {"orders": orders}, headers
    if resource == "events":
        return 200, {"events": _events(data, params)}, headers
    return 404, NOT_FOUND, headers


def _shop(shopify, code: str, data: ShopData) -> dict:
    return {
        "id": 50_000_000 + data.index, "name": f"{code} shop", "email": f"owner@{shopify.domain(code)}",
        "domain": shopify.domain(code), "myshopify_domain": shopify.domain(code), "currency": data.currency,
        "iana_timezone": "UTC", "timezone": "(GMT+00:00) UTC", "plan_name": "basic", "country_code": "DE",
        "created_at": "2020-01-01T00:00:00Z", "admin_graphql_api_id": f"gid://shopify/Shop/{50_000_000 + data.index}",
    }  # fmt: skip


def _limit(params: dict[str, str]) -> int:
    try:
        return max(1, min(int(params.get("limit") or DEFAULT_LIMIT), MAX_LIMIT))
    except ValueError:
        raise ValueError("limit") from None


def _moment(params: dict[str, str], name: str) -> dt.datetime | None:
    if not params.get(name):
        return None
    try:
        return moment(params[name])
    except ValueError:
        raise ValueError(name) from None


def _orders(data: ShopData, params: dict[str, str]) -> tuple[list[dict], str | None, str | None]:
    """One page of orders and the cursors of the pages after and before it (None at either end). The filters travel
    in the cursor: a page_info request takes only limit and fields besides it, as Shopify's. The listing is made
    once per version of the shop's data (ShopData.listing), and a cursor is a position in it."""
    if params.get("page_info"):
        try:
            state = json.loads(base64.urlsafe_b64decode(params["page_info"].encode()))
            filters, start = dict(state["filters"]), int(state["start"])
        except (ValueError, UnicodeDecodeError, KeyError, TypeError):
            raise ValueError("page_info") from None
    else:
        filters, start = {k: params[k] for k in FILTERS if params.get(k)}, 0
    listing = data.listing(("rest orders", tuple(sorted(filters.items()))), lambda: _listed(data, filters))
    limit = _limit(params)
    page = listing[start : start + limit]
    fields = [f.strip() for f in (params.get("fields") or "").split(",") if f.strip()]
    orders = [_order(data, o) for o in page]
    if fields:
        orders = [{k: v for k, v in o.items() if k in fields} for o in orders]
    after = _cursor(filters, start + limit) if start + limit < len(listing) else None
    before = _cursor(filters, max(0, start - limit)) if start > 0 else None
    return orders, after, before


FILTERS = ("status", "created_at_min", "created_at_max", "updated_at_min", "updated_at_max", "since_id", "ids", "order")
ORDER_FIELDS = {"id": None, "created_at": "createdAt", "updated_at": "updatedAt", "processed_at": "processedAt"}


def _cursor(filters: dict, start: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"filters": filters, "start": start}).encode()).decode()


def _listed(data: ShopData, filters: dict[str, str]) -> list[dict]:
    """Every order the filters select, in their `order` (`id`, `created_at`, `updated_at` or `processed_at`, then
    `asc` or `desc`; by default by id)."""
    status = filters.get("status", "open")
    if status not in ("open", "closed", "cancelled", "any"):
        raise ValueError("status")
    try:
        since = int(filters.get("since_id") or 0)
        ids = {int(i) for i in filters["ids"].split(",")} if filters.get("ids") else None
    except ValueError:
        raise ValueError("since_id" if not filters.get("ids") else "ids") from None
    name, _, direction = (filters.get("order") or "id asc").partition(" ")
    if name not in ORDER_FIELDS or direction.strip().lower() not in ("", "asc", "desc"):
        raise ValueError("order")
    created = (_moment(filters, "created_at_min"), True, _moment(filters, "created_at_max"), True)
    updated = (_moment(filters, "updated_at_min"), True, _moment(filters, "updated_at_max"), True)
    found = [
        o for o in data.orders(created, updated)
        if rest_id(o["id"]) > since and (ids is None or rest_id(o["id"]) in ids) and _has_status(o, status)
    ]  # fmt: skip
    field = ORDER_FIELDS[name]
    return sorted(found, key=lambda o: (o[field] if field else "", rest_id(o["id"])),
                  reverse=direction.strip().lower() == "desc")  # fmt: skip


def _has_status(order: dict, status: str) -> bool:
    cancelled = order["cancelledAt"] is not None
    return status == "any" or (status == "cancelled" and cancelled) or (status == "open" and not cancelled)


def _order(data: ShopData, o: dict) -> dict:
    """An order as REST gives it: numeric ids beside the GIDs, snake_case, amounts as strings, its line items."""
    row = next(order_rows(data, o, "orders"))
    lines = [
        {"id": rest_id(li["id"]), "admin_graphql_api_id": li["id"], "sku": li["sku"], "title": li["title"],
         "quantity": li["quantity"], "variant_id": rest_id(li["variant_id"]), "product_id": rest_id(li["product_id"]),
         "price": li["unit_price"]}
        for li in order_rows(data, o, "order_line_items")
    ]  # fmt: skip
    return {
        "id": rest_id(o["id"]), "admin_graphql_api_id": o["id"], "name": row["name"], "email": row["email"],
        "created_at": row["created_at"], "updated_at": row["updated_at"], "processed_at": row["processed_at"],
        "cancelled_at": row["cancelled_at"], "currency": row["currency"], "subtotal_price": row["subtotal_price"],
        "total_price": row["total_price"], "total_tax": row["total_tax"], "total_discounts": row["total_discounts"],
        "financial_status": row["financial_status"].lower(),
        "fulfillment_status": "fulfilled" if row["fulfillment_status"] == "FULFILLED" else None,
        "tags": ", ".join(row["tags"]), "source_name": row["source_name"], "test": row["test"],
        "customer": {"id": rest_id(row["customer_id"]), "admin_graphql_api_id": row["customer_id"]}
        if row["customer_id"] else None,
        "line_items": lines,
    }  # fmt: skip


def product(p: dict) -> dict:
    """A product (with its variants) as REST and its webhooks (products/update) give it: snake_case names, status in
    lower case, tags as one comma-separated string."""
    return {
        "id": rest_id(p["id"]), "admin_graphql_api_id": p["id"], "title": p["title"], "handle": p["handle"],
        "product_type": p["productType"], "vendor": p["vendor"], "status": p["status"].lower(),
        "tags": ", ".join(p["tags"]), "created_at": p["createdAt"], "updated_at": p["updatedAt"],
        "published_at": p["publishedAt"],
        "variants": [{"id": rest_id(v["id"]), "admin_graphql_api_id": v["id"], "product_id": rest_id(p["id"])}
                     for v in p["variants"]],
    }  # fmt: skip


def _events(data: ShopData, params: dict[str, str]) -> list[dict]:
    """events.json: the orders deleted (filter=Order, verb=destroy; no filter: those too), oldest first."""
    if params.get("filter", "Order") != "Order" or params.get("verb", "destroy") != "destroy":
        return []
    since = _moment(params, "created_at_min")
    found = []
    for gid, when in sorted(data.deletion_times.items(), key=lambda item: (item[1], item[0])):
        if since is None or within(dt.datetime.fromisoformat(when.replace("Z", "+00:00")), (since, True, None, True)):
            found.append({
                "id": 90_000_000_000 + rest_id(gid) % 1_000_000_000, "subject_id": rest_id(gid), "created_at": when,
                "subject_type": "Order", "verb": "destroy", "arguments": [], "body": None,
                "message": "An order was deleted.", "author": "Shopify", "description": "An order was deleted.",
                "path": f"/admin/orders/{rest_id(gid)}",
            })  # fmt: skip
    return found[: _limit(params)]
