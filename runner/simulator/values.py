"""A value for any field of the schema: the data model's where it has one, else a deterministic value of the field's
type (null where the type is nullable), so any valid selection gets an answer."""

from graphql.type import (
    GraphQLOutputType,
    get_named_type,
    is_abstract_type,
    is_enum_type,
    is_list_type,
    is_non_null_type,
    is_object_type,
)

from runner.simulator import data
from runner.simulator.data import ShopData, money_bag

MISSING = object()
_SCALARS = {
    "ID": "gid://shopify/Node/0", "String": "", "Int": 0, "Float": 0.0, "Boolean": False,
    "DateTime": "1970-01-01T00:00:00Z", "Date": "1970-01-01", "Decimal": "0.0", "Money": "0.0",
    "UnsignedInt64": "0", "BigInt": "0", "URL": "https://example.myshopify.com", "HTML": "", "JSON": {},
    "FormattedString": "", "Color": "#000000", "UtcOffset": "+00:00",
}  # fmt: skip


def default(type_: GraphQLOutputType):
    """The value of a field the data model does not have: null where nullable, else a fixed value of its type (an
    empty object, whose own fields then follow the same rule)."""
    if not is_non_null_type(type_):
        return None
    inner = type_.of_type
    if is_list_type(inner):
        return []
    if is_enum_type(inner):
        return next(iter(inner.values))
    if is_object_type(inner):
        return {}
    if is_abstract_type(inner):
        return None
    return _SCALARS.get(inner.name, "")


def _legacy_id(obj: dict):
    return obj["id"].rsplit("/", 1)[-1] if isinstance(obj.get("id"), str) else MISSING


def _made(make):
    """A data-model field made when asked (runner.simulator.data.DERIVED), MISSING for objects without its numbers."""

    def value(obj: dict):
        made = make(obj)
        return MISSING if made is None else made

    return value


# fields computed from others of the data model
DERIVED = {"legacyResourceId": _legacy_id, **{name: _made(make) for name, make in data.DERIVED.items()}}


def is_money_bag(type_: GraphQLOutputType) -> bool:
    """MoneyBag fields are kept as (cents, currency, presentment cents, presentment currency) in the data model."""
    return get_named_type(type_).name == "MoneyBag"


def value(obj: dict, name: str, type_: GraphQLOutputType):
    """The field `name` of a data-model object, shaped as the API returns it, or MISSING."""
    found = obj.get(name, MISSING)
    if found is MISSING:
        found = DERIVED[name](obj) if name in DERIVED else MISSING
    if isinstance(found, tuple) and is_money_bag(type_):
        return money_bag(found)
    return found


def children(shop: ShopData, obj: dict, type_name: str, field: str) -> list[dict]:
    """The nodes of a nested connection of a data-model object (empty where the model has none)."""
    if (type_name, field) == ("Order", "lineItems"):
        return obj.get("_lines") or []
    if (type_name, field) == ("Refund", "refundLineItems"):
        return data.refund_line_items(obj) if "_m" in obj else []
    if (type_name, field) == ("Product", "variants"):
        return obj["variants"] if "variants" in obj else shop.variants_of(obj.get("id"))
    return []
