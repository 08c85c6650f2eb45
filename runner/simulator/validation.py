"""Requests checked against the Admin API schema with graphql-core, answered in Shopify's words.

Shopify runs graphql-ruby: its messages, `extensions.code`s and paths (operation, then response keys) differ from
graphql-core's. Each graphql-core rule is run tagged with its name, and its findings are reworded here."""

import re
from functools import lru_cache

from graphql import GraphQLError, GraphQLSyntaxError, Source, parse, print_ast, specified_rules, validate
from graphql.execution.values import get_variable_values
from graphql.language import (
    ArgumentNode,
    DirectiveNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    InlineFragmentNode,
    Lexer,
    OperationDefinitionNode,
    TokenKind,
    VariableDefinitionNode,
    Visitor,
    visit,
)
from graphql.type import get_named_type, is_enum_type
from graphql.utilities import TypeInfo, TypeInfoVisitor
from graphql.validation import ValidationRule

from runner.simulator.schema import missing_in, schema


class RequestErrors(Exception):
    """A request Shopify refuses before running it: its `errors`, ready to send."""

    def __init__(self, errors: list[dict]) -> None:
        super().__init__("; ".join(e["message"] for e in errors))
        self.errors = errors


# -- parsing ----------------------------------------------------------------------------------------------------------
_PUNCTUATION = {
    TokenKind.BRACE_L: "LCURLY", TokenKind.BRACE_R: "RCURLY", TokenKind.PAREN_L: "LPAREN",
    TokenKind.PAREN_R: "RPAREN", TokenKind.BRACKET_L: "LBRACKET", TokenKind.BRACKET_R: "RBRACKET",
    TokenKind.COLON: "COLON", TokenKind.EQUALS: "EQUALS", TokenKind.BANG: "BANG", TokenKind.DOLLAR: "VAR_SIGN",
    TokenKind.SPREAD: "ELLIPSIS", TokenKind.AT: "DIR_SIGN", TokenKind.PIPE: "PIPE", TokenKind.AMP: "AMP",
    TokenKind.INT: "INT", TokenKind.FLOAT: "FLOAT", TokenKind.STRING: "STRING", TokenKind.BLOCK_STRING: "STRING",
}  # fmt: skip
_KEYWORDS = {"query", "mutation", "subscription", "fragment", "on", "true", "false", "null"}


def parse_document(text: str, located: bool = True) -> DocumentNode:
    """The document, or RequestErrors with graphql-ruby's syntax error (`syntax error, unexpected ... at [l, c]`)."""
    try:
        return parse(Source(text))
    except GraphQLSyntaxError as exc:
        message, line, column = _syntax_error(text, exc.positions[0] if exc.positions else 0)
        where = f" at [{line}, {column}]" if located else ""
        raise RequestErrors([{"message": f"syntax error, {message}{where}",
                              "locations": [{"line": line, "column": column}],
                              "extensions": {"code": "PARSE_ERROR"}}]) from None  # fmt: skip


def _syntax_error(text: str, position: int) -> tuple[str, int, int]:
    """(`unexpected ...`, line, column) of the token at `position`, as graphql-ruby's lexer names it."""
    lexer, previous = Lexer(Source(text)), None
    try:
        token = lexer.advance()
        while token.kind != TokenKind.EOF and token.start < position:
            previous, token = token, lexer.advance()
    except GraphQLSyntaxError as exc:
        line, column = exc.locations[0].line, exc.locations[0].column
        bad = text[exc.positions[0]] if exc.positions and exc.positions[0] < len(text) else ""
        return f'unexpected invalid token ("{bad}")', line, column
    if token.kind == TokenKind.EOF:
        at = previous or token
        return "unexpected end of file", at.line, at.column
    value = token.value if token.value is not None else token.kind.value
    if token.kind == TokenKind.NAME:
        kind = value.upper() if value in _KEYWORDS else "IDENTIFIER"
    else:
        kind = _PUNCTUATION.get(token.kind, token.kind.name)
    return f'unexpected {kind} ("{value}")', token.line, token.column


# -- validation -------------------------------------------------------------------------------------------------------
class _Tagging:
    """A validation context whose findings are marked with the rule that made them."""

    def __init__(self, context, rule: str) -> None:
        self._context, self._rule = context, rule

    def __getattr__(self, name: str):
        return getattr(self._context, name)

    def report_error(self, error: GraphQLError) -> None:
        error.extensions = {"rule": self._rule}
        self._context.report_error(error)


def _tagged(rule: type) -> type:
    """The rule, its findings marked with its name."""

    class Tagged(rule):
        def __init__(self, context) -> None:
            super().__init__(_Tagging(context, rule.__name__))

    Tagged.__name__ = rule.__name__
    return Tagged


_RULES = tuple(_tagged(rule) for rule in specified_rules)


@lru_cache(maxsize=8)
def _version_rule(missing: tuple) -> type:
    """A rule refusing what an older API version does not have, in the words of the rule that would have."""
    fields = {(c.type_name, c.field) for c in missing if c.argument is None}
    arguments = {(c.type_name, c.field, c.argument) for c in missing if c.argument is not None}

    class VersionRule(ValidationRule):
        def enter_field(self, node: FieldNode, *_args) -> None:
            parent = self.context.get_parent_type()
            self.field = (parent.name if parent else "", node.name.value)
            if self.field in fields:
                message = f"Cannot query field '{self.field[1]}' on type '{self.field[0]}'."
                self.report_error(GraphQLError(message, node, extensions={"rule": "FieldsOnCorrectTypeRule"}))

        def enter_argument(self, node: ArgumentNode, *_args) -> None:
            # a field's arguments are visited right after it, before its selections and directives
            if self.context.get_directive() is None and (*self.field, node.name.value) in arguments:
                message = f"Unknown argument '{node.name.value}' on field '{self.field[0]}.{self.field[1]}'."
                self.report_error(GraphQLError(message, node, extensions={"rule": "KnownArgumentNamesRule"}))

    return VersionRule


def check(document: DocumentNode, version: str) -> None:
    """Raises RequestErrors when the document is not valid for this API version."""
    errors = validate(schema(), document, (*_RULES, _version_rule(missing_in(version))))
    if errors:
        raise RequestErrors(shopify_errors(document, errors))


def operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode:
    """The operation to run: the only one, or the one named `operationName` (graphql-ruby's errors otherwise)."""
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name:
        found = [op for op in ops if op.name is not None and op.name.value == name]
        if not found:
            raise RequestErrors([{"message": f'No operation named "{name}"'}])
        return found[0]
    if len(ops) != 1:
        raise RequestErrors([{"message": "An operation name is required" if ops else "No operations in document"}])
    return ops[0]


def variables(op: OperationDefinitionNode, given: dict) -> dict:
    """The variables coerced to their declared types, or Shopify's INVALID_VARIABLE errors."""
    coerced = get_variable_values(schema(), op.variable_definitions or (), given)
    if isinstance(coerced, dict):
        return coerced
    out = []
    for error in coerced:
        match = re.match(r"Variable '\$(\w+)'", error.message)
        var = next((v for v in op.variable_definitions if match and v.variable.name.value == match.group(1)), None)
        if var is None:
            out.append({"message": error.message, "extensions": {"code": "INVALID_VARIABLE"}})
            continue
        name, type_text = var.variable.name.value, print_ast(var.type)
        out.append({
            "message": f"Variable ${name} of type {type_text} was provided invalid value",
            "locations": [{"line": var.loc.start_token.line, "column": var.loc.start_token.column}] if var.loc else [],
            "extensions": {"code": "INVALID_VARIABLE", "value": given.get(name),
                           "problems": [{"path": [], "explanation": _explanation(error.message)}]},
        })  # fmt: skip
    raise RequestErrors(out)


def _explanation(message: str) -> str:
    """graphql-ruby's words for why a variable's value does not fit (graphql-core's after its ';')."""
    if "not provided" in message or "null" in message:
        return "Expected value to not be null"
    return message.split(";", 1)[-1].strip()


# -- graphql-ruby's words ---------------------------------------------------------------------------------------------
class _Index(Visitor):
    """Where each node is: graphql-ruby's path to it; for values and variables the argument they are given to; for
    type names the variable they declare."""

    def __init__(self, type_info: TypeInfo) -> None:
        super().__init__()
        self.type_info = type_info
        self.stack: list[str] = []
        self.paths: dict[int, list[str]] = {}
        self.arguments: dict[int, tuple[str, str, str, str]] = {}  # node -> (argument, owner kind, owner, type)
        self.declares: dict[int, str] = {}  # type node -> the variable it declares
        self._owners: list[tuple[str, str]] = []
        self._argument: list[tuple[str, str, str, str]] = []
        self._variable: list[str] = []

    def enter(self, node, *_args) -> None:
        step = _step(node)
        if step is not None:
            self.stack.append(step)
        self.paths[id(node)] = list(self.stack)
        if isinstance(node, FieldNode | DirectiveNode):
            self._owners.append(("Field" if isinstance(node, FieldNode) else "Directive", node.name.value))
        elif isinstance(node, VariableDefinitionNode):
            self._variable.append(node.variable.name.value)
        elif isinstance(node, ArgumentNode):
            arg = self.type_info.get_argument()
            kind, owner = self._owners[-1] if self._owners else ("Field", "")
            self._argument.append((node.name.value, kind, owner, str(arg.type) if arg else ""))
        if self._argument and not isinstance(node, ArgumentNode):
            self.arguments[id(node)] = self._argument[-1]
        if self._variable and not isinstance(node, VariableDefinitionNode):
            self.declares[id(node)] = self._variable[-1]

    def leave(self, node, *_args) -> None:
        if _step(node) is not None:
            self.stack.pop()
        if isinstance(node, FieldNode | DirectiveNode):
            self._owners.pop()
        elif isinstance(node, VariableDefinitionNode):
            self._variable.pop()
        elif isinstance(node, ArgumentNode):
            self._argument.pop()


def _step(node) -> str | None:
    if isinstance(node, OperationDefinitionNode):
        return node.operation.value + (f" {node.name.value}" if node.name else "")
    if isinstance(node, FragmentDefinitionNode):
        return f"fragment {node.name.value}"
    if isinstance(node, FieldNode):
        return (node.alias or node.name).value
    if isinstance(node, InlineFragmentNode):
        return f"... on {node.type_condition.name.value}" if node.type_condition else "..."
    if isinstance(node, ArgumentNode):
        return node.name.value
    return None


def shopify_errors(document: DocumentNode, errors: list[GraphQLError]) -> list[dict]:
    """graphql-core's validation errors as graphql-ruby words them for Shopify."""
    type_info = TypeInfo(schema())
    index = _Index(type_info)
    visit(document, TypeInfoVisitor(type_info, index))
    out: list[dict] = []
    missing: dict[int, dict] = {}
    for error in errors:
        rule = (error.extensions or {}).get("rule", "")
        # a misplaced variable is reported at its use (graphql-core names its declaration first)
        node = (
            (error.nodes[-1] if rule == "VariablesInAllowedPositionRule" else error.nodes[0]) if error.nodes else None
        )
        locations = [node.loc.source.get_location(node.loc.start)] if node is not None and node.loc else []
        message, extensions = _reword(rule, error.message, node, index)
        if rule.startswith("ProvidedRequiredArguments") and id(node) in missing:
            merged = missing[id(node)]  # graphql-ruby names every missing argument in one error
            merged["extensions"]["arguments"] += ", " + extensions["arguments"]
            merged["message"] += ", " + extensions["arguments"]
            continue
        entry = {"message": message,
                 "locations": [{"line": loc.line, "column": loc.column} for loc in locations],
                 "path": index.paths.get(id(node), []) if node is not None else [],
                 "extensions": extensions}  # fmt: skip
        if rule.startswith("ProvidedRequiredArguments"):
            missing[id(node)] = entry
        out.append(entry)
    return out


def _said(message: str, code: str, **extensions: str) -> tuple[str, dict]:
    return message, {"code": code, **extensions}


def _reword(rule: str, message: str, node, index: _Index) -> tuple[str, dict]:  # noqa: C901, PLR0911 - one table
    """(graphql-ruby's message, extensions) for one graphql-core finding."""
    q = re.findall(r"'([^']*)'", message)
    if rule == "FieldsOnCorrectTypeRule":
        return _said(f"Field '{q[0]}' doesn't exist on type '{q[1]}'", "undefinedField", typeName=q[1], fieldName=q[0])
    if rule.startswith("KnownArgumentNames"):
        kind, name = ("Directive", q[1][1:]) if q[1].startswith("@") else ("Field", q[1].split(".", 1)[-1])
        return _said(f"{kind} '{name}' doesn't accept argument '{q[0]}'", "argumentNotAccepted", name=name,
                     typeName=kind, argumentName=q[0])  # fmt: skip
    if rule.startswith("ProvidedRequiredArguments"):
        kind, name = ("Directive", q[0][1:]) if q[0].startswith("@") else ("Field", q[0])
        return _said(f"{kind} '{name}' is missing required arguments: {q[1]}", "missingRequiredArguments",
                     className=kind, name=name, arguments=q[1])  # fmt: skip
    if rule == "ValuesOfCorrectTypeRule":
        arg, kind, owner, expected = index.arguments.get(id(node), ("", "Field", "", ""))
        value = print_ast(node) if node is not None else ""
        return _said(f"Argument '{arg}' on {kind} '{owner}' has an invalid value ({value}). Expected type "
                     f"'{expected}'.", "argumentLiteralsIncompatible", typeName=kind, argumentName=arg)  # fmt: skip
    if rule == "ScalarLeafsRule":
        named = get_named_type(_type_of(q[1]))
        where = {"nodeName": f"field '{q[0]}'", "typeName": str(named)}
        if "must not have a selection" in message:
            kind = "enums" if is_enum_type(named) else "scalars"
            subs = ", ".join(f'"{_selection_name(s)}"' for s in node.selections)
            return _said(f"Selections can't be made on {kind} (field '{q[0]}' returns {named} but has selections "
                         f"[{subs}])", "selectionMismatch", **where)  # fmt: skip
        return _said(f"Field must have selections (field '{q[0]}' returns {named} but has no selections. Did you "
                     f"mean '{q[0]} {{ ... }}'?)", "selectionMismatch", **where)  # fmt: skip
    if rule == "KnownFragmentNamesRule":
        return _said(f"Fragment {q[0]} was used, but not defined", "useAndDefineFragment", fragmentName=q[0])
    if rule == "NoUnusedFragmentsRule":
        return _said(f"Fragment {q[0]} was defined, but not used", "useAndDefineFragment", fragmentName=q[0])
    if rule == "UniqueFragmentNamesRule":
        return _said(f'Fragment name "{q[0]}" must be unique', "fragmentNotUnique", fragmentName=q[0])
    if rule == "NoFragmentCyclesRule":
        return _said(f"Fragment {q[0]} contains an infinite loop", "infiniteLoop", fragmentName=q[0])
    if rule == "KnownTypeNamesRule" and id(node) in index.declares:
        var = index.declares[id(node)]
        return _said(f"{q[0]} isn't a defined input type (on ${var})", "variableRequiresValidType", typeName=q[0],
                     variableName=var)  # fmt: skip
    if rule == "KnownTypeNamesRule":
        return _said(f"No such type {q[0]}, so it can't be a fragment condition", "undefinedType", typeName=q[0])
    if rule == "FragmentsOnCompositeTypesRule":
        return _said(f"Invalid fragment on type {q[-1]} (must be Union, Interface or Object)",
                     "fragmentOnNonCompositeType", typeName=q[-1])  # fmt: skip
    if rule == "PossibleFragmentSpreadsRule":
        name = q[0] if len(q) == 3 else ""
        return _said(f"Fragment {name + ' ' if name else ''}on {q[-1]} can't be spread inside {q[-2]}",
                     "cannotSpreadFragment", fragmentName=name or "unknown", type=q[-1], parent=q[-2])  # fmt: skip
    if rule in ("NoUndefinedVariablesRule", "NoUnusedVariablesRule"):
        var, op = q[0].lstrip("$"), f"operation '{q[1]}'" if len(q) > 1 else "anonymous query"
        if rule == "NoUndefinedVariablesRule":
            return _said(f"Variable ${var} is used by {op} but not declared", "variableNotDefined", variableName=var)
        return _said(f"Variable ${var} is declared by {op} but not used", "variableNotUsed", variableName=var)
    if rule == "VariablesInAllowedPositionRule":
        arg = index.arguments.get(id(node), ("",))[0]
        kind = "Nullability mismatch" if q[1].strip("[]!") == q[2].strip("[]!") else "Type mismatch"
        return _said(f"{kind} on variable {q[0]} and argument {arg} ({q[1]} / {q[2]})", "variableMismatch",
                     variableName=q[0].lstrip("$"), typeName=q[1], argumentName=arg, errorMessage=kind)  # fmt: skip
    if rule == "VariablesAreInputTypesRule":
        return _said(f"{q[1]} isn't a valid input type (on {q[0]})", "variableRequiresValidType", typeName=q[1],
                     variableName=q[0].lstrip("$"))  # fmt: skip
    if rule == "KnownDirectivesRule" and message.startswith("Unknown directive"):
        return _said(f"Directive {q[0]} is not defined", "undefinedDirective", directiveName=q[0].lstrip("@"))
    if rule == "KnownDirectivesRule":
        where = message.rsplit(" on ", 1)[-1].rstrip(".").lower().replace("_", " ") + "s"
        return _said(f"'{q[0]}' can't be applied to {where}", "directiveCannotBeApplied", targetName=where,
                     name=q[0].lstrip("@"))  # fmt: skip
    if rule == "UniqueDirectivesPerLocationRule":
        name = q[0].lstrip("@")
        return _said(f'The directive "{name}" can only be used once at this location.',
                     "directiveNotUniqueForLocation", directiveName=name)  # fmt: skip
    if rule == "UniqueArgumentNamesRule":
        return _said(f'There can be only one argument named "{q[0]}"', "argumentNotUnique", name=q[0])
    if rule == "UniqueOperationNamesRule":
        return _said(f'Operation name "{q[0]}" must be unique', "uniquelyNamedOperations", operationName=q[0])
    if rule == "LoneAnonymousOperationRule":
        return _said("Operation name is required when multiple operations are present", "uniquelyNamedOperations")
    if rule == "UniqueVariableNamesRule":
        var = q[0].lstrip("$")
        return _said(f'There can only be one variable named "{var}"', "variableNotUnique", variableName=var)
    if rule == "OverlappingFieldsCanBeMergedRule":
        return _said(f"Field '{q[0]}' has a field conflict: {message.split(' because ', 1)[-1]}", "fieldConflict",
                     fieldName=q[0])  # fmt: skip
    return _said(message, "validationError")


def _type_of(text: str):
    return schema().get_type(text.strip("[]!")) or text


def _selection_name(selection) -> str:
    if isinstance(selection, FieldNode):
        return selection.name.value
    if isinstance(selection, InlineFragmentNode):
        return f"... on {selection.type_condition.name.value} {{ ... }}" if selection.type_condition else "..."
    return selection.name.value
