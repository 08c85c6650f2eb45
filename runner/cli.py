"""The `bulk-sync` command line."""

import argparse
import sys

from runner import __version__
from runner.errors import ConfigError


def _migrate(args: argparse.Namespace) -> int:
    from runner.db import connect
    from runner.migrate import migrate

    with connect(args.database_url) as conn:
        applied = migrate(conn)
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


def _status(args: argparse.Namespace) -> int:
    from runner.db import connect
    from runner.status import render

    with connect(args.database_url, autocommit=True) as conn:
        print(render(conn))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="bulk-sync", description="Shopify bulk exports into PostgreSQL.")
    top.add_argument("--version", action="version", version=f"bulk-sync {__version__}")
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, func, text in (
        ("migrate", _migrate, "apply the sql/ migrations (idempotent)"),
        ("status", _status, "show jobs and progress per shop and entity"),
    ):
        verb = verbs.add_parser(name, help=text, description=text)
        verb.add_argument("--database-url", help="overrides DATABASE_URL")
        verb.set_defaults(func=func)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"bulk-sync: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
