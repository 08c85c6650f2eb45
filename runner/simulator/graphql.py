"""A small GraphQL document parser: operations, fields with aliases and arguments, inline fragments, variables.

Enough of the language for Shopify Admin API requests and bulk queries; fragments by name are not supported."""

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(
    r"""
    (?P<skip>[\s,]+|\#[^\n]*)
  | (?P<spread>\.\.\.)
  | (?P<punct>[{}()\[\]:!$=@])
  | (?P<block>\"\"\"(?:\\\"\"\"|(?!\"\"\").)*\"\"\")
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
    """,
    re.VERBOSE | re.DOTALL,
)


class GraphQLSyntaxError(ValueError):
    """The document is not valid GraphQL; the message follows Shopify's wording."""


@dataclass
class Field:
    name: str
    alias: str | None = None
    args: dict = field(default_factory=dict)
    selections: list = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.alias or self.name


@dataclass
class InlineFragment:
    type_condition: str | None
    selections: list


@dataclass
class Variable:
    name: str


@dataclass
class Enum:
    value: str


@dataclass
class Operation:
    kind: str  # query or mutation
    selections: list
    variables: dict  # name -> default value


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise GraphQLSyntaxError(f"syntax error, unexpected invalid token ({text[pos]!r})")
        pos = match.end()
        if match.lastgroup != "skip":
            out.append((match.lastgroup, match.group()))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        tok = self.peek()
        if tok is None:
            raise GraphQLSyntaxError("syntax error, unexpected end of file")
        if (value is not None and tok[1] != value) or (kind is not None and tok[0] != kind):
            raise GraphQLSyntaxError(f'syntax error, unexpected {tok[1]} ("{tok[1]}")')
        self.i += 1
        return tok[1]

    def at(self, value: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[1] == value and tok[0] in ("punct", "spread")

    def document(self) -> list[Operation]:
        ops = []
        while self.peek() is not None:
            ops.append(self.operation())
        if not ops:
            raise GraphQLSyntaxError("syntax error, unexpected end of file")
        return ops

    def operation(self) -> Operation:
        if self.at("{"):
            return Operation("query", self.selection_set(), {})
        kind = self.take(kind="name")
        if kind == "fragment":
            raise GraphQLSyntaxError("syntax error, named fragments are not supported")
        if self.peek() and self.peek()[0] == "name":
            self.take()
        variables = {}
        if self.at("("):
            self.take("(")
            while not self.at(")"):
                self.take("$")
                name = self.take(kind="name")
                self.take(":")
                self.type_ref()
                variables[name] = self.value() if self.at("=") and self.take("=") else None
            self.take(")")
        return Operation(kind, self.selection_set(), variables)

    def type_ref(self) -> None:
        if self.at("["):
            self.take("[")
            self.type_ref()
            self.take("]")
        else:
            self.take(kind="name")
        if self.at("!"):
            self.take("!")

    def selection_set(self) -> list:
        self.take("{")
        items = []
        while not self.at("}"):
            items.append(self.selection())
        self.take("}")
        if not items:
            raise GraphQLSyntaxError("syntax error, unexpected }")
        return items

    def selection(self):
        if self.at("..."):
            self.take("...")
            condition = None
            if self.peek() and self.peek()[1] == "on":
                self.take("on")
                condition = self.take(kind="name")
            return InlineFragment(condition, self.selection_set())
        name = self.take(kind="name")
        alias = None
        if self.at(":"):
            self.take(":")
            alias, name = name, self.take(kind="name")
        args = {}
        if self.at("("):
            self.take("(")
            while not self.at(")"):
                key = self.take(kind="name")
                self.take(":")
                args[key] = self.value()
            self.take(")")
        selections = self.selection_set() if self.at("{") else []
        return Field(name, alias, args, selections)

    def value(self):
        tok = self.peek()
        if tok is None:
            raise GraphQLSyntaxError("syntax error, unexpected end of file")
        kind, text = tok
        if text == "$":
            self.take("$")
            return Variable(self.take(kind="name"))
        if text == "[":
            self.take("[")
            items = []
            while not self.at("]"):
                items.append(self.value())
            self.take("]")
            return items
        if text == "{":
            self.take("{")
            obj = {}
            while not self.at("}"):
                key = self.take(kind="name")
                self.take(":")
                obj[key] = self.value()
            self.take("}")
            return obj
        self.i += 1
        if kind == "string":
            return _unescape(text[1:-1])
        if kind == "block":
            return text[3:-3].replace('\\"""', '"""')
        if kind == "number":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "name":
            return {"true": True, "false": False, "null": None}.get(text, Enum(text))
        raise GraphQLSyntaxError(f'syntax error, unexpected {text} ("{text}")')


_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unescape(body: str) -> str:
    def sub(match: re.Match) -> str:
        code = match.group(1)
        if code.startswith("u"):
            return chr(int(code[1:], 16))
        return _ESCAPES.get(code, code)

    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", sub, body)


def parse(text: str) -> list[Operation]:
    """Parses a GraphQL document into its operations."""
    return _Parser(text).document()


def resolve_variables(value, variables: dict):
    """Replaces Variable references by their values (recursively)."""
    if isinstance(value, Variable):
        return variables.get(value.name)
    if isinstance(value, list):
        return [resolve_variables(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: resolve_variables(v, variables) for k, v in value.items()}
    if isinstance(value, Enum):
        return value.value
    return value
