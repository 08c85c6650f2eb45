"""`bulk-sync simulate`: serve simulated shops over HTTP, or dump their ground truth."""

import argparse
import datetime as dt
import json
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from runner.shared import ConfigError
from runner.simulator.auth import App
from runner.simulator.data import Settings
from runner.simulator.faults import KINDS, FaultError, Faults
from runner.simulator.operations import Timing
from runner.simulator.truth import TABLES

if TYPE_CHECKING:
    from runner.simulator.shopify import Shopify


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shops", default="DA,DE,NL,INT,CHF", help="shop codes (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787, help="0 for a free port (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--from", dest="first_day", type=dt.date.fromisoformat, default=dt.date(2025, 9, 1))
    parser.add_argument("--to", dest="last_day", type=dt.date.fromisoformat, default=dt.date(2025, 10, 31))
    parser.add_argument("--orders-per-day", type=int, default=1000)
    parser.add_argument("--products", type=int, default=300, help="products in the catalogue every shop sells")
    parser.add_argument("--start-latency", type=float, default=0.5, help="seconds an operation stays CREATED")
    parser.add_argument("--objects-per-second", type=float, default=50_000.0, help="export speed while RUNNING")
    parser.add_argument(
        "--download-rate", type=float, default=0.0, metavar="BYTES_PER_S",
        help="serve each export download at this many bytes a second, like a real link (default: as fast as it goes)",
    )  # fmt: skip
    parser.add_argument("--url-lifetime", type=float, default=7 * 86_400, help="seconds an export URL stays valid")
    parser.add_argument(
        "--token-lifetime", type=float, default=86_399, help="seconds a client credentials token stays valid"
    )
    parser.add_argument("--bucket-size", type=float, default=2000.0, help="cost points a shop's bucket holds")
    parser.add_argument("--restore-rate", type=float, default=100.0, help="cost points restored per second")
    parser.add_argument("--throttle-429", action="store_true", help="answer throttling with HTTP 429 + Retry-After")
    parser.add_argument("--faults", type=Path, help='JSON file: {"DA": {"op_failed_timeout": 2}, "*": {...}}')
    parser.add_argument(
        "--fault", action="append", default=[], metavar="SHOP:KIND=VALUE",
        help=f"one fault rule (SHOP may be *); kinds: {', '.join(KINDS)}",
    )  # fmt: skip
    parser.add_argument(
        "--webhook-url", help="POST bulk_operations/finish notifications here, signed with SHOPIFY_WEBHOOK_SECRET"
    )
    parser.add_argument(
        "--domain", action="append", default=[], metavar="CODE=HOST",
        help="a shop's domain, for clients using Shopify's own paths at the root (default: <code>.myshopify.com)",
    )  # fmt: skip
    parser.add_argument(
        "--export-cache", type=Path, metavar="DIR",
        help="keep every export in DIR and serve it again when the same shop, data and query ask (benchmarks)",
    )  # fmt: skip
    parser.add_argument(
        "--public-url", metavar="URL",
        help="the scheme and host clients reach the simulator at, for the URLs it hands out (behind a TLS front); "
        "default: X-Forwarded-Proto/-Host when a front sends them, else the request's Host",
    )  # fmt: skip
    parser.add_argument("--dump-truth", type=Path, metavar="DIR", help="write the ground truth as JSONL and exit")


def _credentials(codes: list[str], env: dict[str, str]) -> tuple[dict[str, str | None], dict[str, App]]:
    """What each shop accepts, from the variables that configure the runner: its static token and the app installed
    on it (its own client credentials, else the one app's)."""
    tokens, apps = {}, {}
    for code in codes:
        tokens[code] = env.get(f"SHOP_{code}_TOKEN") or None
        client_id = env.get(f"SHOP_{code}_CLIENT_ID") or env.get("SHOPIFY_CLIENT_ID")
        secret = env.get(f"SHOP_{code}_CLIENT_SECRET") or env.get("SHOPIFY_CLIENT_SECRET")
        if client_id and secret:
            apps[code] = App(client_id, secret)
        if not tokens[code] and code not in apps:
            raise ConfigError(
                f"no credentials for shop {code}: set SHOP_{code}_TOKEN, or SHOP_{code}_CLIENT_ID and "
                f"SHOP_{code}_CLIENT_SECRET (or SHOPIFY_CLIENT_ID and SHOPIFY_CLIENT_SECRET for every shop)"
            )
    return tokens, apps


def _domains(specs: list[str], codes: list[str]) -> dict[str, str]:
    domains = {}
    for spec in specs:
        code, _, host = spec.partition("=")
        if code.strip().upper() not in codes or not host.strip():
            raise ConfigError(f"bad --domain {spec!r}: use CODE=HOST with one of {', '.join(codes)}")
        domains[code.strip().upper()] = host.strip().lower()
    return domains


def _faults(args: argparse.Namespace) -> Faults:
    spec: dict = json.loads(args.faults.read_text()) if args.faults else {}
    for rule in args.fault:
        shop, _, rest = rule.partition(":")
        kind, _, value = rest.partition("=")
        try:
            spec.setdefault(shop, {})[kind] = float(value) if "." in value else int(value)
        except ValueError:
            raise ConfigError(f"bad --fault {rule!r}: use SHOP:KIND=VALUE, e.g. DA:op_failed_timeout=2") from None
    try:
        return Faults(spec, args.seed)
    except FaultError as exc:
        raise ConfigError(str(exc)) from None


def require_graphql() -> None:
    """The simulator judges requests with graphql-core, an extra of the package (not needed to run bulk-sync)."""
    try:
        import graphql  # noqa: F401
    except ImportError:
        raise ConfigError("the Shopify simulator needs graphql-core: pip install 'bulk-sync[simulator]'") from None


def build(args: argparse.Namespace) -> "Shopify":
    require_graphql()
    from runner.simulator.shopify import Config, Shopify

    codes = [c.strip().upper() for c in args.shops.split(",") if c.strip()]
    if not codes:
        raise ConfigError("--shops needs at least one shop code")
    settings = Settings(seed=args.seed, first_day=args.first_day, last_day=args.last_day,
                        orders_per_day=args.orders_per_day, products=args.products)  # fmt: skip
    timing = Timing(
        args.start_latency, args.objects_per_second, url_lifetime=args.url_lifetime, download_rate=args.download_rate
    )
    tokens, apps = _credentials(codes, dict(os.environ))
    config = Config(tokens, settings, timing, args.bucket_size, args.restore_rate, args.throttle_429, apps=apps,
                    token_lifetime=args.token_lifetime, domains=_domains(args.domain, codes),
                    export_cache=args.export_cache)  # fmt: skip
    if args.webhook_url:
        config.webhook_url = args.webhook_url
        config.webhook_secret = os.environ.get("SHOPIFY_WEBHOOK_SECRET") or ""
        if not config.webhook_secret:
            raise ConfigError("--webhook-url needs SHOPIFY_WEBHOOK_SECRET to sign the notifications")
    return Shopify(config, _faults(args))


def dump_truth(shopify: "Shopify", directory: Path) -> dict[str, int]:
    directory.mkdir(parents=True, exist_ok=True)
    counts = {}
    for table in TABLES:
        with (directory / f"{table}.jsonl").open("w") as out:
            counts[table] = 0
            for code in sorted(shopify.shops):
                for row in shopify.truth(code, table):
                    out.write(json.dumps(row) + "\n")
                    counts[table] += 1
    return counts


def run(args: argparse.Namespace) -> int:
    shopify = build(args)
    from runner.simulator.server import SimulatorServer

    if args.dump_truth:
        counts = dump_truth(shopify, args.dump_truth)
        print(", ".join(f"{table} {n}" for table, n in counts.items()) + f" rows in {args.dump_truth}")
        shopify.close()
        return 0
    try:
        server = SimulatorServer(shopify, args.host, args.port, public_url=args.public_url)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    print(f"simulating {len(shopify.shops)} shops at {server.base_url} (stats: {server.base_url}/_admin/stats)")
    for code in shopify.shops:
        print(f"  export SHOP_{code}_URL={server.shop_url(code)}  # or Host: {shopify.domain(code)} at the root")
    stop.wait()
    server.stop()
    return 0
