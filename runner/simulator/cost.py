"""A query's cost as Shopify calculates it (shopify.dev, "GraphQL Admin API rate limits"): a scalar or enum costs 0,
an object 1, a connection 2 plus its page size (first or last) times the cost of one node, a field of an interface
or union the most any of its types' selections costs, a mutation 10. The requested cost is made from the query
before it runs (a list of objects asked by ids counts each id); the actual cost from what it returned (a connection
counts the nodes it returned, a null costs nothing). A query may request at most MAX_COST."""

from graphql import GraphQLSchema
from graphql.execution.values import get_argument_values
from graphql.language import FieldNode, FragmentSpreadNode, InlineFragmentNode, OperationDefinitionNode, OperationType
from graphql.type import GraphQLNamedType, get_named_type, is_abstract_type, is_list_type, is_non_null_type

from runner.simulator.schema import is_connection

MAX_COST = 1000
MUTATION_COST = 10


def max_cost_exceeded(cost: int) -> dict:
    """Shopify's refusal of a query that requests more than MAX_COST (HTTP 200)."""
    return {
        "message": f"Query cost is {cost}, which exceeds the single query max cost limit ({MAX_COST}).\n\n"
        "See https://shopify.dev/docs/api/usage/rate-limits for more information on how the\n"
        "cost of a query is calculated.\n\n"
        "To query larger amounts of data with fewer limits, bulk operations should be used instead.\n"
        "See https://shopify.dev/docs/api/usage/bulk-operations/queries for usage details.\n",
        "extensions": {"code": "MAX_COST_EXCEEDED", "cost": cost, "maxCost": MAX_COST},
    }


class Cost:
    """The costs of one operation of a document, with its variables (already coerced)."""

    def __init__(self, schema: GraphQLSchema, operation: OperationDefinitionNode, fragments: dict,
                 variables: dict) -> None:  # fmt: skip
        self.schema, self.operation, self.fragments, self.variables = schema, operation, fragments, variables

    def requested(self) -> int:
        return self._root(None)

    def actual(self, data: dict | None) -> int:
        return self._root(data or {})

    def _root(self, data: dict | None) -> int:
        if self.operation.operation == OperationType.MUTATION:
            return MUTATION_COST * len(self._fields(self.operation.selection_set, self.schema.mutation_type))
        return self._selection(self.schema.query_type, self.operation.selection_set, data)

    def _fields(self, selection_set, parent: GraphQLNamedType) -> list[FieldNode]:
        """The fields selected on `parent`, fragments spread (every type condition: costs take the most)."""
        found = []
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                found.append(selection)
            elif isinstance(selection, InlineFragmentNode):
                found.extend(self._fields(selection.selection_set, parent))
            elif isinstance(selection, FragmentSpreadNode) and selection.name.value in self.fragments:
                found.extend(self._fields(self.fragments[selection.name.value].selection_set, parent))
        return found

    def _selection(self, parent: GraphQLNamedType, selection_set, data) -> int:
        total = 0
        for node in self._fields(selection_set, parent):
            definition = _field(self.schema, parent, node.name.value)
            if definition is None:
                continue
            key = node.alias.value if node.alias else node.name.value
            value = data.get(key) if isinstance(data, dict) else None
            total += self._field(node, definition, value if data is not None else None, data is not None)
        return total

    def _field(self, node: FieldNode, definition, value, actual: bool) -> int:
        named = get_named_type(definition.type)
        if not hasattr(named, "fields") and not is_abstract_type(named):
            return 0  # a scalar or an enum
        if actual and value is None:
            return 0
        if is_connection(named):
            return 2 + self._connection(node, named, definition, value, actual)
        inner = definition.type.of_type if is_non_null_type(definition.type) else definition.type
        if is_list_type(inner):
            if actual:
                return sum(self._object(node, named, item, actual) for item in value if item is not None)
            args = get_argument_values(definition, node, self.variables)
            count = len(args["ids"]) if isinstance(args.get("ids"), list) else 1
            return count * self._object(node, named, None, actual)
        return self._object(node, named, value, actual)

    def _object(self, node: FieldNode, named: GraphQLNamedType, value, actual: bool) -> int:
        if is_abstract_type(named):  # the most any type condition's selection costs
            types = self.schema.get_possible_types(named)
            return max((self._object(node, t, value, actual) for t in types if t.name in _conditions(node)),
                       default=1)  # fmt: skip
        return 1 + self._selection(named, node.selection_set, value if actual else None)

    def _connection(self, node: FieldNode, named: GraphQLNamedType, definition, value, actual: bool) -> int:
        """Its nodes' cost: the page size times one node's when requested, each node returned's when actual."""
        edges = next((f for f in self._fields(node.selection_set, named) if f.name.value in ("edges", "nodes")), None)
        if edges is None:
            return 0
        node_type = get_named_type(named.fields["nodes"].type) if "nodes" in named.fields else None
        inner = edges if edges.name.value == "nodes" else next(
            (f for f in self._fields(edges.selection_set, None) if f.name.value == "node"), None)  # fmt: skip
        if inner is None or node_type is None:
            return 0
        if not actual:
            args = get_argument_values(definition, node, self.variables)
            size = args.get("first") or args.get("last") or 0
            return size * self._object(inner, node_type, None, actual)
        key = edges.alias.value if edges.alias else edges.name.value
        items = (value or {}).get(key) or []
        if edges.name.value == "edges":
            inner_key = inner.alias.value if inner.alias else "node"
            items = [e.get(inner_key) for e in items if isinstance(e, dict)]
        return sum(self._object(inner, node_type, item, actual) for item in items if item is not None)


def _field(schema: GraphQLSchema, parent: GraphQLNamedType, name: str):
    fields = getattr(parent, "fields", None) or {}
    return fields.get(name)


def _conditions(node: FieldNode) -> set[str]:
    """The type conditions of the inline fragments directly in a field's selection."""
    return {
        s.type_condition.name.value
        for s in (node.selection_set.selections if node.selection_set else ())
        if isinstance(s, InlineFragmentNode) and s.type_condition
    }
