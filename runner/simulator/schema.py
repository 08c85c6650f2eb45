"""Shopify's Admin API schema as the simulator serves it: the newest cut in vendor/ (shopify-admin-<version>.graphql),
loaded once per process, and what differs between API versions, as data."""

import threading
from dataclasses import dataclass
from pathlib import Path

from graphql import GraphQLSchema, build_ast_schema, parse
from graphql.type import GraphQLNamedType, get_named_type, is_object_type

SCHEMA_FILE = sorted(Path(__file__).with_name("vendor").glob("shopify-admin-*.graphql"))[-1]
MAX_QUERY_BYTES = 65_535
_lock = threading.Lock()
_schema: GraphQLSchema | None = None


def schema() -> GraphQLSchema:
    """The Admin API schema (built on first use, about a second; then shared by every thread)."""
    global _schema
    with _lock:
        if _schema is None:
            document = parse(SCHEMA_FILE.read_text(), no_location=True)
            _schema = build_ast_schema(document, assume_valid_sdl=True, assume_valid=True)
        return _schema


def schema_version() -> str:
    """The API version the cut was made from (its header says)."""
    with SCHEMA_FILE.open() as f:
        for line in f:
            if line.startswith("# version: "):
                return line.removeprefix("# version: ").strip()
    raise ValueError(f"{SCHEMA_FILE} names no version")


def version_at_least(version: str, minimum: str) -> bool:
    return version == "unstable" or version >= minimum


@dataclass(frozen=True)
class Change:
    """Something of the schema that exists only from one API version on."""

    since: str
    type_name: str
    field: str
    argument: str | None = None


# What the 2026-01 schema has that older versions do not (Shopify's changelog; checked against their schemas).
CHANGES = (
    Change("2026-01", "QueryRoot", "bulkOperation"),
    Change("2026-01", "QueryRoot", "bulkOperations"),
    Change("2025-07", "Mutation", "bulkOperationRunQuery", "groupObjects"),
)


def missing_in(version: str) -> tuple[Change, ...]:
    """The parts of the schema this API version does not have yet."""
    return tuple(c for c in CHANGES if not version_at_least(version, c.since))


def concurrent_operations(version: str) -> int:
    """Bulk query operations an app may run at once per shop: five from 2026-01, one before."""
    return 5 if version_at_least(version, "2026-01") else 1


def group_objects_default(version: str) -> bool:
    """groupObjects when not given: true through 2025-10 (always grouped before the argument existed), then false."""
    return not version_at_least(version, "2026-01")


def is_connection(named: GraphQLNamedType) -> bool:
    """A Relay connection type (Shopify's connections are named *Connection and have edges)."""
    return is_object_type(named) and named.name.endswith("Connection") and "edges" in named.fields


def node_type(connection: GraphQLNamedType) -> GraphQLNamedType:
    """The type of a connection's nodes."""
    return get_named_type(get_named_type(connection.fields["edges"].type).fields["node"].type)
