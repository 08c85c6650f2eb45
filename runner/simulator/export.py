"""Running a bulk query over a shop's data: the search filter, the selected fields, JSONL as Shopify writes it.

The selection is compiled once per export with graphql-core (fragments, aliases, @include/@skip resolved) into a
plan per object type; each object is then projected through it. Nested connections become lines of their own with
`__parentId`, the id of the object that holds them."""

import copy
import datetime as dt
import json
import re
from collections import deque
from collections.abc import Iterator

from graphql import parse
from graphql.execution.collect_fields import collect_fields, collect_sub_fields
from graphql.execution.values import get_argument_values
from graphql.language import DocumentNode, FieldNode, FragmentDefinitionNode, OperationDefinitionNode
from graphql.type import GraphQLObjectType, get_named_type, is_abstract_type, is_leaf_type

from runner.simulator.data import ShopData, money_bag, within
from runner.simulator.schema import is_connection, node_type, schema
from runner.simulator.values import DERIVED, MISSING, children, default, is_money_bag

_TERM = re.compile(r"""(\w+):(<=|>=|<|>|)\s*('([^']*)'|"([^"]*)"|(\S+))""")
FILTERS = {"created_at": "created", "updated_at": "updated"}


def parse_search(search: str | None) -> tuple[dict, list[str]]:
    """Parses `created_at:>='2025-09-01T00:00:00Z' updated_at:<...` into bounds per field.

    Dates take every form ISO 8601 allows, as Shopify's search does: a date, a time with `T` or a space between,
    fractions of a second, `Z` or an offset (none: UTC). Returns ({"created": (lo, lo_incl, hi, hi_incl), ...},
    warnings for fields it does not know and values that are no time, whose terms filter nothing)."""
    bounds: dict[str, list] = {}
    warnings = []
    for match in _TERM.finditer(search or ""):
        name, op, _, single, double, bare = match.groups()
        value = single if single is not None else double if double is not None else bare
        if name not in FILTERS:
            warnings.append(name)
            continue
        try:
            when = moment(value)
        except ValueError:
            warnings.append(f"{name}:{value}")
            continue
        bounds.setdefault(FILTERS[name], [None, True, None, True])
        if op in (">", ">="):
            bounds[FILTERS[name]][:2] = [when, op == ">="]
        elif op in ("<", "<="):
            bounds[FILTERS[name]][2:] = [when, op == "<="]
        else:  # a date matches its whole day
            bounds[FILTERS[name]] = [when, True, when + dt.timedelta(days=1), False]
    return {k: tuple(v) for k, v in bounds.items()}, warnings


def moment(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value.strip().replace("z", "Z"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _dumps(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).replace("/", "\\/")


class Plan:
    """The fields selected on one object type: (response key, field name, field type, sub-plan, money bag?, value
    when the data model has none) each, and the nested connections (field name, plan of their nodes)."""

    def __init__(self, export: "Export", type_: GraphQLObjectType, nodes: list[FieldNode]) -> None:
        self.type_name = type_.name
        self.fields: list[tuple] = []
        self.connections: list[tuple[str, Plan]] = []
        for key, field_nodes in export.sub_fields(type_, nodes).items():
            name = field_nodes[0].name.value
            if name == "__typename":
                self.fields.append((key, name, None, None, False, None))
                continue
            field_type = type_.fields[name].type
            named = get_named_type(field_type)
            if is_connection(named):
                self.connections.append(
                    (name, Plan(export, node_type(named), export.node_selection(named, field_nodes)))
                )
            else:
                sub = None if is_leaf_type(named) else Abstract(export, named, field_nodes) if is_abstract_type(
                    named) else Plan(export, named, field_nodes)  # fmt: skip
                self.fields.append((key, name, field_type, sub, is_money_bag(field_type), default(field_type)))

    def of(self, _obj: dict) -> "Plan":
        return self


class Abstract:
    """The plans of an interface or union field, one per runtime type (named by the object's __typename)."""

    def __init__(self, export: "Export", type_, nodes: list[FieldNode]) -> None:
        self.export, self.type_, self.nodes, self.plans = export, type_, nodes, {}

    def of(self, obj: dict) -> Plan | None:
        name = obj.get("__typename")
        runtime = schema().get_type(name) if isinstance(name, str) else None
        if runtime is None or not schema().is_sub_type(self.type_, runtime):
            return None
        if name not in self.plans:
            self.plans[name] = Plan(self.export, runtime, self.nodes)
        return self.plans[name]


def project(obj: dict, plan: Plan, pending: list) -> dict:
    """The object with exactly the selected fields, in selection order, under their keys; the nested connections
    it holds are added to `pending` as (object, plan) pairs."""
    out = {}
    for key, name, field_type, sub, money, fallback in plan.fields:
        if field_type is None:
            out[key] = plan.type_name
            continue
        # values.value(), written out: a call per field costs a fifth of the export's speed
        found = obj.get(name, MISSING)
        if found is MISSING:
            found = DERIVED[name](obj) if name in DERIVED else MISSING
            found = fallback if found is MISSING else found
        if money and found.__class__ is tuple:
            found = money_bag(found)
        if sub is not None and isinstance(found, list):
            found = [_inline(item, sub) for item in found]
        elif sub is not None and found is not None:
            found = _inline(found, sub, pending)
        out[key] = found
    if plan.connections:
        pending.append((obj, plan))
    return out


def _inline(obj: dict, sub, pending: list | None = None) -> dict | None:
    plan = sub.of(obj)
    return None if plan is None else project(obj, plan, pending if pending is not None else [])


class Export:
    """Yields the lines of one bulk query: each root node, then its connection children with __parentId."""

    def __init__(self, shop: ShopData, document: DocumentNode, group_objects: bool, variables: dict | None = None):
        self.shop = shop
        self.group = group_objects
        self.variables = variables or {}
        self.fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        operation = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
        root = schema().query_type
        selected = collect_fields(schema(), self.fragments, self.variables, root, operation.selection_set)
        self.roots = []
        for nodes in selected.values():
            field = root.fields.get(nodes[0].name.value)
            named = get_named_type(field.type) if field else None
            if named is not None and is_connection(named):
                args = get_argument_values(field, nodes[0], self.variables)
                plan = Plan(self, node_type(named), self.node_selection(named, nodes))
                self.roots.append((nodes[0].name.value, args, plan))
        self.warnings: list[str] = []
        self.created: tuple | None = None  # set on one day's part of an export (day_parts): its creation bounds

    @classmethod
    def of(cls, shop: ShopData, query: str, group_objects: bool = False) -> "Export":
        return cls(shop, parse(query), group_objects)

    def sub_fields(self, type_: GraphQLObjectType, nodes: list[FieldNode]) -> dict[str, list[FieldNode]]:
        return collect_sub_fields(schema(), self.fragments, self.variables, type_, nodes)

    def node_selection(self, connection: GraphQLObjectType, nodes: list[FieldNode]) -> list[FieldNode]:
        """The `node` fields under `edges` of a connection's selection (the bulk rules allow no other way)."""
        edges = [n for ns in self.sub_fields(connection, nodes).values() for n in ns if n.name.value == "edges"]
        edge = get_named_type(connection.fields["edges"].type)
        return [n for ns in self.sub_fields(edge, edges).values() for n in ns if n.name.value == "node"]

    def day_parts(self) -> tuple[str, list["Export"]] | None:
        """For an export of orders created within whole UTC days (and no other filter): its search text and one
        export per day, whose files one after the other make a file of the whole export (in creation order, each
        child after its parent). None for any other export."""
        if len(self.roots) != 1 or self.roots[0][0] != "orders":
            return None
        search = self.roots[0][1].get("query") or ""
        bounds, warnings = parse_search(search)
        lo, lo_incl, hi, hi_incl = bounds.get("created") or (None, False, None, False)
        if warnings or set(bounds) != {"created"} or lo is None or hi is None or not lo_incl or hi_incl:
            return None
        if lo.utcoffset() or hi.utcoffset() or lo.time() != dt.time() or hi.time() != dt.time():
            return None
        parts = []
        for n in range((hi - lo).days):
            part = copy.copy(self)
            part.warnings = []
            part.created = (lo + dt.timedelta(days=n), True, lo + dt.timedelta(days=n + 1), False)
            parts.append(part)
        return search, parts

    def _source(self, name: str, args: dict) -> Iterator[dict]:
        bounds, warnings = parse_search(args.get("query"))
        self.warnings += warnings
        if self.created is not None:
            bounds = {"created": self.created}
        return records(self.shop, name, bounds, args.get("sortKey"), bool(args.get("reverse")))

    def lines(self) -> Iterator[tuple[str, bool]]:
        """(line, is_root) pairs, each line ending in a newline."""
        for name, args, plan in self.roots:
            held: deque[tuple[int, list[str]]] = deque()
            for count, obj in enumerate(self._source(name, args)):
                pending: list = []
                yield _dumps(project(obj, plan, pending)) + "\n", True
                lines = list(self._children(pending))
                if self.group:
                    for line in lines:
                        yield line, False
                    continue
                # Without grouping, children land later in the file, after other parents.
                held.append((count, lines))
                while held and held[0][0] <= count - 2:
                    for line in held.popleft()[1]:
                        yield line, False
            for _, lines in held:
                for line in lines:
                    yield line, False

    def _children(self, pending: list) -> Iterator[str]:
        """The lines of the nested connections found while projecting a line: each node with its parent's id."""
        for parent, plan in pending:
            for name, node_plan in plan.connections:
                for child in children(self.shop, parent, plan.type_name, name):
                    more: list = []
                    line = project(child, node_plan, more)
                    line["__parentId"] = parent["id"]
                    yield _dumps(line) + "\n"
                    yield from self._children(more)


SORT_FIELDS = {"CREATED_AT": "createdAt", "UPDATED_AT": "updatedAt", "TITLE": "title", "NAME": "name"}
NATURAL = {  # the sort keys whose order each root's data has already: orders by creation (their ids rise with it)
    "orders": (None, "CREATED_AT", "ID", "PROCESSED_AT"), "productVariants": (None, "ID"), "products": (None, "ID"),
    "customers": (None, "ID"),
}  # fmt: skip


def records(shop: ShopData, root: str, bounds: dict, sort_key: str | None = None, reverse: bool = False) -> Iterator:
    """The objects of a root connection (orders, productVariants, products, customers) within the search's
    created_at and updated_at bounds, in the order of `sortKey` (ID, CREATED_AT, UPDATED_AT, TITLE, NAME; any other
    key: the natural order, by id), reversed with `reverse`."""
    created, updated = bounds.get("created"), bounds.get("updated")
    if root == "orders":
        found = shop.orders(created, updated)  # by creation, the data's own order
    elif root in ("productVariants", "products", "customers"):
        every = {"productVariants": shop.variants, "products": shop.products, "customers": shop.customers}[root]()
        found = (o for o in every if _within(o, "createdAt", created) and _within(o, "updatedAt", updated))
    else:
        return iter(())
    field = SORT_FIELDS.get(sort_key or "")
    if sort_key in NATURAL[root]:  # the order the data comes in already (streamed, never held whole)
        field = None
    elif sort_key == "ID":
        return iter(sorted(found, key=lambda o: int(o["id"].rsplit("/", 1)[1]), reverse=reverse))
    if field is not None:
        return iter(sorted(found, key=lambda o: (o.get(field) or "", o["id"]), reverse=reverse))
    return reversed(list(found)) if reverse else found


def _within(obj: dict, field: str, bounds: tuple | None) -> bool:
    """Whether the object's time `field` falls within the bounds (no bounds, or no such field: it does)."""
    return not bounds or obj.get(field) is None or within(moment(obj[field]), bounds)
