"""Cuts the part of Shopify's Admin API schema that the simulator serves out of a full schema file.

    python -m runner.simulator.cut_schema FULL.graphql --version 2026-01 [--out FILE]

Keeps the root fields the simulator implements and every type reachable from them: field and argument types,
interfaces, and every type implementing a kept interface (so `node(id:) { ... on Order }` stays valid). Descriptions
are dropped; deprecations and directive definitions are kept. The first lines of the output say where it came from."""

import argparse
import hashlib
import sys
from pathlib import Path

from graphql import parse, print_ast
from graphql.language import (
    DirectiveDefinitionNode,
    DocumentNode,
    InterfaceTypeDefinitionNode,
    NamedTypeNode,
    SchemaDefinitionNode,
    UnionTypeDefinitionNode,
)

ROOTS = {
    "QueryRoot": ("orders", "productVariants", "products", "customers", "shop", "node", "nodes", "bulkOperation",
                  "bulkOperations", "currentBulkOperation", "currentAppInstallation"),
    "Mutation": ("bulkOperationRunQuery", "bulkOperationCancel"),
}  # fmt: skip
BUILT_IN = {"String", "Int", "Float", "Boolean", "ID"}
VENDOR = Path(__file__).with_name("vendor")  # Shopify's text: kept as cut, never edited


def _named(type_node) -> str:
    while not isinstance(type_node, NamedTypeNode):
        type_node = type_node.type
    return type_node.name.value


def _references(node) -> list[str]:
    """The names of the types a definition points at: fields, arguments, interfaces, union members."""
    out = [i.name.value for i in getattr(node, "interfaces", None) or ()]
    out += [t.name.value for t in getattr(node, "types", None) or ()]
    for f in getattr(node, "fields", None) or ():
        out.append(_named(f.type))
        out += [_named(a.type) for a in getattr(f, "arguments", None) or ()]
    return out


def _with(node, **changes):
    """A copy of an AST node with some attributes replaced."""
    return type(node)(**{**{k: getattr(node, k) for k in node.keys if k != "loc"}, **changes})


def _strip(node):
    """The definition without descriptions, its fields' and arguments' included."""
    changes = {"description": None} if "description" in node.keys else {}
    for key in ("fields", "arguments", "values"):
        if getattr(node, key, None):
            changes[key] = tuple(_strip(child) for child in getattr(node, key))
    return _with(node, **changes)


def cut(full: DocumentNode, roots: dict[str, tuple[str, ...]] = ROOTS) -> tuple[list, int, int]:
    """(kept definitions in order, types kept, types in the full schema)."""
    types = {d.name.value: d for d in full.definitions if hasattr(d, "name") and d.name is not None}
    types = {k: v for k, v in types.items() if not isinstance(v, DirectiveDefinitionNode)}
    implementers: dict[str, list[str]] = {}
    for name, node in types.items():
        for interface in getattr(node, "interfaces", None) or ():
            implementers.setdefault(interface.name.value, []).append(name)
    kept_roots = {}
    for root, names in roots.items():
        node = types[root]
        missing = set(names) - {f.name.value for f in node.fields}
        if missing:
            raise SystemExit(f"{root} has no field {', '.join(sorted(missing))} in this schema")
        kept_roots[root] = _with(node, fields=tuple(f for f in node.fields if f.name.value in names))
    seen: set[str] = set()
    todo = list(kept_roots)
    while todo:
        name = todo.pop()
        if name in seen or name in BUILT_IN:
            continue
        seen.add(name)
        node = kept_roots.get(name, types[name])
        todo += _references(node)
        if isinstance(node, InterfaceTypeDefinitionNode | UnionTypeDefinitionNode):
            todo += implementers.get(name, [])
    directives = [d for d in full.definitions if isinstance(d, DirectiveDefinitionNode)]
    schema = [d for d in full.definitions if isinstance(d, SchemaDefinitionNode)]
    kept = [_strip(kept_roots.get(n, types[n])) for n in sorted(seen)]
    total = sum(1 for n, d in types.items() if not isinstance(d, SchemaDefinitionNode) and n not in BUILT_IN)
    return schema + [_strip(d) for d in directives] + kept, len(kept), total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("full", type=Path, help="a full Admin API schema in SDL (e.g. ShopifySharp's 2026-01 file)")
    parser.add_argument("--version", required=True, help="the API version the file is, e.g. 2026-01")
    parser.add_argument("--out", type=Path, help="default: runner/simulator/vendor/shopify-admin-<version>.graphql")
    args = parser.parse_args(argv)
    args.out = args.out or VENDOR / f"shopify-admin-{args.version}.graphql"
    raw = args.full.read_bytes()
    definitions, kept, total = cut(parse(raw.decode(), no_location=True), ROOTS)
    roots = "; ".join(f"{root}: {', '.join(names)}" for root, names in ROOTS.items())
    header = (
        f"# Shopify Admin API {args.version}: the part the bulk-sync simulator serves.\n"
        f"# Cut from {args.full.name} (sha256 {hashlib.sha256(raw).hexdigest()}, {len(raw)} bytes)\n"
        f"# by `python -m runner.simulator.cut_schema {args.full.name} --version {args.version}`.\n"
        f"# Roots kept: {roots}.\n"
        f"# Types kept: {kept} of {total}. Descriptions dropped. Do not edit: cut again from a newer file.\n"
        f"# version: {args.version}\n\n"
    )
    text = "\n\n".join(print_ast(d) for d in definitions)
    args.out.write_text(header + text + "\n")
    print(f"{args.out}: {kept} of {total} types, {args.out.stat().st_size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
