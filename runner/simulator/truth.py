"""Ground truth: the exact rows a correct sync of a shop must produce, per table, from the simulator's data."""

import datetime as dt
import decimal
from collections.abc import Iterator

import httpx
from psycopg import sql

from runner.simulator.data import ShopData, money

TABLES = ("orders", "order_line_items", "refunds", "skus")
COLUMNS = {
    "orders": "id, shop, name, created_at, updated_at, processed_at, cancelled_at, currency, subtotal_price, "
    "total_price, current_total_price, total_tax, total_refunded, financial_status, fulfillment_status, "
    "customer_id, email",
    "order_line_items": "id, shop, order_id, sku, quantity, current_quantity, variant_id, product_id, title, "
    "unit_price, total_price",
    "refunds": "id, shop, order_id, created_at, note, total_refunded, currency",
    "skus": "id, shop, sku, product_id, product_title, title, price, inventory_quantity, updated_at",
}


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
    cur = db.execute(sql.SQL("select {} from {} order by id").format(sql.SQL(COLUMNS[table]), name))
    names = [c.name for c in cur.description]
    return [{k: _plain(v) for k, v in zip(names, row, strict=True)} for row in cur.fetchall()]


def _amount(bag: tuple[int, str] | None) -> str | None:
    return money(bag[0]) if bag else None


def rows(shop: ShopData, table: str) -> Iterator[dict]:
    """Rows of one table for one shop (money as decimal strings, times as ISO-8601 UTC, ids as GIDs)."""
    if table not in TABLES:
        raise KeyError(table)
    if table == "skus":
        for v in shop.variants():
            yield {
                "id": v["id"], "shop": shop.code, "sku": v["sku"], "product_id": v["product"]["id"],
                "product_title": v["product"]["title"], "title": v["title"], "price": v["price"],
                "inventory_quantity": v["inventoryQuantity"], "updated_at": v["updatedAt"],
            }  # fmt: skip
        return
    for o in shop.orders():
        if table == "orders":
            yield {
                "id": o["id"], "shop": shop.code, "name": o["name"], "created_at": o["createdAt"],
                "updated_at": o["updatedAt"], "processed_at": o["processedAt"], "cancelled_at": o["cancelledAt"],
                "currency": o["currencyCode"], "subtotal_price": _amount(o["subtotalPriceSet"]),
                "total_price": _amount(o["totalPriceSet"]), "current_total_price": _amount(o["currentTotalPriceSet"]),
                "total_tax": _amount(o["totalTaxSet"]), "total_refunded": _amount(o["totalRefundedSet"]),
                "financial_status": o["displayFinancialStatus"], "fulfillment_status": o["displayFulfillmentStatus"],
                "customer_id": o["customer"]["id"] if o["customer"] else None, "email": o["email"],
            }  # fmt: skip
        elif table == "order_line_items":
            for li in o["_lines"]:
                yield {
                    "id": li["id"], "shop": shop.code, "order_id": o["id"], "sku": li["sku"],
                    "quantity": li["quantity"], "current_quantity": li["currentQuantity"],
                    "variant_id": li["variant"]["id"] if li["variant"] else None,
                    "product_id": li["product"]["id"] if li["product"] else None, "title": li["title"],
                    "unit_price": _amount(li["originalUnitPriceSet"]), "total_price": _amount(li["originalTotalSet"]),
                }  # fmt: skip
        else:
            for r in o["refunds"]:
                yield {
                    "id": r["id"], "shop": shop.code, "order_id": o["id"], "created_at": r["createdAt"],
                    "note": r["note"], "total_refunded": _amount(r["totalRefundedSet"]),
                    "currency": r["totalRefundedSet"][1],
                }  # fmt: skip


def count(base_url: str, code: str, table: str, timeout: float = 600) -> int:
    """How many rows of `table` a running simulator's shop `code` holds (GET /_admin/truth), streamed."""
    with httpx.stream("GET", f"{base_url}/_admin/truth/{code.lower()}/{table}", timeout=timeout) as response:
        response.raise_for_status()
        return sum(chunk.count(b"\n") for chunk in response.iter_bytes())
