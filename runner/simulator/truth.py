"""Ground truth: the exact rows a correct sync of a shop must produce, per table, from the simulator's data."""

import datetime as dt
import decimal
from collections import Counter
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import httpx
from psycopg import sql

from runner.simulator.data import ShopData, field, money, refund_line_items

TABLES = (
    "orders",
    "order_line_items",
    "refunds",
    "skus",
    "order_tax_lines",
    "order_transactions",
    "order_shipping_lines",
    "order_line_discount_allocations",
    "order_line_tax_lines",
    "refund_line_items",
    "customers",
    "products",
)
COLUMNS = {
    "orders": "id, shop, name, created_at, updated_at, processed_at, cancelled_at, currency, subtotal_price, "
    "total_price, current_total_price, total_tax, total_refunded, financial_status, fulfillment_status, "
    "customer_id, email, tags, source_name, test, presentment_currency, subtotal_price_presentment, "
    "total_price_presentment, total_tax_presentment, total_discounts, total_discounts_presentment, total_shipping, "
    "total_shipping_presentment, shipping_country, shipping_province, shipping_zip, discount_codes",
    "order_line_items": "id, shop, order_id, sku, quantity, current_quantity, variant_id, product_id, title, "
    "unit_price, total_price, discounted_total, total_discount, unit_price_presentment",
    "refunds": "id, shop, order_id, created_at, updated_at, note, total_refunded, currency",
    "skus": "id, shop, sku, product_id, product_title, title, price, inventory_quantity, updated_at",
    "order_tax_lines": "order_id, position, shop, title, rate, price, price_presentment",
    "order_transactions": "id, shop, order_id, kind, status, gateway, amount, currency, amount_presentment, "
    "presentment_currency, processed_at, parent_id, test",
    "order_shipping_lines": "order_id, position, shop, title, code, source, price, price_presentment, "
    "discounted_price, discounted_price_presentment",
    "order_line_discount_allocations": "line_item_id, position, shop, amount, amount_presentment, currency, "
    "discount_index, allocation_method, target_type",
    "order_line_tax_lines": "line_item_id, position, shop, title, rate, price, price_presentment",
    "refund_line_items": "refund_id, position, shop, id, line_item_id, quantity, restock_type, subtotal, "
    "subtotal_presentment, total_tax, total_tax_presentment, currency",
    "customers": "id, shop, created_at, updated_at, state, tags, number_of_orders, amount_spent, currency, "
    "email_marketing_state, country, province, zip, email, phone, first_name, last_name, address1, address2, city",
    "products": "id, shop, title, handle, product_type, vendor, status, tags, created_at, updated_at, published_at",
}
# How rows are told apart: their id, or (for list elements without one) their parent's id and position.
KEYS = {name: tuple(COLUMNS[name].split(", ")[:2]) if "position" in COLUMNS[name] else ("id",) for name in TABLES}


def key(table: str):
    """The sort key of a row of `table`: what database_rows orders by."""
    names = KEYS[table]
    return lambda row: tuple(row[n] for n in names)


def _plain(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, decimal.Decimal):
        return str(value)
    return value


def database_rows(db, table: str, live: bool = False) -> list[dict]:
    """A shopify.* table in the truth's shape (plain values), ordered by id: what a sync must equal. live: only what
    the shop holds now (shopify.live_<table>, without deleted rows)."""
    name = sql.Identifier("shopify", f"live_{table}" if live else table)
    order = sql.SQL(", ").join(map(sql.Identifier, KEYS[table]))
    cur = db.execute(sql.SQL("select {} from {} order by {}").format(sql.SQL(COLUMNS[table]), name, order))
    names = [c.name for c in cur.description]
    return [{k: _plain(v) for k, v in zip(names, row, strict=True)} for row in cur.fetchall()]


def _amount(bag: tuple | None) -> str | None:
    return money(bag[0]) if bag else None


def _presentment(bag: tuple | None) -> str | None:
    return money(bag[2]) if bag else None


def _tax_lines(lines: list[dict], parent: str, value: str, shop: str) -> Iterator[dict]:
    for n, tax in enumerate(lines, 1):
        yield {parent: value, "position": n, "shop": shop, "title": tax["title"], "rate": str(tax["rate"]),
               "price": _amount(tax["priceSet"]), "price_presentment": _presentment(tax["priceSet"])}  # fmt: skip


def rows(shop: ShopData, table: str) -> Iterator[dict]:
    """Rows of one table for one shop (money as decimal strings, times as ISO-8601 UTC, ids as GIDs)."""
    if table not in TABLES:
        raise KeyError(table)
    if table == "customers":
        for c in shop.customers():
            email, phone, address = c["defaultEmailAddress"] or {}, c["defaultPhoneNumber"] or {}, c["defaultAddress"]
            yield {
                "id": c["id"], "shop": shop.code, "created_at": c["createdAt"], "updated_at": c["updatedAt"],
                "state": c["state"], "tags": list(c["tags"]), "number_of_orders": int(c["numberOfOrders"]),
                "amount_spent": c["amountSpent"]["amount"], "currency": c["amountSpent"]["currencyCode"],
                "email_marketing_state": email.get("marketingState"), "country": address["countryCodeV2"],
                "province": address["provinceCode"], "zip": address["zip"], "email": email.get("emailAddress"),
                "phone": phone.get("phoneNumber"), "first_name": c["firstName"], "last_name": c["lastName"],
                "address1": address["address1"], "address2": address["address2"], "city": address["city"],
            }  # fmt: skip
        return
    if table == "products":
        for p in shop.products():
            yield {
                "id": p["id"], "shop": shop.code, "title": p["title"], "handle": p["handle"],
                "product_type": p["productType"], "vendor": p["vendor"], "status": p["status"], "tags": list(p["tags"]),
                "created_at": p["createdAt"], "updated_at": p["updatedAt"], "published_at": p["publishedAt"],
            }  # fmt: skip
        return
    if table == "skus":
        for v in shop.variants():
            yield {
                "id": v["id"], "shop": shop.code, "sku": v["sku"], "product_id": v["product"]["id"],
                "product_title": v["product"]["title"], "title": v["title"], "price": v["price"],
                "inventory_quantity": v["inventoryQuantity"], "updated_at": v["updatedAt"],
            }  # fmt: skip
        return
    for o in shop.orders():
        yield from order_rows(shop, o, table)


def counts(shop: ShopData) -> dict[str, int]:
    """How many rows each table holds for one shop, in one pass over its orders."""
    found = dict.fromkeys(TABLES, 0)
    found["skus"] = sum(1 for _ in shop.variants())
    found["customers"] = len(shop.customers())
    found["products"] = len(shop.products())
    for o in shop.orders():
        for table in TABLES:
            if table not in ("skus", "customers", "products"):
                found[table] += sum(1 for _ in order_rows(shop, o, table))
    return found


def order_rows(shop: ShopData, o: dict, table: str) -> Iterator[dict]:
    """The rows of one of a shop's tables (not skus) that one order makes."""
    if table == "orders":
        yield {
            "id": o["id"], "shop": shop.code, "name": o["name"], "created_at": o["createdAt"],
            "updated_at": o["updatedAt"], "processed_at": o["processedAt"], "cancelled_at": o["cancelledAt"],
            "currency": o["currencyCode"], "subtotal_price": _amount(field(o, "subtotalPriceSet")),
            "total_price": _amount(field(o, "totalPriceSet")),
            "current_total_price": _amount(field(o, "currentTotalPriceSet")),
            "total_tax": _amount(field(o, "totalTaxSet")), "total_refunded": _amount(field(o, "totalRefundedSet")),
            "financial_status": o["displayFinancialStatus"], "fulfillment_status": o["displayFulfillmentStatus"],
            "customer_id": o["customer"]["id"] if o["customer"] else None, "email": o["email"],
            "tags": list(o["tags"]), "source_name": o["sourceName"], "test": o["test"],
            "presentment_currency": o["presentmentCurrencyCode"],
            "subtotal_price_presentment": _presentment(field(o, "subtotalPriceSet")),
            "total_price_presentment": _presentment(field(o, "totalPriceSet")),
            "total_tax_presentment": _presentment(field(o, "totalTaxSet")),
            "total_discounts": _amount(field(o, "totalDiscountsSet")),
            "total_discounts_presentment": _presentment(field(o, "totalDiscountsSet")),
            "total_shipping": _amount(field(o, "totalShippingPriceSet")),
            "total_shipping_presentment": _presentment(field(o, "totalShippingPriceSet")),
            "shipping_country": o["shippingAddress"]["countryCodeV2"],
            "shipping_province": o["shippingAddress"]["provinceCode"], "shipping_zip": o["shippingAddress"]["zip"],
            "discount_codes": list(o["discountCodes"]),
        }  # fmt: skip
    elif table == "order_line_items":
        for li in o["_lines"]:
            yield {
                "id": li["id"], "shop": shop.code, "order_id": o["id"], "sku": li["sku"],
                "quantity": li["quantity"], "current_quantity": li["currentQuantity"],
                "variant_id": li["variant"]["id"] if li["variant"] else None,
                "product_id": li["product"]["id"] if li["product"] else None, "title": li["title"],
                "unit_price": _amount(field(li, "originalUnitPriceSet")),
                "total_price": _amount(field(li, "originalTotalSet")),
                "discounted_total": _amount(field(li, "discountedTotalSet")),
                "total_discount": _amount(field(li, "totalDiscountSet")),
                "unit_price_presentment": _presentment(field(li, "originalUnitPriceSet")),
            }  # fmt: skip
    elif table == "order_tax_lines":
        yield from _tax_lines(field(o, "taxLines"), "order_id", o["id"], shop.code)
    elif table == "order_line_tax_lines":
        for li in o["_lines"]:
            yield from _tax_lines(field(li, "taxLines"), "line_item_id", li["id"], shop.code)
    elif table == "order_transactions":
        for tx in field(o, "transactions"):
            yield {
                "id": tx["id"], "shop": shop.code, "order_id": o["id"], "kind": tx["kind"], "status": tx["status"],
                "gateway": tx["gateway"], "amount": _amount(tx["amountSet"]), "currency": tx["amountSet"][1],
                "amount_presentment": _presentment(tx["amountSet"]), "presentment_currency": tx["amountSet"][-1],
                "processed_at": tx["processedAt"], "test": tx["test"],
                "parent_id": tx["parentTransaction"]["id"] if tx["parentTransaction"] else None,
            }  # fmt: skip
    elif table == "order_shipping_lines":
        s = field(o, "shippingLine")
        yield {
            "order_id": o["id"], "position": 1, "shop": shop.code, "title": s["title"], "code": s["code"],
            "source": s["source"], "price": _amount(s["originalPriceSet"]),
            "price_presentment": _presentment(s["originalPriceSet"]),
            "discounted_price": _amount(s["discountedPriceSet"]),
            "discounted_price_presentment": _presentment(s["discountedPriceSet"]),
        }  # fmt: skip
    elif table == "order_line_discount_allocations":
        for li in o["_lines"]:
            for n, a in enumerate(field(li, "discountAllocations"), 1):
                d = a["discountApplication"]
                yield {
                    "line_item_id": li["id"], "position": n, "shop": shop.code,
                    "amount": _amount(a["allocatedAmountSet"]),
                    "amount_presentment": _presentment(a["allocatedAmountSet"]),
                    "currency": a["allocatedAmountSet"][1], "discount_index": d["index"],
                    "allocation_method": d["allocationMethod"], "target_type": d["targetType"],
                }  # fmt: skip
    elif table == "refund_line_items":
        for r in o["refunds"]:
            for n, x in enumerate(refund_line_items(r), 1):
                yield {
                    "refund_id": r["id"], "position": n, "shop": shop.code, "id": x["id"],
                    "line_item_id": x["lineItem"]["id"], "quantity": x["quantity"], "restock_type": x["restockType"],
                    "subtotal": _amount(x["subtotalSet"]), "subtotal_presentment": _presentment(x["subtotalSet"]),
                    "total_tax": _amount(x["totalTaxSet"]), "total_tax_presentment": _presentment(x["totalTaxSet"]),
                    "currency": x["subtotalSet"][1],
                }  # fmt: skip
    else:
        for r in o["refunds"]:
            yield {
                "id": r["id"], "shop": shop.code, "order_id": o["id"], "created_at": r["createdAt"],
                "updated_at": r["updatedAt"], "note": r["note"], "total_refunded": _amount(r["totalRefundedSet"]),
                "currency": r["totalRefundedSet"][1],
            }  # fmt: skip


SALES = ("orders", "gross_sales", "discounts", "returns", "net_sales", "shipping", "taxes", "total_sales")


def daily_sales(shop: ShopData, zone: str = "UTC") -> dict[str, dict[str, int | str]]:
    """Shopify's sales report per day in time zone `zone`, from the simulator's own numbers (cents), not from any
    table: orders placed that day (test orders left out) with their lines' prices, discounts, shipping and taxes;
    refunds made that day with what their lines returned and the taxes they gave back. Money as decimal strings."""
    tz = ZoneInfo(zone)
    days: dict[str, Counter] = {}
    for o in shop.orders():
        if o["test"]:
            continue
        day = days.setdefault(o["_created"].astimezone(tz).date().isoformat(), Counter())
        day["orders"] += 1
        day["gross_sales"] += sum(li["_gross"] for li in o["_lines"])
        day["discounts"] += sum(li["_discount"] for li in o["_lines"])
        day["shipping"] += o["_shipping"]
        day["taxes"] += o["_tax_total"]
        for r in o["refunds"]:
            made = dt.datetime.fromisoformat(r["createdAt"].replace("Z", "+00:00")).astimezone(tz).date().isoformat()
            day = days.setdefault(made, Counter())
            day["returns"] += sum(x["_subtotal"] for x in r["_lines"])
            day["taxes"] -= sum(x["_total_tax"] for x in r["_lines"])
    report = {}
    for name, day in sorted(days.items()):
        net = day["gross_sales"] - day["discounts"] - day["returns"]
        cents = {
            **dict.fromkeys(SALES, 0),
            **day,
            "net_sales": net,
            "total_sales": net + day["shipping"] + day["taxes"],
        }
        report[name] = {k: cents[k] if k == "orders" else _cents(cents[k]) for k in SALES}
    return report


def _cents(amount: int) -> str:
    return f"{'-' if amount < 0 else ''}{abs(amount) // 100}.{abs(amount) % 100:02d}"


def sales_of(db, shop: str) -> dict[str, dict[str, int | str]]:
    """shopify.daily_sales of one shop in daily_sales's shape."""
    cur = db.execute(
        sql.SQL("select day::text, {} from shopify.daily_sales where shop = %s order by day").format(
            sql.SQL(", ").join(map(sql.Identifier, SALES))),
        (shop,),
    )  # fmt: skip
    return {row[0]: {k: v if k == "orders" else f"{v:.2f}" for k, v in zip(SALES, row[1:], strict=True)} for row in cur}


def counted(base_url: str, code: str, timeout: float = 600) -> dict[str, int]:
    """How many rows each table holds for a running simulator's shop `code` (GET /_admin/truth/<shop>)."""
    response = httpx.get(f"{base_url}/_admin/truth/{code.lower()}", timeout=timeout)
    response.raise_for_status()
    return response.json()
