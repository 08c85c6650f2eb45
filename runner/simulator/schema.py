"""The slice of the Admin API schema the simulator serves, and Shopify's rules for bulk queries.

A field's type is a scalar name, an object type name, "[Type]" for a list, or "Type!" for a connection."""

from runner.simulator.graphql import Field, InlineFragment, Operation

MONEY_BAG = "MoneyBag"
TYPES: dict[str, dict[str, str]] = {
    "QueryRoot": {
        "orders": "Order!",
        "productVariants": "ProductVariant!",
        "products": "Product!",
        "customers": "Customer!",
        "shop": "Shop",
        "node": "Node",
        "nodes": "[Node]",
    },
    "Order": {
        "id": "ID",
        "name": "String",
        "createdAt": "DateTime",
        "updatedAt": "DateTime",
        "processedAt": "DateTime",
        "cancelledAt": "DateTime",
        "cancelReason": "String",
        "email": "String",
        "note": "String",
        "currencyCode": "String",
        "displayFinancialStatus": "String",
        "displayFulfillmentStatus": "String",
        "customer": "Customer",
        "subtotalPriceSet": MONEY_BAG,
        "currentSubtotalPriceSet": MONEY_BAG,
        "totalPriceSet": MONEY_BAG,
        "currentTotalPriceSet": MONEY_BAG,
        "totalRefundedSet": MONEY_BAG,
        "totalTaxSet": MONEY_BAG,
        "refunds": "[Refund]",
        "lineItems": "LineItem!",
    },
    "LineItem": {
        "id": "ID",
        "sku": "String",
        "title": "String",
        "name": "String",
        "quantity": "Int",
        "currentQuantity": "Int",
        "variant": "ProductVariant",
        "product": "Product",
        "originalUnitPriceSet": MONEY_BAG,
        "originalTotalSet": MONEY_BAG,
    },
    "Refund": {
        "id": "ID",
        "createdAt": "DateTime",
        "note": "String",
        "totalRefundedSet": MONEY_BAG,
        "refundLineItems": "RefundLineItem!",
    },
    "RefundLineItem": {"id": "ID", "quantity": "Int"},
    "Customer": {"id": "ID", "email": "String", "orders": "Order!"},
    "MoneyBag": {"shopMoney": "MoneyV2", "presentmentMoney": "MoneyV2"},
    "MoneyV2": {"amount": "Decimal", "currencyCode": "String"},
    "ProductVariant": {
        "id": "ID",
        "sku": "String",
        "title": "String",
        "displayName": "String",
        "price": "Money",
        "inventoryQuantity": "Int",
        "createdAt": "DateTime",
        "updatedAt": "DateTime",
        "product": "Product",
    },
    "Product": {
        "id": "ID",
        "title": "String",
        "handle": "String",
        "updatedAt": "DateTime",
        "variants": "ProductVariant!",
    },
    "Node": {"id": "ID"},
    "Shop": {"name": "String", "currencyCode": "String", "ianaTimezone": "String"},
}
MAX_QUERY_BYTES = 65_535


def is_connection(field_type: str) -> bool:
    return field_type.endswith("!")


def is_list(field_type: str) -> bool:
    return field_type.startswith("[")


def base_type(field_type: str) -> str:
    return field_type.strip("[]!")


def fields_of(selections: list, type_name: str) -> list[Field]:
    """The fields selected on a type, inline fragments that apply to it flattened in."""
    out = []
    for sel in selections:
        if isinstance(sel, InlineFragment):
            if sel.type_condition in (None, type_name):
                out.extend(fields_of(sel.selections, type_name))
        else:
            out.append(sel)
    return out


def connection_node(conn: Field) -> Field | None:
    """The `node` field under `edges` of a connection selection, or None when it is not selected that way."""
    edges = [f for f in conn.selections if isinstance(f, Field) and f.name == "edges"]
    others = [f for f in conn.selections if isinstance(f, Field) and f.name not in ("edges", "pageInfo")]
    if len(edges) != 1 or others:
        return None
    nodes = [f for f in edges[0].selections if isinstance(f, Field) and f.name == "node"]
    return nodes[0] if len(nodes) == 1 and nodes[0].selections else None


def bulk_query_errors(query: str, operations: list[Operation]) -> list[str]:
    """Shopify's userError messages for a bulk query (empty when it is acceptable)."""
    size = len(query.encode())
    if size > MAX_QUERY_BYTES:
        return [f"Query is too large ({size} bytes; maximum is {MAX_QUERY_BYTES} bytes)"]
    if any(op.kind != "query" for op in operations):
        return ["Invalid operation type. Only `query` operations are supported."]
    state = {"connections": 0, "deep": False, "in_list": False, "not_edges": [], "no_id": [], "unknown": []}
    root = fields_of(operations[0].selections, "QueryRoot")
    if any(f.name in ("node", "nodes") for f in root):
        return ["Bulk queries cannot contain a top level `node` field."]
    _walk(root, "QueryRoot", 0, False, state)
    errors = [f"Field '{name}' doesn't exist on type '{typ}'" for typ, name in state["unknown"]]
    if errors:
        return errors
    if state["connections"] == 0:
        errors.append("Bulk queries must contain at least one connection.")
    if state["connections"] > 5:
        errors.append("Bulk queries cannot contain more than 5 connections.")
    if state["deep"]:
        errors.append("Bulk queries cannot contain connections with a nesting depth greater than 2.")
    if state["not_edges"]:
        names = ", ".join(f"'{n}'" for n in state["not_edges"])
        errors.append(
            "All connection fields in a bulk query must select their contents using 'edges' > 'node', "
            "e.g: 'orders { edges { node {'. Selecting via 'nodes' is not supported. "
            f"Invalid connection fields: {names}."
        )
    if state["no_id"]:
        errors.append(
            "The parent 'node' field for a nested connection must select the 'id' field without an alias and "
            f"must be of 'ID' return type. Connection fields without 'id': {', '.join(state['no_id'])}."
        )
    if state["in_list"]:
        errors.append("Queries that contain a connection field within a list field are not currently supported.")
    return errors


def _walk(selections: list[Field], type_name: str, depth: int, in_list: bool, state: dict, parent=None) -> None:
    fields = TYPES.get(type_name, {})
    for f in selections:
        if f.name == "__typename":
            continue
        field_type = fields.get(f.name)
        if field_type is None:
            state["unknown"].append((type_name, f.name))
            continue
        target = base_type(field_type)
        if is_connection(field_type):
            state["connections"] += 1
            if in_list:
                state["in_list"] = True
            if depth + 1 > 2:
                state["deep"] = True
            if parent is not None and not any(p.name == "id" and p.alias is None for p in parent):
                state["no_id"].append(f.name)
            node = connection_node(f)
            if node is None:
                state["not_edges"].append(f.name)
                continue
            node_fields = fields_of(node.selections, target)
            _walk(node_fields, target, depth + 1, in_list, state, node_fields)
        elif f.selections:
            _walk(fields_of(f.selections, target), target, depth, in_list or is_list(field_type), state, None)
