"""Deterministic shop data: a shared catalogue, orders per day with line items, refunds and edits made later.

Every day's orders are regenerated on demand from (seed, shop, day), so nothing large is held in memory; live
changes (new orders, later refunds) are an overlay on top. Objects are shaped as the Admin API returns them."""

import datetime as dt
import random
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

CURRENCIES = {"DA": "DKK", "DE": "EUR", "NL": "EUR", "INT": "EUR", "CHF": "CHF"}
# The currencies customers pay in (Shopify Markets), the shop's own most often.
PRESENTMENT = {"DKK": ("DKK", "DKK", "DKK", "EUR"), "EUR": ("EUR", "EUR", "EUR", "USD", "CHF", "DKK"),
               "CHF": ("CHF", "CHF", "CHF", "EUR"), "USD": ("USD", "USD", "EUR")}  # fmt: skip
TAX_RATE = Decimal("0.19")  # charged on top of prices (taxesIncluded false), on lines and shipping
SOURCES = ("web", "web", "web", "web", "pos", "shopify_draft_order", "iphone")
TAGS = ("vip", "wholesale", "gift", "repeat", "promo")
ADDRESSES = tuple({"countryCodeV2": c, "provinceCode": p, "zip": z} for c, p, z in (
    ("DE", "BE", "10115"), ("DK", None, "2100"), ("NL", None, "1012"), ("CH", "ZH", "8001"), ("US", "NY", "10001"),
    ("FR", None, "75001")))  # fmt: skip  # shared by the orders: never changed
ORDER_CODE = ("WELCOME10", 10)  # a discount code: 10 % off the order, allocated across its lines
LINE_SALE = 15  # an automatic discount: 15 % off one line
RATES = {"DKK": Decimal("7.46"), "EUR": Decimal("1"), "CHF": Decimal("0.94"), "USD": Decimal("1.08")}
MAX_LAG = dt.timedelta(days=12)  # the latest an order changes after it was created
_WORDS = ("TEE", "CAP", "HOODIE", "SOCK", "BAG", "MUG", "JACKET", "SCARF", "BELT", "SHIRT", "DRESS", "BOOT")
_COLORS = ("BLK", "WHT", "RED", "BLU", "GRN", "GRY", "NVY")
_SIZES = ("XS", "S", "M", "L", "XL")


def money(cents: int) -> str:
    """Shopify's decimal format: no trailing zeros beyond one decimal place ("73.0", "101.5", "19.95")."""
    text = f"{cents // 100}.{cents % 100:02d}"
    return text[:-1] if text.endswith("0") else text


def stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def gid(kind: str, number: int) -> str:
    return f"gid://shopify/{kind}/{number}"


def money_bag(value: tuple) -> dict:
    """A MoneyBag as the API returns it, from the compact (cents, currency, presentment cents, presentment currency)
    kept in memory (_mbag makes them)."""
    return {"shopMoney": {"amount": money(value[0]), "currencyCode": value[1]},
            "presentmentMoney": {"amount": money(value[2]), "currencyCode": value[3]}}  # fmt: skip


@dataclass(frozen=True)
class Settings:
    seed: int = 1
    first_day: dt.date = dt.date(2025, 9, 1)
    last_day: dt.date = dt.date(2025, 10, 31)
    orders_per_day: int = 1000
    products: int = 300
    spike_day: dt.date | None = dt.date(2025, 10, 3)
    spike_factor: float = 3.0


class Catalogue:
    """Products and their variants, shared by every shop (prices converted to each shop's currency)."""

    def __init__(self, settings: Settings) -> None:
        rng = random.Random(f"{settings.seed}:catalogue")
        self.products: list[dict] = []
        self.variants: list[dict] = []
        base = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
        for p in range(settings.products):
            word = _WORDS[p % len(_WORDS)]
            product = {
                "n": p,
                "title": f"{word.title()} {p:03d}",
                "handle": f"{word.lower()}-{p:03d}",
                "updatedAt": stamp(base + dt.timedelta(minutes=rng.randrange(200_000))),
                **_product_details(settings.seed, p, word, base),
            }
            self.products.append(product)
            color = rng.choice(_COLORS)
            for v, size in enumerate(rng.sample(_SIZES, rng.randint(1, 4))):
                sku = None if rng.random() < 0.02 else f"{word}-{color}-{size}-{p:03d}"
                self.variants.append(
                    {
                        "n": p * 10 + v,
                        "sku": sku,
                        "title": size,
                        "price": rng.choice((995, 1495, 1995, 2495, 2995, 4995, 8900)),  # cents in EUR
                        "inventoryQuantity": rng.randint(-2, 400),
                        "updatedAt": stamp(base + dt.timedelta(minutes=rng.randrange(200_000))),
                        "product": product,
                    }
                )

    @staticmethod
    def ids(variant: dict, shop_index: int) -> tuple[str, str]:
        """A variant's and its product's GIDs in one shop (every shop has its own ids for the shared SKUs)."""
        offset = shop_index * 1_000_000_000
        return (
            gid("ProductVariant", 44_200_000_000_000 + offset + variant["n"]),
            gid("Product", 8_100_000_000_000 + offset + variant["product"]["n"]),
        )

    def variant_nodes(self, currency: str, shop_index: int) -> Iterator[dict]:
        for v in self.variants:
            variant_id, product_id = self.ids(v, shop_index)
            yield {
                "__typename": "ProductVariant",
                "id": variant_id,
                "sku": v["sku"],
                "title": v["title"],
                "displayName": f"{v['product']['title']} - {v['title']}",
                "price": money(_convert(v["price"], currency)),
                "inventoryQuantity": v["inventoryQuantity"],
                "updatedAt": v["updatedAt"],
                "createdAt": "2025-06-01T00:00:00Z",
                "product": {"id": product_id, **{k: v["product"][k] for k in PRODUCT_FIELDS}},
            }


PRODUCT_FIELDS = ("title", "handle", "updatedAt", "createdAt", "publishedAt", "productType", "vendor", "status", "tags")
_FIRST = ("Anna", "Ben", "Clara", "David", "Eva", "Felix", "Greta", "Hugo", "Ida", "Jonas", "Lena", "Mads")
_LAST = ("Jensen", "Müller", "de Vries", "Rossi", "Smith", "Keller", "Nielsen", "Bakker", "Weber", "Dubois")


def _product_details(seed: int, p: int, word: str, base: dt.datetime) -> dict:
    """A product's type, vendor, status, tags and dates, from a generator of its own (the catalogue's is left as
    it was)."""
    rng = random.Random(f"{seed}:product:{p}")
    status = rng.choice(("ACTIVE", "ACTIVE", "ACTIVE", "ACTIVE", "DRAFT", "ARCHIVED"))
    created = base - dt.timedelta(days=rng.randrange(30, 700))
    return {
        "createdAt": stamp(created),
        "publishedAt": stamp(created + dt.timedelta(days=1)) if status == "ACTIVE" else None,
        "productType": word.title(),
        "vendor": rng.choice(("Nordwind", "Lagom", "Atelier 9", "Hansen & Co")),
        "status": status,
        "tags": _interned(tuple(sorted(rng.sample(("summer", "winter", "basics", "limited", "eco"),
                                                  rng.randint(0, 2))))),
    }  # fmt: skip


LISTINGS_KEPT = 8  # per shop: the listings kept for clients paging through them


class ShopData:
    """One shop's orders: generated per day, plus live changes."""

    def __init__(self, code: str, index: int, settings: Settings, catalogue: Catalogue) -> None:
        self.code = code
        self.index = index
        self.settings = settings
        self.catalogue = catalogue
        self.currency = CURRENCIES.get(code, "USD")
        self._lock = threading.Lock()
        self._changed: dict[str, dict] = {}  # order id -> current version after live changes
        self._added: list[dict] = []  # orders created while the server runs
        self._ids: set[str] = set()  # their ids
        self.deleted_orders: set[str] = set()
        self.deletion_times: dict[str, str] = {}  # order id -> when it was deleted (REST events.json)
        self.listings: OrderedDict = OrderedDict()  # root listings kept while clients page through them (api.py)
        self.deleted_variants: set[str] = set()
        self._day_orders = lru_cache(maxsize=1)(self._generate_day)
        self.version = 0  # counts live changes: what is derived from all orders is made again after one
        self._customers: tuple[int, list[dict]] | None = None
        self.deleted_customers: set[str] = set()
        self.redacted_customers: dict[str, str] = {}  # customer id -> when Shopify redacted its personal data
        self._product_edits: dict[str, dict] = {}  # product id -> fields changed live
        self._variants_of: tuple[int, dict] | None = None

    # -- generation -------------------------------------------------------------------------------------------
    def days(self) -> list[dt.date]:
        count = (self.settings.last_day - self.settings.first_day).days + 1
        return [self.settings.first_day + dt.timedelta(days=i) for i in range(count)]

    def _generate_day(self, day: dt.date) -> tuple[dict, ...]:
        s = self.settings
        rng = random.Random(f"{s.seed}:{self.code}:{day.isoformat()}")
        count = round(s.orders_per_day * rng.uniform(0.9, 1.1) * (s.spike_factor if day == s.spike_day else 1))
        day_index = (day - dt.date(2020, 1, 1)).days
        start = dt.datetime.combine(day, dt.time(), dt.UTC)
        seconds = sorted(rng.randrange(86_400) for _ in range(count))
        return tuple(
            self._make_order(rng, start + dt.timedelta(seconds=sec, microseconds=0), day_index, i)
            for i, sec in enumerate(seconds)
        )

    def _make_order(
        self, rng: random.Random, created: dt.datetime, day_index: int, i: int, live: bool = False,
        line_count: int | None = None,
    ) -> dict:  # fmt: skip
        """An order created at `created` and, unless it is created live (now), what happened to it later; with
        `line_count` lines (quantity 1 each, ids of their own), else 1 to 5."""
        number = 6_000_000_000_000 + self.index * 10_000_000_000 + day_index * 1_000_000 + i
        lines = []
        for j in range(line_count or rng.randint(1, 5)):
            variant = rng.choice(self.catalogue.variants)
            variant_id, product_id = self.catalogue.ids(variant, self.index)
            price = _convert(variant["price"], self.currency)
            quantity = rng.choice((1, 1, 1, 2, 3)) if line_count is None else 1
            lines.append(
                {
                    "id": gid("LineItem", 15_000_000_000_000 + (number - 6_000_000_000_000) * 10 + j)
                    if line_count is None
                    else gid("LineItem", 16_000_000_000_000 + (number - 6_000_000_000_000) * 1000 + j),
                    "sku": variant["sku"],
                    "title": variant["product"]["title"],
                    "name": f"{variant['product']['title']} - {variant['title']}",
                    "quantity": quantity,
                    "currentQuantity": quantity,
                    "variant": {"id": variant_id, "sku": variant["sku"]},
                    "product": {"id": product_id},
                    "_price": price,
                    "_sale": rng.random() < 0.1,  # the automatic line discount applies
                }
            )
        presentment = rng.choice(PRESENTMENT[self.currency])
        order = {
            "id": gid("Order", number),
            "name": f"#{self.code}{day_index % 1000:03d}{i:04d}",
            "createdAt": stamp(created),
            "processedAt": stamp(created),
            "updatedAt": stamp(created),
            "cancelledAt": None,
            "cancelReason": None,
            "email": f"customer{rng.randrange(5000)}@example.com",
            "customer": {"id": gid("Customer", 7_000_000_000_000 + self.index * 10_000_000 + rng.randrange(5000))},
            "currencyCode": self.currency,
            "displayFinancialStatus": "PAID",
            "displayFulfillmentStatus": "UNFULFILLED",
            "note": None,
            "refunds": [],
            "tags": _interned(tuple(sorted(rng.sample(TAGS, rng.choice((0, 0, 0, 1, 2)))))),
            "sourceName": rng.choice(SOURCES),
            "test": rng.random() < 0.01,
            "presentmentCurrencyCode": presentment,
            "discountCodes": (ORDER_CODE[0],) if rng.random() < 0.2 else (),
            "shippingAddress": rng.choice(ADDRESSES),
            "_lines": lines,
            # the customer's currency at this order's rate (a little off the day's reference rate)
            "_rate": (RATES[presentment] / RATES[self.currency] * Decimal(rng.randint(990, 1010)) / 1000)
            if presentment != self.currency
            else Decimal(1),
            "_gateway": rng.choice(("shopify_payments", "shopify_payments", "paypal")),
        }
        updated = created
        if live:  # nothing has happened to it yet: its later life comes through live changes
            return _finish(order)
        if rng.random() < 0.9:  # fulfilled within two days
            updated = created + dt.timedelta(seconds=rng.randrange(3_600, 172_800))
            order["displayFulfillmentStatus"] = "FULFILLED"
        if rng.random() < 0.05:  # edited later: a note added
            updated = max(updated, created + dt.timedelta(seconds=rng.randrange(600, 259_200)))
            order["note"] = f"edited: gift wrap {rng.randrange(100)}"
        if rng.random() < 0.01:
            order["cancelledAt"] = stamp(created + dt.timedelta(hours=rng.randint(1, 20)))
            order["cancelReason"] = "CUSTOMER"
            updated = max(updated, created + dt.timedelta(hours=21))
        order["updatedAt"] = stamp(updated)
        if rng.random() < 0.07:  # a refund, days later
            when = created + dt.timedelta(seconds=rng.randrange(86_400, 864_000))
            _refund(order, rng, when, 1_000_000_000_000 + number - 6_000_000_000_000)
        return _finish(order)

    # -- live changes -----------------------------------------------------------------------------------------
    def add_orders(self, count: int, now: dt.datetime, rng: random.Random) -> list[str]:
        with self._lock:
            base = len(self._added)
            made = [
                self._make_order(rng, now, 9_000 + (base + k) // 1_000_000, (base + k) % 1_000_000, live=True)
                for k in range(count)
            ]
            self._added.extend(made)
            self._ids.update(o["id"] for o in made)
        return [o["id"] for o in made]

    def add_refunded_order(self, lines: int, now: dt.datetime, rng: random.Random) -> str:
        """A new order of `lines` lines, every one refunded now in a single refund; returns the refund's id."""
        with self._lock:
            base = len(self._added)
            order = self._make_order(rng, now, 9_000 + base // 1_000_000, base % 1_000_000, live=True,
                                     line_count=lines)  # fmt: skip
            number = 3_000_000_000_000 + rng.randrange(10**12)
            order["refunds"].append({
                "id": gid("Refund", number), "createdAt": stamp(now), "updatedAt": stamp(now), "note": "returned",
                "_lines": [{"lineItem": li["id"], "quantity": li["quantity"], "restockType": "RETURN"}
                           for li in order["_lines"]],
            })  # fmt: skip
            for li in order["_lines"]:
                li["currentQuantity"] = 0
            self._added.append(_finish(order))
            self._ids.add(order["id"])
        return gid("Refund", number)

    def refund(self, refund_id: str) -> dict | None:
        """A refund of an order the shop holds (not deleted), by its id; None when there is none."""
        number = int(refund_id.rsplit("/", 1)[-1]) if refund_id.rsplit("/", 1)[-1].isdigit() else 0
        candidates: list[dict] = []
        if 1_000_000_000_000 <= number < 2_000_000_000_000:  # made with its order: the order's number is in it
            order_number = number - 1_000_000_000_000
            day_index, i = divmod(order_number - self.index * 10_000_000_000, 1_000_000)
            day = dt.date(2020, 1, 1) + dt.timedelta(days=day_index)
            if self.settings.first_day <= day <= self.settings.last_day and i < len(self._day_orders(day)):
                candidates.append(self.current(self._day_orders(day)[i]))
        with self._lock:
            candidates += list(self._changed.values()) + list(self._added)
        for order in candidates:
            if order["id"] in self.deleted_orders:
                continue
            for r in order["refunds"]:
                if r["id"] == refund_id:
                    return r
        return None

    def refund_orders(self, count: int, now: dt.datetime, rng: random.Random) -> list[str]:
        refunded = []
        for _ in range(count * 20):
            if len(refunded) == count:
                break
            day = rng.choice(self.days())
            order = dict(self.current(rng.choice(self._day_orders(day))))
            if order["cancelledAt"] or not any(li["currentQuantity"] for li in order["_lines"]):
                continue
            order["_lines"] = [dict(li) for li in order["_lines"]]
            order["refunds"] = list(order["refunds"])
            _refund(order, rng, now, 2_000_000_000_000 + rng.randrange(10**12))
            order["updatedAt"] = stamp(now)
            with self._lock:
                self._changed[order["id"]] = _finish(order)
            refunded.append(order["id"])
        return refunded

    def edit_orders(self, count: int, now: dt.datetime, rng: random.Random) -> list[str]:
        """Edits existing orders now: a new note (and fulfilment), updatedAt moves to now."""
        edited = []
        for _ in range(count):
            order = dict(self.current(rng.choice(self._day_orders(rng.choice(self.days())))))
            order["note"] = f"edited at {stamp(now)}: {rng.choice(('gift wrap', 'new address', 'call first'))}"
            order["displayFulfillmentStatus"] = "FULFILLED"
            order["updatedAt"] = stamp(now)
            with self._lock:
                self._changed[order["id"]] = _finish(order)
            edited.append(order["id"])
        return edited

    def delete_orders(self, count: int, rng: random.Random, now: dt.datetime | None = None) -> list[str]:
        """Deletes `count` orders that exist (as a merchant deletes test orders), at `now`."""
        alive = [o["id"] for day in self.days() for o in self._day_orders(day) if o["id"] not in self.deleted_orders]
        alive += [o["id"] for o in self._added if o["id"] not in self.deleted_orders]
        chosen = rng.sample(alive, min(count, len(alive)))
        with self._lock:
            self.deleted_orders.update(chosen)
            if now is not None:
                self.deletion_times.update(dict.fromkeys(chosen, stamp(now)))
        return chosen

    def delete_variants(self, count: int, now: dt.datetime, rng: random.Random) -> list[dict]:
        """Deletes `count` variants that exist (their products updated now); returns them (with their product)."""
        alive = [
            v for v in self.catalogue.variant_nodes(self.currency, self.index) if v["id"] not in self.deleted_variants
        ]
        chosen = rng.sample(alive, min(count, len(alive)))
        with self._lock:
            self.deleted_variants.update(v["id"] for v in chosen)
            for v in chosen:
                self._product_edits.setdefault(v["product"]["id"], {})["updatedAt"] = stamp(now)
        return chosen

    def listing(self, key: tuple, make) -> list:
        """A listing of this version of the data (make(): its items), made once and kept while clients page
        through it: the last LISTINGS_KEPT asked for."""
        key = (self.version, *key)
        with self._lock:
            found = self.listings.get(key)
            if found is not None:
                self.listings.move_to_end(key)
                return found
        found = make()
        with self._lock:
            self.listings[key] = found
            while len(self.listings) > LISTINGS_KEPT:
                self.listings.popitem(last=False)
        return found

    def current(self, order: dict) -> dict:
        return self._changed.get(order["id"], order)

    # -- reading ----------------------------------------------------------------------------------------------
    def orders(
        self, created: tuple | None = None, updated: tuple | None = None, deleted: bool = False
    ) -> Iterator[dict]:  # fmt: skip
        """Orders in creation order, optionally within created/updated bounds (each a (lo, lo_incl, hi, hi_incl));
        with `deleted`, the deleted ones too."""
        lo = self.settings.first_day
        hi = self.settings.last_day
        if created and created[0]:
            lo = max(lo, created[0].date())
        if created and created[2]:
            hi = min(hi, created[2].date())
        if updated and updated[0]:
            lo = max(lo, (updated[0] - MAX_LAG).date())
        if updated and updated[2]:
            hi = min(hi, updated[2].date())
        day = lo
        while day <= hi:
            for order in self._day_orders(day):
                if order["id"] in self.deleted_orders and not deleted:
                    continue
                order = self.current(order)
                if within(order["_created"], created) and within(order["_updated"], updated):
                    yield order
            day += dt.timedelta(days=1)
        with self._lock:
            # Orders created while the server runs, and older ones changed later than MAX_LAG (not scanned above).
            late = list(self._added) + [
                o for o in self._changed.values() if not (lo <= o["_created"].date() <= hi) and o["id"] not in self._ids
            ]
        for order in late:
            if order["id"] in self.deleted_orders and not deleted:
                continue
            order = self.current(order)
            if within(order["_created"], created) and within(order["_updated"], updated):
                yield order

    def variants(self) -> Iterator[dict]:
        for v in self.catalogue.variant_nodes(self.currency, self.index):
            if v["id"] in self.deleted_variants:
                continue
            if edit := self._product_edits.get(v["product"]["id"]):
                v = {**v, "product": {**v["product"], **edit}}
            yield v

    def products(self) -> list[dict]:
        """Products with their variants (those not deleted), in catalogue order."""
        by_product: dict[str, dict] = {}
        for variant in self.variants():
            product = by_product.setdefault(variant["product"]["id"], {**variant["product"], "variants": []})
            product["variants"].append(variant)
        return list(by_product.values())

    def customers(self, updated: tuple | None = None) -> list[dict]:
        """The shop's customers (those with orders, not deleted), in id order: their numbers of orders and amounts
        spent from their orders, created with their first order and updated with their last (or their redaction); a
        redacted one without personal data. Made once per version of the shop's data."""
        if self._customers is None or self._customers[0] != self.version:
            self._customers = (self.version, self._make_customers())
        return [c for c in self._customers[1] if within(c["_updated"], updated)]

    def _make_customers(self) -> list[dict]:
        stats: dict[str, list] = {}
        for order in self.orders(deleted=True):  # a deleted order leaves its customer as it was
            if not order["customer"]:
                continue
            # a customer changes when it places an order (its count and amount spent, the orders' totals), not
            # when its orders change later
            row = stats.setdefault(order["customer"]["id"], [0, 0, order["_created"], order["_created"]])
            row[0] += 1
            row[1] += order["_total"]
            row[2], row[3] = min(row[2], order["_created"]), max(row[3], order["_created"])
        made = []
        for cid in sorted(stats):
            if cid in self.deleted_customers:
                continue
            count, spent, created, updated = stats[cid]
            made.append(_customer(cid, self.currency, count, spent, created, updated, self.redacted_customers.get(cid)))
        return made

    def delete_customers(self, count: int, rng: random.Random) -> list[str]:
        alive = [c["id"] for c in self.customers()]
        chosen = rng.sample(alive, min(count, len(alive)))
        with self._lock:
            self.deleted_customers.update(chosen)
        return chosen

    def redact_customers(self, count: int, now: dt.datetime, rng: random.Random) -> list[str]:
        """Shopify's redaction (customers/redact): personal data emptied, updatedAt now."""
        alive = [c["id"] for c in self.customers() if c["id"] not in self.redacted_customers]
        chosen = rng.sample(alive, min(count, len(alive)))
        with self._lock:
            self.redacted_customers.update(dict.fromkeys(chosen, stamp(now)))
        return chosen

    def edit_products(self, count: int, now: dt.datetime, rng: random.Random) -> list[str]:
        """Products renamed now (their variants' product title with them)."""
        chosen = rng.sample([p["id"] for p in self.products()], min(count, len(self.products())))
        with self._lock:
            for pid in chosen:
                self._product_edits[pid] = {"title": f"Renamed {rng.randrange(1000)}", "updatedAt": stamp(now)}
        return chosen

    def delete_products(self, count: int, rng: random.Random) -> list[str]:
        """Products deleted, with all their variants."""
        chosen = rng.sample(self.products(), min(count, len(self.products())))
        with self._lock:
            for product in chosen:
                self.deleted_variants.update(v["id"] for v in product["variants"])
        return [p["id"] for p in chosen]

    def variants_of(self, product_id: str | None) -> list[dict]:
        """One product's variants (looked up in an index made once per set of deletions)."""
        key = len(self.deleted_variants)
        if self._variants_of is None or self._variants_of[0] != key:
            self._variants_of = (key, {p["id"]: p["variants"] for p in self.products()})
        return self._variants_of[1].get(product_id, [])


def _customer(
    cid: str, currency: str, count: int, spent: int, created: dt.datetime, updated: dt.datetime, redacted: str | None
) -> dict:  # fmt: skip
    """A customer as the API returns it; its personal data from its number, or none once redacted."""
    n = int(cid.rsplit("/", 1)[1])
    rng = random.Random(n)
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    address = rng.choice(ADDRESSES)
    if redacted is not None:
        updated = max(updated, dt.datetime.fromisoformat(redacted.replace("Z", "+00:00")))
    customer = {
        "__typename": "Customer", "id": cid, "createdAt": stamp(created), "updatedAt": stamp(updated),
        "state": "DISABLED" if redacted else rng.choice(("ENABLED", "ENABLED", "DISABLED", "INVITED")),
        "tags": _interned(tuple(sorted(rng.sample(TAGS, rng.choice((0, 0, 1)))))),
        "numberOfOrders": str(count), "amountSpent": {"amount": money(spent), "currencyCode": currency},
        "defaultEmailAddress": None if redacted else {
            "emailAddress": f"{first.lower()}.{n % 100000}@example.com",
            "marketingState": rng.choice(("SUBSCRIBED", "NOT_SUBSCRIBED", "UNSUBSCRIBED"))},
        "defaultPhoneNumber": None if redacted else {"phoneNumber": f"+4530{n % 10_000_000:07d}"},
        "firstName": None if redacted else first, "lastName": None if redacted else last,
        "defaultAddress": {**address, "address1": None if redacted else f"{n % 997} Main Street",
                           "address2": None, "city": None if redacted else "Springfield"},
        "_updated": updated,
    }  # fmt: skip
    return customer


def _convert(eur_cents: int, currency: str) -> int:
    return int((Decimal(eur_cents) * RATES[currency]).to_integral_value(ROUND_HALF_UP))


def _refund(order: dict, rng: random.Random, when: dt.datetime, number: int) -> None:
    candidates = [li for li in order["_lines"] if li["currentQuantity"] > 0]
    if not candidates:
        return
    line = rng.choice(candidates)
    line["currentQuantity"] -= 1
    order["refunds"].append(
        {
            "id": gid("Refund", number),
            "createdAt": stamp(when),
            "updatedAt": stamp(when),
            "note": rng.choice((None, "damaged", "wrong size", "changed mind")),
            "_lines": [{"lineItem": line["id"], "quantity": 1, "restockType": "RETURN"}],
        }
    )
    order["updatedAt"] = max(order["updatedAt"], stamp(when))


def _finish(order: dict) -> dict:
    """Derives every amount from the lines, discounts, shipping, taxes and refunds, as Shopify's identities hold
    (taxes charged on top of prices): line discounts and the order's code allocated to lines, tax per line and on
    shipping, refunds at what was paid; keeps parsed times for filtering. Only numbers are kept: the lists made of
    them (tax lines, discount allocations, transactions, the shipping line) are made when asked (DERIVED), so a day
    of orders held in memory stays small."""
    m = (order["currencyCode"], order["_rate"], order["presentmentCurrencyCode"])
    order["_m"] = m
    lines = order["_lines"]
    gross = [li["_price"] * li["quantity"] for li in lines]
    sale = [g * LINE_SALE // 100 if li["_sale"] else 0 for li, g in zip(lines, gross, strict=True)]
    after_sale = [g - s for g, s in zip(gross, sale, strict=True)]
    code = sum(after_sale) * ORDER_CODE[1] // 100 if order["discountCodes"] else 0
    shares = _allocate(code, after_sale)
    subtotal = 0
    for i, li in enumerate(lines):
        net = after_sale[i] - shares[i]
        li["_m"], li["_gross"], li["_sale_amount"], li["_share"] = m, gross[i], sale[i], shares[i]
        li["_net"], li["_tax"], li["_discount"] = net, _tax(net), sale[i] + shares[i]
        subtotal += net
    shipping = 0 if subtotal >= 5000 else 495
    tax = sum(li["_tax"] for li in lines) + _tax(shipping)
    total = subtotal + shipping + tax
    order["_subtotal"], order["_discounts"], order["_shipping"] = subtotal, sum(sale) + code, shipping
    order["_tax_total"], order["_total"] = tax, total
    by_id = {li["id"]: li for li in lines}
    refunded = 0
    for r in order["refunds"]:  # each refunded unit at what was paid for it: its share of the net and the tax
        r["_m"] = m
        for x in r["_lines"]:
            line = by_id[x["lineItem"]]
            x["_subtotal"], x["_total_tax"] = _unit(line, "_net") * x["quantity"], _unit(line, "_tax") * x["quantity"]
        amount = sum(x["_subtotal"] + x["_total_tax"] for x in r["_lines"])
        r["totalRefundedSet"] = _mbag(m, amount)
        refunded += amount
    current = sum(_unit(li, "_net") * li["currentQuantity"] for li in lines)
    order["_current"], order["_current_total"], order["_refunded"] = current, total - refunded, refunded
    if order["refunds"]:
        order["displayFinancialStatus"] = "REFUNDED" if current == 0 else "PARTIALLY_REFUNDED"
    elif order["cancelledAt"]:
        order["displayFinancialStatus"] = "VOIDED"
    order["_created"] = dt.datetime.fromisoformat(order["createdAt"].replace("Z", "+00:00"))
    order["_updated"] = dt.datetime.fromisoformat(order["updatedAt"].replace("Z", "+00:00"))
    return order


def _mbag(m: tuple, cents: int) -> tuple:
    """A money bag in an order's money m: (shop currency, rate, presentment currency)."""
    currency, rate, other = m
    if rate == 1:
        return (cents, currency, cents, other)
    return (cents, currency, int((Decimal(cents) * rate).to_integral_value(ROUND_HALF_UP)), other)


def _vat(m: tuple, cents: int) -> list[dict]:
    return [{"title": "VAT", "rate": 0.19, "ratePercentage": 19.0, "priceSet": _mbag(m, cents)}]


def _tax_lines(obj: dict) -> list[dict] | None:
    """An order's, a line item's or the shipping line's tax lines."""
    if "_net" in obj:
        return _vat(obj["_m"], obj["_tax"])
    if "_tax_total" in obj:
        return _vat(obj["_m"], obj["_tax_total"])
    return _vat(obj["_m"], _tax(obj["_price"])) if "_shipping_tax" in obj else None


def _discount_allocations(line: dict) -> list[dict] | None:
    if "_net" not in line:
        return None
    allocations = []
    if line["_sale_amount"]:
        allocations.append({"allocatedAmountSet": _mbag(line["_m"], line["_sale_amount"]), "discountApplication": {
            "__typename": "AutomaticDiscountApplication", "index": 0, "allocationMethod": "EACH",
            "targetType": "LINE_ITEM", "targetSelection": "ENTITLED", "title": "Sale"}})  # fmt: skip
    if line["_share"]:
        allocations.append({"allocatedAmountSet": _mbag(line["_m"], line["_share"]), "discountApplication": {
            "__typename": "DiscountCodeApplication", "index": 1, "allocationMethod": "ACROSS",
            "targetType": "LINE_ITEM", "targetSelection": "ALL", "code": ORDER_CODE[0]}})  # fmt: skip
    return allocations


def _bag_of(key: str):
    """The money bag made of an object's number `key` in its order's money."""

    def bag(obj: dict) -> tuple | None:
        return _mbag(obj["_m"], obj[key]) if key in obj and "_m" in obj else None

    return bag


# Money kept as numbers: the field of each and its number.
AMOUNTS = {"subtotalPriceSet": "_subtotal", "totalDiscountsSet": "_discounts", "totalShippingPriceSet": "_shipping",
           "totalTaxSet": "_tax_total", "totalPriceSet": "_total", "currentSubtotalPriceSet": "_current",
           "currentTotalPriceSet": "_current_total", "totalRefundedSet": "_refunded",
           "originalUnitPriceSet": "_price", "originalTotalSet": "_gross", "discountedTotalSet": "_net",
           "totalDiscountSet": "_discount"}  # fmt: skip


def _shipping_line(order: dict) -> dict | None:
    if "_shipping" not in order:
        return None
    bag = _mbag(order["_m"], order["_shipping"])
    return {"__typename": "ShippingLine", "title": "Standard", "code": "STD", "source": "shopify",
            "originalPriceSet": bag, "discountedPriceSet": bag, "_m": order["_m"], "_shipping_tax": True,
            "_price": order["_shipping"]}  # fmt: skip


def _transactions(order: dict) -> list[dict] | None:
    """The sale that settled the total, and a refund transaction (its child) per refund."""
    if "_total" not in order:
        return None
    number = int(order["id"].rsplit("/", 1)[1])
    sale = {"id": gid("OrderTransaction", number * 10), "kind": "SALE", "status": "SUCCESS",
            "gateway": order["_gateway"], "amountSet": _mbag(order["_m"], order["_total"]),
            "processedAt": order["processedAt"], "createdAt": order["processedAt"], "parentTransaction": None,
            "test": order["test"]}  # fmt: skip
    return [sale] + [
        {"id": gid("OrderTransaction", number * 10 + 1 + k), "kind": "REFUND", "status": "SUCCESS",
         "gateway": order["_gateway"], "amountSet": r["totalRefundedSet"], "processedAt": r["createdAt"],
         "createdAt": r["createdAt"], "parentTransaction": {"id": sale["id"]}, "test": order["test"]}
        for k, r in enumerate(order["refunds"])
    ]  # fmt: skip


def refund_line_items(refund: dict) -> list[dict]:
    """A refund's line items as the API returns them (RefundLineItem), in order."""
    number = int(refund["id"].rsplit("/", 1)[1])
    return [
        {"id": gid("RefundLineItem", number * 1000 + k), "lineItem": {"id": x["lineItem"]}, "quantity": x["quantity"],
         "restockType": x["restockType"], "restocked": x["restockType"] != "NO_RESTOCK",
         "subtotalSet": _mbag(refund["_m"], x["_subtotal"]), "totalTaxSet": _mbag(refund["_m"], x["_total_tax"]),
         "priceSet": _mbag(refund["_m"], x["_subtotal"] // max(1, x["quantity"]))}
        for k, x in enumerate(refund["_lines"])
    ]  # fmt: skip


# Fields made from an object's numbers when asked (by name, whatever the type: each returns None for an object
# without those numbers).
DERIVED = {"taxLines": _tax_lines, "discountAllocations": _discount_allocations, "shippingLine": _shipping_line,
           "transactions": _transactions, **{name: _bag_of(key) for name, key in AMOUNTS.items()}}  # fmt: skip


@lru_cache(maxsize=64)
def _interned(value: tuple) -> tuple:
    """One object per distinct value (tags), shared by every order that has it."""
    return value


def field(obj: dict, name: str):
    """A field of a data-model object, kept or made from its numbers."""
    return obj[name] if name in obj else DERIVED[name](obj)


def _tax(cents: int) -> int:
    """19 % of `cents`, rounded half up (integers only: a Decimal per amount cost a third of the generation)."""
    return (cents * 19 * 2 + 100) // 200


def _allocate(amount: int, weights: list[int]) -> list[int]:
    """`amount` split in proportion to `weights`, the rounding left on the last line: the parts sum to it."""
    total = sum(weights)
    if not amount or not total:
        return [0] * len(weights)
    parts = [amount * w // total for w in weights[:-1]]
    return [*parts, amount - sum(parts)]


def _unit(line: dict, key: str) -> int:
    """One unit's share of a line's net or tax (the last unit takes the rounding: shares of all units sum up)."""
    return line[key] // line["quantity"]


def within(moment: dt.datetime, bounds: tuple | None) -> bool:
    if not bounds:
        return True
    lo, lo_incl, hi, hi_incl = bounds
    if lo is not None and (moment < lo or (moment == lo and not lo_incl)):
        return False
    return not (hi is not None and (moment > hi or (moment == hi and not hi_incl)))
