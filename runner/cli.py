"""The `bulk-sync` command line."""

import argparse
import sys

from runner import __version__
from runner.shared import ConfigError


class _Parser(argparse.ArgumentParser):
    """argparse whose own errors are one line, naming the verb and where its help is (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _bounded(kind: type, low: float, high: float | None = None, what: str = "") -> "callable":
    """An argparse type: a number of `kind` within [low, high]."""

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not {'a whole number' if kind is int else 'a number'}: {text!r}"
            ) from None
        if value < low or (high is not None and value > high) or value != value:
            limit = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: {what or 'use'} {limit}")
        return value

    return convert


_PORT = _bounded(int, 1, 65535, "a port is")


def _migrate(args: argparse.Namespace) -> int:
    import psycopg

    from runner.db import connect
    from runner.migrate import migrate

    with connect(args.database_url) as conn:
        try:
            applied = migrate(conn)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ConfigError(f"migrate lacks a privilege: {str(exc).splitlines()[0]}") from None
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


def _status(args: argparse.Namespace) -> int:
    from runner.db import connect
    from runner.status import render, snapshot, watch

    with connect(args.database_url, autocommit=True) as conn:
        if args.watch:
            watch(conn, args.interval)
        else:
            print(render(snapshot(conn)))
    return 0


def _jobs(args: argparse.Namespace) -> int:
    from runner.db import connect

    with connect(args.database_url, autocommit=True) as conn:
        args.shop = _shop(conn, args.shop)
        rows = conn.execute(
            """select id, shop, entity, status, coalesce(to_char(window_start at time zone 'UTC', 'YYYY-MM-DD HH24:MI'),
                      start_date::text), attempts, coalesce(last_error, '')
               from bulk_sync.jobs
               where (not %(failed)s or status = 'failed') and (%(shop)s::text is null or shop = %(shop)s)
               order by (status = 'failed') desc, updated_at desc limit %(limit)s""",
            {"failed": args.failed, "shop": args.shop, "limit": args.limit},
        ).fetchall()
    if not rows:
        print("no failed jobs" if args.failed else "no jobs")
        return 0
    print(f"{'id':>7}  {'shop':<5} {'entity':<8} {'status':<16}{'window (UTC)':<18}{'tries':>5}  last error")
    for jid, shop, entity, status, window, attempts, error in rows:
        print(f"{jid:>7}  {shop:<5} {entity:<8} {status:<16}{window or '':<18}{attempts:>5}  {error[:120]}")
    return 0


def _shop(conn, code: str | None) -> str | None:
    """A --shop value as registered (codes are upper case); a ConfigError naming the known ones when unknown."""
    if code is None:
        return None
    known = [c for (c,) in conn.execute("select code from bulk_sync.shops order by code")]
    if code.upper() not in known:
        raise ConfigError(f"unknown shop {code!r}: registered are {', '.join(known) or 'none'}")
    return code.upper()


def _since(text: str):
    """A moment: ISO 8601 (UTC unless it says otherwise), or a time ago: 90s, 30m, 2h, 1d."""
    import datetime as dt
    import re

    ago = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text.strip())
    if ago:
        seconds = float(ago.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[ago.group(2)]
        try:
            return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
        except OverflowError:
            raise argparse.ArgumentTypeError(f"{text!r} reaches back before year 1") from None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (e.g. 2025-09-01T10:00, or 2h for two hours ago)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _timeline(args: argparse.Namespace) -> int:
    from pathlib import Path

    from runner import timeline
    from runner.db import connect

    out = Path(args.out)
    if not out.parent.is_dir():
        raise ConfigError(f"cannot write {args.out}: folder {out.parent} does not exist")
    with connect(args.database_url, autocommit=True) as conn:
        jobs = timeline.jobs(conn, _shop(conn, args.shop), args.since)
    try:
        out.write_text(timeline.svg(jobs))
    except OSError as exc:
        raise ConfigError(f"cannot write {args.out}: {exc.strerror}") from None
    print(f"wrote {args.out}: {len(jobs)} jobs, {timeline.operations(jobs)} Shopify operations")
    return 0


def _run(args: argparse.Namespace) -> int:
    import os
    import socket

    from runner import log
    from runner.config import check
    from runner.db import connect, database_url
    from runner.pool import Budget
    from runner.worker import Runner

    log.use_format(args.log_format)
    dsn = database_url(args.database_url)
    name = args.name or f"{socket.gethostname()}:{os.getpid()}"
    budget = Budget(dsn, args.db_connections, f"bulk-sync run {name}")  # refuses a budget below 2; connects later
    env = dict(os.environ)
    only = sorted({c.strip().upper() for c in args.shops.split(",") if c.strip()}) if args.shops else None
    with connect(dsn) as conn:
        check(env, conn, only)
    runner = Runner(dsn, env, args.concurrency, name, args.until_idle, only=only, budget=budget)
    budget.open()
    webhooks = None
    if args.webhook_port is not None:
        from runner.webhook import WebhookServer

        if not any(k == "SHOPIFY_WEBHOOK_SECRET" or k.endswith("CLIENT_SECRET") for k, v in env.items() if v):
            raise ConfigError(
                "--webhook-port needs the secret that signs webhooks: the app's client secret "
                "(SHOP_<CODE>_CLIENT_SECRET or SHOPIFY_CLIENT_SECRET) or SHOPIFY_WEBHOOK_SECRET"
            )
        try:
            webhooks = WebhookServer(budget, env, args.webhook_port, args.webhook_host)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {args.webhook_host}:{args.webhook_port}: {exc.strerror}") from None
        webhooks.start()
    health = None
    if args.metrics_port is not None:
        from runner.health import HealthServer

        try:
            health = HealthServer(runner, args.metrics_port, args.metrics_host).start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {args.metrics_host}:{args.metrics_port}: {exc.strerror}") from None
    runner.install_signal_handlers()
    try:
        return runner.run()
    finally:
        if webhooks is not None:
            webhooks.stop()
        if health is not None:
            health.stop()
        budget.close()


def _demo(args: argparse.Namespace) -> int:
    import subprocess
    from pathlib import Path

    from runner.demo import run, stop
    from runner.simulator.cli import require_graphql

    require_graphql()
    try:
        if args.stop:
            return stop(Path(args.dir))
        return run(
            Path(args.dir), reset=args.reset, port=args.port, orders_per_day=args.orders_per_day,
            picture=Path(args.timeline) if args.timeline else None, keep=args.keep,
        )  # fmt: skip
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    except subprocess.CalledProcessError as exc:  # initdb or pg_ctl refused: their own reason, in one line
        reason = [line for line in f"{exc.stderr or ''}{exc.stdout or ''}".splitlines() if line.strip()]
        tool = next((Path(str(c)).name for c in exc.cmd if "/" in str(c)), str(exc.cmd[0]))
        raise ConfigError(f"{tool} failed: {reason[-1] if reason else exc}") from None


def _mistake(exc: Exception, verb: str) -> str | None:
    """What the user can do about a database error at the start of a verb (None: not the user's mistake)."""
    import psycopg

    from runner.db import first_line

    if not isinstance(exc, psycopg.Error):
        return None
    first = first_line(exc)
    role = "bulk_sync_runner" if verb == "run" else "bulk_sync_operator"  # migrate says its own (_migrate)
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return f"{verb}: {first}: connect as a role granted {role} (see README, Roles)"
    if isinstance(
        exc, psycopg.errors.UndefinedTable | psycopg.errors.UndefinedFunction | psycopg.errors.InvalidSchemaName
    ):
        return f"{verb}: this database has no bulk-sync ({first}): run bulk-sync migrate first"
    return None


def parser() -> argparse.ArgumentParser:
    from runner.pool import DEFAULT_SIZE

    top = _Parser(prog="bulk-sync", description="Shopify bulk exports into PostgreSQL.")
    top.add_argument("--version", action="version", version=f"bulk-sync {__version__}")
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, func, text in (
        ("migrate", _migrate, "apply the sql/ migrations (idempotent)"),
        ("status", _status, "progress per shop and entity, jobs by state, throughput, latest problems"),
        ("jobs", _jobs, "list jobs, problems first, with their last errors"),
    ):
        verb = verbs.add_parser(name, help=text, description=text)
        verb.add_argument("--database-url", help="overrides DATABASE_URL")
        verb.set_defaults(func=func)
        if name == "status":
            verb.add_argument("--watch", action="store_true", help="redraw until interrupted")
            verb.add_argument("--interval", type=_bounded(float, 0.1, what="seconds between redraws,"), default=2.0,
                              help="seconds between redraws, at least 0.1 (default: 2)")  # fmt: skip
        if name == "jobs":
            verb.add_argument("--failed", action="store_true", help="only failed jobs")
            verb.add_argument("--shop", help="only this shop")
            verb.add_argument("--limit", type=_bounded(int, 0), default=50, help="at most this many (default: 50)")
    picture = verbs.add_parser(
        "timeline",
        help="draw the jobs' operations, downloads and imports per shop on a time axis (SVG)",
        description="Reads the audit trail (bulk_sync.job_runs) and draws one lane per shop: a bar per Shopify "
        "operation (created to COMPLETED), per download and per import, failures, retries and splits marked.",
    )
    picture.add_argument("--database-url", help="overrides DATABASE_URL")
    picture.add_argument("--shop", help="only this shop")
    picture.add_argument("--since", type=_since, help="jobs with a step since then: ISO 8601, or e.g. 2h (ago)")
    picture.add_argument("--out", required=True, help="the SVG file to write")
    picture.set_defaults(func=_timeline)
    run = verbs.add_parser(
        "run",
        help="the runner: take tasks from the database, call Shopify, report back",
        description="Claims tasks (start, poll, download, import), performs their HTTP side and reports the "
        "outcome through SQL functions. Needs DATABASE_URL and, for every active shop it serves, SHOP_<CODE>_TOKEN "
        "or client credentials (SHOP_<CODE>_CLIENT_ID/_SECRET, or SHOPIFY_CLIENT_ID/_SECRET for all); optional "
        "SHOP_<CODE>_URL. SIGTERM/SIGINT: finish or give back the steps in hand, then exit.",
    )
    run.add_argument("--database-url", help="overrides DATABASE_URL")
    run.add_argument("--concurrency", type=_bounded(int, 1), default=2,
                     help="tasks in flight at once (default: %(default)s)")  # fmt: skip
    run.add_argument(
        "--db-connections", type=_bounded(int, 2, what="a runner needs"), default=DEFAULT_SIZE,
        help="database connections this process holds at most, whatever its concurrency (default: %(default)s)",
    )  # fmt: skip
    run.add_argument("--until-idle", action="store_true", help="exit once no job can make progress")
    run.add_argument("--name", help="worker name in leases and the audit trail (default: host:pid)")
    run.add_argument(
        "--shops", help="serve only these shop codes, e.g. DE,NL (default: every active shop); downloads and "
        "imports of any shop are still taken",
    )  # fmt: skip
    run.add_argument(
        "--webhook-port", type=_PORT,
        help="receive Shopify's webhooks (bulk_operations/finish, deletions) on this port",
    )  # fmt: skip
    run.add_argument("--webhook-host", default="0.0.0.0", help="address to listen on (default: %(default)s)")  # noqa: S104
    run.add_argument(
        "--metrics-port", type=_PORT,
        help="serve /metrics (Prometheus), /healthz (worker loops alive) and /readyz (database answers and a claim "
        "succeeded within lease_seconds) on this port",
    )  # fmt: skip
    run.add_argument("--metrics-host", default="0.0.0.0", help="address to listen on (default: %(default)s)")  # noqa: S104
    run.add_argument(
        "--log-format", choices=("logfmt", "json"), default="logfmt",
        help="one line per step as key=value pairs or as a JSON object (default: %(default)s)",
    )  # fmt: skip
    run.set_defaults(func=_run)
    demo = verbs.add_parser(
        "demo",
        help="a whole backfill on this machine: private PostgreSQL, simulated shops, runners, progress",
        description="Starts a private PostgreSQL (pg_cron, pgmq) and the Shopify simulator for DA, DE, NL, INT "
        "and CHF, queues the 2025-09-01..2025-10-31 backfill, runs it to completion with progress, compares "
        "every table with the simulator's ground truth, changes the shops' data and runs one incremental round, "
        "compares again, and stops what it started (with --keep, all but the database, to look into it).",
    )
    demo.add_argument("--dir", default=".bulk-sync/demo", help="where the cluster lives (default: %(default)s)")
    demo.add_argument("--port", type=_PORT, help="port for the cluster (default: a free one)")
    demo.add_argument("--reset", action="store_true", help="start over with an empty cluster")
    demo.add_argument("--orders-per-day", type=_bounded(int, 1), default=300, help="per shop (default: %(default)s)")
    demo.add_argument("--timeline", help="where to draw the backfill's timeline (default: DIR/timeline.svg)")
    demo.add_argument(
        "--keep", action="store_true", help="leave the database running at the end and print how to reach and stop it"
    )
    demo.add_argument("--stop", action="store_true", help="stop the database a --keep run left running in --dir")
    demo.set_defaults(func=_demo)
    from runner.simulator.cli import add_arguments, run

    simulate = verbs.add_parser(
        "simulate",
        help="serve a local Shopify bulk-operations API with fault injection and ground truth",
        description="Serves the Admin GraphQL API of the given shops at http://HOST:PORT/<code> "
        "(tokens from SHOP_<CODE>_TOKEN), or writes their ground truth with --dump-truth.",
    )
    add_arguments(simulate)
    simulate.set_defaults(func=run)
    top.verbs = verbs.choices  # type: ignore[attr-defined]
    return top


def main(argv: list[str] | None = None) -> int:
    top = parser()
    args, extra = top.parse_known_args(argv)
    if extra:  # named by the verb's parser, not the top one
        top.verbs[args.verb].error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"bulk-sync: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        mistake = _mistake(exc, args.verb)
        if mistake is None:
            raise
        print(f"bulk-sync: {mistake}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
