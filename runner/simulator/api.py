"""Running a validated Admin API request with graphql-core: the root fields the simulator implements, a value for
every other field (values.py), and connections paged by first/last/after/before."""

import base64
import itertools
import uuid
from collections.abc import Iterable

from graphql import GraphQLResolveInfo, execute
from graphql.language import DocumentNode, OperationDefinitionNode, VariableNode
from graphql.type import get_named_type

from runner.simulator.export import parse_search, records
from runner.simulator.rest import SCOPES
from runner.simulator.schema import group_objects_default, is_connection, schema
from runner.simulator.values import MISSING, children, default, value

MAX_PAGE = 250


def internal_error() -> dict:
    """The GraphQL error Shopify answers its own failures with, in an HTTP 200 (shopify.dev changelog, "Improved
    GraphQL errors")."""
    request = str(uuid.uuid4())
    return {"message": "Internal error. Looks like something went wrong on our end.\n"
                       f"Request ID: {request} (include this in support requests).",
            "extensions": {"code": "INTERNAL_SERVER_ERROR", "requestId": request}}  # fmt: skip


class RequestError(Exception):
    """A GraphQL error raised while resolving a field (HTTP 200, `errors` in the body)."""

    def __init__(self, message: str, code: str = "undefinedField") -> None:
        super().__init__(message)
        self.code = code


class Request:
    """One request of one shop: its root fields bound to the simulated shop."""

    def __init__(self, shopify, shop: str, version: str, base_url: str, variables: dict) -> None:
        self.shopify, self.shop, self.version, self.base_url = shopify, shop, version, base_url
        self.variables = variables
        data = shopify.shops[shop]
        self.root = {
            "bulkOperationRunQuery": self.run_query,
            "bulkOperationCancel": self.cancel,
            "bulkOperation": lambda _info, id: self.op(shopify.lookup(shop, id, strict=True)),  # noqa: A006
            "node": lambda _info, id: self.node(id),  # noqa: A006
            "nodes": lambda _info, ids: [self.node(i) for i in ids],
            "currentBulkOperation": lambda _info, **_args: self.op(shopify.current(shop)),
            "bulkOperations": lambda _info, **args: page(
                [self.op(o) for o in shopify.list_operations(shop, args.get("query"), args.get("sortKey"))], args),
            # every root connection filtered by its search and ordered by its sortKey, as in exports; `reverse` is
            # page()'s
            **{root: _root(data, root) for root in ("orders", "productVariants", "products", "customers")},
            # the app's installation, which clients ask for on start: its access scopes, as REST gives them too
            "currentAppInstallation": lambda _info: {
                "id": "gid://shopify/AppInstallation/1", "accessScopes": [{"handle": s} for s in SCOPES],
            },
            "shop": lambda _info: {"name": f"{shop} shop", "currencyCode": data.currency, "ianaTimezone": "UTC",
                                   "myshopifyDomain": shopify.domain(shop)},
        }  # fmt: skip

    def execute(self, document: DocumentNode, operation: OperationDefinitionNode):
        name = operation.name.value if operation.name else None
        return execute(schema(), document, root_value=self.root, context_value=self, variable_values=self.variables,
                       operation_name=name, field_resolver=resolve)  # fmt: skip

    def node(self, ident: str) -> dict | None:
        """node(id:): a refund of the shop's orders, or a bulk operation; None for any other id."""
        if isinstance(ident, str) and ident.startswith("gid://shopify/Refund/"):
            refund = self.shopify.shops[self.shop].refund(ident)
            return None if refund is None else {**refund, "__typename": "Refund"}
        return self.op(self.shopify.lookup(self.shop, ident, strict=False))

    def op(self, op) -> dict | None:
        return None if op is None else {"__typename": "BulkOperation", **self.shopify.describe(op, self.base_url)}

    def run_query(self, info: GraphQLResolveInfo, query: str, groupObjects: bool = False) -> dict:  # noqa: N803
        if not _given(info, "groupObjects", self.variables):
            groupObjects = group_objects_default(self.version)  # noqa: N806 - the argument's name
        op, errors = self.shopify.run_query(self.shop, self.version, query, groupObjects)
        return self.payload(op, errors)

    def cancel(self, _info: GraphQLResolveInfo, id: str) -> dict:  # noqa: A002 - the argument's name
        op, errors = self.shopify.cancel(self.shop, id)
        return self.payload(op, errors)

    def payload(self, op, user_errors: list[dict]) -> dict:
        return {"bulkOperation": self.op(op), "userErrors": user_errors}


def _given(info: GraphQLResolveInfo, argument: str, variables: dict) -> bool:
    """Whether the request gave the argument (a literal, or a variable it set), rather than leaving the default."""
    for arg in info.field_nodes[0].arguments:
        if arg.name.value == argument:
            return not isinstance(arg.value, VariableNode) or variables.get(arg.value.name.value) is not None
    return False


def _root(data, root: str):
    """The resolver of a root connection: its records (export.records) within the search, in sortKey order, paged.
    The listing is made once per version of the shop's data and kept while clients page through it
    (ShopData.listing), so a page costs what its size does (a cursor into a version the data has left lists again)."""

    def resolve_root(_info, **args) -> dict:
        query, sort_key = args.get("query"), args.get("sortKey")
        found = data.listing(
            (root, query, sort_key), lambda: list(records(data, root, parse_search(query)[0], sort_key))
        )
        return page(found, args)

    return resolve_root


def resolve(source, info: GraphQLResolveInfo, **args):
    """Every field: the root's implementation, the data model's value, a connection of its children, or a
    deterministic value of the field's type."""
    if not isinstance(source, dict):
        return default(info.return_type)
    found = source.get(info.field_name, MISSING)
    if callable(found):
        return found(info, **args)
    found = value(source, info.field_name, info.return_type)
    if found is not MISSING:
        return found
    if is_connection(get_named_type(info.return_type)):
        request: Request = info.context
        data = request.shopify.shops[request.shop]
        return page(children(data, source, info.parent_type.name, info.field_name), args)
    return default(info.return_type)


def page(items: Iterable, args: dict) -> dict:
    """A connection over `items`: first/last (one of them, at most 250), after/before cursors, reverse."""
    first, last = args.get("first"), args.get("last")
    if first is None and last is None:
        raise RequestError("you must provide one of first or last", "argumentLiteralsIncompatible")
    if first is not None and last is not None:
        raise RequestError("providing both first and last is not supported", "argumentLiteralsIncompatible")
    after, before = _position(args.get("after")), _position(args.get("before"))
    if first is not None and before is None and not args.get("reverse"):
        return _forward(items, after + 1 if after is not None else 0, min(first, MAX_PAGE))
    rows = list(items)
    if args.get("reverse"):
        rows.reverse()
    indexed = list(itertools.islice(enumerate(rows), after + 1 if after is not None else 0, before))
    chosen = indexed[: min(first, MAX_PAGE)] if first is not None else indexed[-min(last, MAX_PAGE) :] if last else []
    edges = [{"node": node, "cursor": _cursor(i)} for i, node in chosen]
    return {
        "edges": edges,
        "nodes": [e["node"] for e in edges],
        "pageInfo": {
            "hasNextPage": bool(chosen) and chosen[-1][0] < (indexed[-1][0] if indexed else -1),
            "hasPreviousPage": bool(chosen) and chosen[0][0] > (indexed[0][0] if indexed else 0),
            "startCursor": edges[0]["cursor"] if edges else None,
            "endCursor": edges[-1]["cursor"] if edges else None,
        },
    }


def _forward(items: Iterable, start: int, size: int) -> dict:
    """A page forward from `start`: the items before it skipped, none after the one that says a next page exists
    (the whole list is never made, so a page costs what its position and size do)."""
    window = list(itertools.islice(enumerate(items), start, start + size + 1))
    edges = [{"node": node, "cursor": _cursor(i)} for i, node in window[:size]]
    return {
        "edges": edges,
        "nodes": [e["node"] for e in edges],
        "pageInfo": {
            "hasNextPage": bool(edges) and len(window) > size,
            "hasPreviousPage": False,  # as the full path answers a forward page
            "startCursor": edges[0]["cursor"] if edges else None,
            "endCursor": edges[-1]["cursor"] if edges else None,
        },
    }


def _cursor(index: int) -> str:
    return base64.b64encode(f'{{"index":{index}}}'.encode()).decode()


def _position(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        return int(base64.b64decode(cursor).decode().split(":", 1)[1].rstrip("}"))
    except (ValueError, IndexError) as exc:
        raise RequestError(f"Invalid cursor for current pagination: {cursor}", "argumentLiteralsIncompatible") from exc
