"""Shopify's rules for the query of a bulk operation, on top of the schema's: size, operation type, connections (how
many, how deep, selected how, of nodes implementing Node, none inside a list), and the messages Shopify answers
with."""

from graphql.execution.collect_fields import collect_fields, collect_sub_fields
from graphql.language import DocumentNode, FieldNode, FragmentDefinitionNode, OperationDefinitionNode
from graphql.type import GraphQLObjectType, get_named_type, is_list_type, is_non_null_type, is_object_type

from runner.simulator.schema import MAX_QUERY_BYTES, is_connection, node_type, schema
from runner.simulator.validation import RequestErrors, check, parse_document


def bulk_query_errors(query: str, version: str) -> tuple[DocumentNode | None, list[str]]:
    """(the parsed query, Shopify's userError messages for it; none when it may run)."""
    size = len(query.encode())
    if size > MAX_QUERY_BYTES:
        return None, [f"Query is too large ({size} bytes; maximum is {MAX_QUERY_BYTES} bytes)"]
    try:
        document = parse_document(query, located=False)
    except RequestErrors as exc:
        return None, [f"Invalid bulk query: {exc.errors[0]['message']}"]
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if any(op.operation.value != "query" for op in operations):
        return None, ["Invalid operation type. Only `query` operations are supported."]
    try:
        check(document, version)
    except RequestErrors as exc:
        return None, [e["message"] for e in exc.errors]
    return document, _Walk(document, operations[0]).errors()


class _Walk:
    """Counts and checks the connections of a valid query."""

    def __init__(self, document: DocumentNode, operation: OperationDefinitionNode) -> None:
        self.fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        self.root = collect_fields(schema(), self.fragments, {}, schema().query_type, operation.selection_set)
        self.connections = 0
        self.deep = self.in_list = False
        self.not_edges: list[str] = []
        self.no_id: list[str] = []
        self.not_node: list[str] = []

    def errors(self) -> list[str]:
        if any(nodes[0].name.value in ("node", "nodes") for nodes in self.root.values()):
            return ["Bulk queries cannot contain a top level `node` field."]
        self.walk(schema().query_type, self.root, 0, False, None)
        errors = []
        if self.connections == 0:
            errors.append("Bulk queries must contain at least one connection.")
        if self.connections > 5:
            errors.append("Bulk queries cannot contain more than 5 connections.")
        if self.deep:
            errors.append("Bulk queries cannot contain connections with a nesting depth greater than 2.")
        if self.not_edges:
            names = ", ".join(f"'{n}'" for n in self.not_edges)
            errors.append(
                "All connection fields in a bulk query must select their contents using 'edges' > 'node', "
                "e.g: 'orders { edges { node {'. Selecting via 'nodes' is not supported. "
                f"Invalid connection fields: {names}."
            )
        if self.no_id:
            errors.append(
                "The parent 'node' field for a nested connection must select the 'id' field without an alias and "
                f"must be of 'ID' return type. Connection fields without 'id': {', '.join(self.no_id)}."
            )
        if self.in_list:
            errors.append("Queries that contain a connection field within a list field are not currently supported.")
        if self.not_node:
            # Shopify's rule (its bulk-operations guide); the wording of its refusal is this simulator's
            errors.append(
                "Bulk queries can only contain connections whose nodes implement the Node interface. "
                f"Invalid connection fields: {', '.join(self.not_node)}."
            )
        return errors

    def sub(self, type_: GraphQLObjectType, nodes: list[FieldNode]) -> dict[str, list[FieldNode]]:
        return collect_sub_fields(schema(), self.fragments, {}, type_, nodes)

    def walk(self, type_: GraphQLObjectType, fields: dict, depth: int, in_list: bool, parent: dict | None) -> None:
        """Visits the fields selected on an object; `parent` is the selection holding them (None at the root)."""
        for nodes in fields.values():
            name = nodes[0].name.value
            if name == "__typename":
                continue
            field_type = type_.fields[name].type
            named = get_named_type(field_type)
            if is_connection(named):
                self.connection(name, named, nodes, depth, in_list, fields if depth or parent is not None else None)
            elif is_object_type(named):
                inner = is_list_type(field_type.of_type if is_non_null_type(field_type) else field_type)
                self.walk(named, self.sub(named, nodes), depth, in_list or inner, fields)

    def connection(self, name: str, named, nodes: list[FieldNode], depth: int, in_list: bool, holder) -> None:
        self.connections += 1
        self.in_list |= in_list
        self.deep |= depth + 1 > 2
        if holder is not None and not any(
            n[0].name.value == "id" and n[0].alias is None for n in holder.values()
        ):  # fmt: skip
            self.no_id.append(name)
        selected = self.sub(named, nodes)
        edges = [n for ns in selected.values() for n in ns if n.name.value == "edges"]
        others = [ns[0] for ns in selected.values() if ns[0].name.value not in ("edges", "pageInfo")]
        edge = get_named_type(named.fields["edges"].type)
        node = [n for ns in self.sub(edge, edges).values() for n in ns if n.name.value == "node"] if edges else []
        if not node or others:
            self.not_edges.append(name)
            return
        node_named = node_type(named)
        if not any(i.name == "Node" for i in getattr(node_named, "interfaces", ())):
            self.not_node.append(name)
        if is_object_type(node_named):
            node_fields = self.sub(node_named, node)
            self.walk(node_named, node_fields, depth + 1, in_list, node_fields)
