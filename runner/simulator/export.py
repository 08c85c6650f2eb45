"""Running a bulk query over a shop's data: the search filter, the selected fields, JSONL as Shopify writes it."""

import datetime as dt
import json
import re
from collections import deque
from collections.abc import Iterator

from runner.simulator.data import ShopData, money_bag, within
from runner.simulator.graphql import Field, Operation, resolve_variables
from runner.simulator.schema import MONEY_BAG, TYPES, base_type, connection_node, fields_of, is_connection, is_list

_TERM = re.compile(r"""(\w+):(<=|>=|<|>|)\s*('([^']*)'|"([^"]*)"|(\S+))""")
FILTERS = {"created_at": "created", "updated_at": "updated"}


def parse_search(search: str | None) -> tuple[dict, list[str]]:
    """Parses `created_at:>='2025-09-01T00:00:00Z' updated_at:<...` into bounds per field.

    Returns ({"created": (lo, lo_incl, hi, hi_incl), ...}, warnings for fields it does not know)."""
    bounds: dict[str, list] = {}
    warnings = []
    for match in _TERM.finditer(search or ""):
        name, op, _, single, double, bare = match.groups()
        value = single if single is not None else double if double is not None else bare
        if name not in FILTERS:
            warnings.append(name)
            continue
        moment = _moment(value)
        bounds.setdefault(FILTERS[name], [None, True, None, True])
        if op in (">", ">="):
            bounds[FILTERS[name]][:2] = [moment, op == ">="]
        elif op in ("<", "<="):
            bounds[FILTERS[name]][2:] = [moment, op == "<="]
        else:  # a date matches its whole day
            bounds[FILTERS[name]] = [moment, True, moment + dt.timedelta(days=1), False]
    return {k: tuple(v) for k, v in bounds.items()}, warnings


def _moment(value: str) -> dt.datetime:
    text = value.strip().replace("Z", "+00:00")
    moment = dt.datetime.fromisoformat(text) if "T" in text else dt.datetime.fromisoformat(text + "T00:00:00+00:00")
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _dumps(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).replace("/", "\\/")


def _plan(fields: list[Field], type_name: str) -> list[tuple]:
    """The selection compiled once per export: (key, field name, money bag?, list?, sub-plan, type) per field."""
    plan = []
    for f in fields:
        if f.name == "__typename":
            plan.append((f.key, None, False, False, None, type_name))
            continue
        field_type = TYPES[type_name][f.name]
        target = base_type(field_type)
        sub = _plan(fields_of(f.selections, target), target) if f.selections else None
        plan.append((f.key, f.name, field_type == MONEY_BAG, is_list(field_type), sub, target))
    return plan


def _project(obj: dict | None, plan: list[tuple]):
    """The object with exactly the selected fields, in selection order, under their aliases."""
    if obj is None:
        return None
    out = {}
    for key, name, money, many, sub, type_name in plan:
        if name is None:
            out[key] = type_name
            continue
        value = obj.get(name)
        if money and isinstance(value, tuple):
            value = money_bag(value)
        if sub is not None:
            value = [_project(v, sub) for v in value or []] if many else _project(value, sub)
        out[key] = value
    return out


class Export:
    """Yields the lines of one bulk query: each root node, then its connection children with __parentId."""

    def __init__(self, shop: ShopData, operation: Operation, variables: dict | None, group_objects: bool) -> None:
        self.shop = shop
        self.group = group_objects
        self.roots = [
            f for f in fields_of(operation.selections, "QueryRoot") if is_connection(TYPES["QueryRoot"][f.name])
        ]
        self.variables = variables or {}
        self.warnings: list[str] = []

    def _source(self, conn: Field) -> Iterator[dict]:
        search = resolve_variables(conn.args.get("query"), self.variables)
        bounds, warnings = parse_search(search)
        self.warnings += warnings
        if conn.name == "orders":
            return self.shop.orders(bounds.get("created"), bounds.get("updated"))
        if conn.name == "productVariants":
            return (v for v in self.shop.variants() if _updated_within(v, bounds))
        if conn.name == "products":
            return self._products(bounds)
        return iter(())

    def _products(self, bounds: dict) -> Iterator[dict]:
        by_product: dict[str, dict] = {}
        for variant in self.shop.variants():
            product = by_product.setdefault(variant["product"]["id"], {**variant["product"], "variants": []})
            product["variants"].append(variant)
        return (p for p in by_product.values() if _updated_within(p, bounds))

    def lines(self) -> Iterator[tuple[str, bool]]:
        """(line, is_root) pairs, each line ending in a newline."""
        for conn in self.roots:
            root_type = base_type(TYPES["QueryRoot"][conn.name])
            node = connection_node(conn)
            fields = fields_of(node.selections, root_type)
            plain = _plan([f for f in fields if not is_connection(TYPES[root_type].get(f.name, ""))], root_type)
            nested = [self._child_plan(f, root_type) for f in fields if is_connection(TYPES[root_type].get(f.name, ""))]
            held: deque[tuple[int, list[str]]] = deque()
            for count, obj in enumerate(self._source(conn)):
                yield _dumps(_project(obj, plain)) + "\n", True
                children = list(_children(obj, nested))
                if self.group:
                    for line in children:
                        yield line, False
                    continue
                # Without grouping, children land later in the file, after other parents.
                held.append((count, children))
                while held and held[0][0] <= count - 2:
                    for line in held.popleft()[1]:
                        yield line, False
            for _, children in held:
                for line in children:
                    yield line, False

    @staticmethod
    def _child_plan(conn: Field, parent_type: str) -> tuple[str, list[tuple]]:
        child_type = base_type(TYPES[parent_type][conn.name])
        return conn.name, _plan(fields_of(connection_node(conn).selections, child_type), child_type)


def _children(obj: dict, nested: list[tuple[str, list[tuple]]]) -> Iterator[str]:
    for name, plan in nested:
        for child in _child_objects(obj, name):
            line = _project(child, plan)
            line["__parentId"] = obj["id"]
            yield _dumps(line) + "\n"


def _child_objects(obj: dict, name: str) -> list[dict]:
    return {"lineItems": obj.get("_lines"), "variants": obj.get("variants")}.get(name) or []


def _updated_within(obj: dict, bounds: dict) -> bool:
    return within(_moment(obj["updatedAt"]), bounds.get("updated"))
