"""bench/import: bulk-sync's ingest path beside this machine's floor, on the same lines, on a private cluster with
default durability. For an orders export (today's narrow order, then the whole order: every table its entity writes,
bulk_sync.entity_tables) and a SKU export, with bulk-sync's own bulk queries, in lines/s:

  COPY text     the lines into a text column: what reading them into PostgreSQL costs at all
  COPY jsonb    the lines into a jsonb column: that plus parsing them
  COPY typed    the rows the import made, COPY'd (text format, as a loader would send them) into tables shaped and
                indexed like shopify.* (their keys, checks, indexes and foreign keys): the floor
                for rows that must end up indexed
  COPY binary   the same rows in COPY's binary format: a stricter floor, no text to convert
  path          bulk-sync's own: the download's COPY into bulk_sync.staging, then the import (bulk_sync.import)

and path / COPY typed, the ratio the import is judged by (and path / COPY binary). Each rate is the best of --repeat
rounds; each ratio the median of the rounds' own ratios. Then six shops' orders exports imported one, two and three
at a time (bulk_sync.import_limits).

    python -m bench.import [--orders-per-day 2000] [--days 5] [--products 20000] [--repeat 5]"""

import argparse
import datetime as dt
import os
import queue
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

from bench import exit_on_sigterm
from bench.table import print_table
from runner import sqlapi
from runner.db import OPTIONS
from runner.localpg import LocalCluster
from runner.simulator.data import Catalogue, Settings, ShopData
from runner.simulator.export import Export

FIRST = dt.date(2025, 9, 1)
SHOPS = ("DE", "NL", "INT", "DA", "CHF", "AT")  # six exports: as many whole rounds at 1, 2 or 3 at a time
# Today's narrow order, before the whole order (migration 0015): the mirror's rows that it adds, deleted to measure it.
NARROW = """
    delete from bulk_sync.entity_tables where entity = 'orders' and table_name not in ('orders', 'order_line_items',
                                                                                       'refunds');
    delete from bulk_sync.mirror_columns where (table_name = 'orders' and position > 18)
                                            or (table_name = 'order_line_items' and position > 10);
"""


def tables(db: psycopg.Connection, entity: str) -> list[str]:
    """The mirror's tables an export of the entity writes (bulk_sync.entity_tables), parents first."""
    return [t for (t,) in db.execute(
        """select e.table_name from bulk_sync.entity_tables as e
           join bulk_sync.mirror_tables as t on t.name = e.table_name where e.entity = %s order by t.position""",
        (entity,))]  # fmt: skip


def query(db: psycopg.Connection, entity: str) -> str:
    """The bulk query bulk-sync sends for the entity (without a window): what it selects is what it imports."""
    return db.execute(
        """select format('{ %%s { edges { node { %%s } } } }', e.root, bulk_sync.selection(e.entity, t.name))
           from bulk_sync.entities as e
           join bulk_sync.mirror_tables as t on t.graphql_type = e.root_type and t.via = 'root'
           where e.entity = %s""",
        (entity,),
    ).fetchone()[0]


def export_lines(text: str, orders_per_day: int, days: int, products: int, shop: str = "DE") -> list[str]:
    """The lines the simulator exports for the bulk query `text`: one shop's orders over `days` days, or its
    variants."""
    last = FIRST + dt.timedelta(days=days - 1)
    settings = Settings(first_day=FIRST, last_day=last, orders_per_day=orders_per_day, products=products)
    data = ShopData(shop, SHOPS.index(shop) + 1, settings, Catalogue(settings))
    return [line.rstrip("\n") for line, _ in Export.of(data, text).lines()]


def _copy_rows(db: psycopg.Connection, table: sql.Composable, columns: sql.Composable, lines: list[str]) -> None:
    with db.cursor().copy(sql.SQL("copy {} ({}) from stdin").format(table, columns)) as copy:
        for line in lines:
            copy.write_row((line,))


def _settle(db: psycopg.Connection) -> None:
    """Leaves autovacuum nothing to do and the buffers clean before a timed step: otherwise vacuuming what the step
    before it wrote may land inside it (on 2 cores a whole core), which moved the floor by a third between rounds."""
    db.execute("vacuum (analyze)")
    db.execute("checkpoint")


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _floor_tables(db: psycopg.Connection, entity: str) -> None:
    """bench.<table> shaped and indexed like shopify.<table>, empty, with its foreign keys to bench.*."""
    db.execute("create schema if not exists bench")
    for table in tables(db, entity):
        db.execute(sql.SQL("drop table if exists {} cascade").format(sql.Identifier("bench", table)))
        db.execute(
            sql.SQL("create table {} (like {} including all)").format(
                sql.Identifier("bench", table), sql.Identifier("shopify", table)
            )
        )
        # its foreign keys, as shopify.<table> has them (to its parent's bench table)
        for (definition,) in db.execute(
            "select pg_get_constraintdef(oid) from pg_constraint where conrelid = %s::regclass and contype = 'f'",
            (f"shopify.{table}",),
        ).fetchall():
            db.execute(
                sql.SQL("alter table {} add {}").format(
                    sql.Identifier("bench", table),
                    sql.SQL(definition.replace("REFERENCES shopify.", "REFERENCES bench.")),
                )
            )


def _stage(db: psycopg.Connection, entity: str, lines: list[str], day: dt.date, shop: str = "DE") -> tuple[dict, float]:
    """Takes a job of the shop's entity to its import task, staging the lines as the download does; returns the task
    and the seconds the staging took."""
    sqlapi.enqueue_backfill(db, day, day, [entity], [shop])
    (start,) = sqlapi.claim(db, "bench")
    jid = start["job_id"]
    size = sum(len(line.encode()) + 1 for line in lines)
    sqlapi.report_operation_started(db, jid, start["fence"], f"gid://shopify/BulkOperation/{jid}")
    db.execute("update pgmq.q_bulk_sync set vt = now()")
    (poll,) = sqlapi.claim(db, "bench")
    sqlapi.report_poll_result(db, jid, poll["fence"], "COMPLETED", None, len(lines), size, "https://x.example/e")
    (download,) = sqlapi.claim(db, "bench")
    _settle(db)
    started = time.perf_counter()
    with db.transaction():
        with db.cursor().copy("copy bulk_sync.staging (job_id, line_no, line) from stdin") as copy:
            for number, line in enumerate(lines, 1):
                copy.write_row((jid, number, line))
        assert sqlapi.report_download_finished(db, jid, download["fence"], len(lines), size)
    staged = time.perf_counter() - started
    (task,) = sqlapi.claim(db, "bench")
    return task, staged


def _import(dsn: str, task: dict) -> None:
    with psycopg.connect(dsn, autocommit=True, **OPTIONS) as db:  # as the runner's: no prepared statements
        sqlapi.import_job(db, task["job_id"], task["fence"])
        status, processed, total = db.execute(
            "select status, lines_processed, lines_total from bulk_sync.jobs where id = %s", (task["job_id"],)
        ).fetchone()
        assert status != "failed" and processed == total, status  # completed, or fetching refunds' lines next
        # the fetch is Shopify's regular API, not the ingest measured here: ended, so no message of it lingers
        db.execute("select bulk_sync.cancel_jobs(%s::bigint[])", ([task["job_id"]],))


def _empty(db: psycopg.Connection, entity: str) -> None:
    for table in tables(db, entity):
        db.execute(sql.SQL("truncate {} cascade").format(sql.Identifier("shopify", table)))


def _path(db: psycopg.Connection, dsn: str, entity: str, lines: list[str], run: int) -> tuple[float, float]:
    """Stages the lines as the download does and imports them; returns the seconds of each, on empty tables."""
    _empty(db, entity)
    task, staged = _stage(db, entity, lines, FIRST + dt.timedelta(days=run))
    _settle(db)
    return staged, _timed(lambda: _import(dsn, task))


def _import_all(dsn: str, tasks: list[dict], at_once: int) -> float:
    """Seconds to import the tasks with `at_once` sessions, each taking the next task when done with one."""
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for task in tasks:
        todo.put(task)

    def work() -> None:
        while True:
            try:
                task = todo.get_nowait()
            except queue.Empty:
                return
            _import(dsn, task)

    threads = [threading.Thread(target=work) for _ in range(at_once)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def imports_at_once(db: psycopg.Connection, dsn: str, exports: list[list[str]], run: int) -> dict[int, float]:
    """Seconds to import the shops' orders exports (one each) 1, 2 and 3 at a time."""
    seconds = {}
    for at_once in (1, 2, 3):
        _empty(db, "orders")
        day = FIRST + dt.timedelta(days=200 + 3 * run + at_once)
        tasks = [_stage(db, "orders", lines, day, shop)[0] for shop, lines in zip(SHOPS, exports, strict=True)]
        _settle(db)
        seconds[at_once] = _import_all(dsn, tasks, at_once)
    return seconds


def _typed(db: psycopg.Connection, entity: str, form: str) -> float:
    """COPY of the rows the path made (now in shopify.*) into bench.* as `form` (text or binary); returns seconds."""
    data = {}
    for table in tables(db, entity):
        with db.cursor().copy(
            sql.SQL("copy {} to stdout (format {})").format(sql.Identifier("shopify", table), sql.SQL(form))
        ) as copy:
            data[table] = b"".join(bytes(chunk) for chunk in copy)
    _floor_tables(db, entity)
    _settle(db)

    def copy_all() -> None:
        with db.transaction():
            for table in tables(db, entity):
                with db.cursor().copy(
                    sql.SQL("copy {} from stdin (format {})").format(sql.Identifier("bench", table), sql.SQL(form))
                ) as copy:
                    copy.write(data[table])

    return _timed(copy_all)


def _raw(db: psycopg.Connection, kind: str, lines: list[str]) -> float:
    db.execute("create schema if not exists bench")
    db.execute(sql.SQL("drop table if exists {}").format(sql.Identifier("bench", f"raw_{kind}")))
    db.execute(sql.SQL("create table {} (line {})").format(sql.Identifier("bench", f"raw_{kind}"), sql.SQL(kind)))
    _settle(db)
    with db.transaction():
        return _timed(lambda: _copy_rows(db, sql.Identifier("bench", f"raw_{kind}"), sql.SQL("line"), lines))


def measure(
    db: psycopg.Connection, dsn: str, entity: str, lines: list[str], repeat: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Over `repeat` rounds: the best seconds of each way in (text, jsonb, typed, binary, staging, import, path), and
    the median of each round's path / typed and path / binary. A round measures them one after the other, so its
    ratio holds even when this shared machine's speed changes between rounds, which best against best does not."""
    best: dict[str, float] = {}
    ratios: dict[str, list[float]] = {"typed": [], "binary": []}

    def keep(name: str, seconds: float) -> float:
        best[name] = min(best.get(name, seconds), seconds)
        return seconds

    for run in range(repeat):
        keep("text", _raw(db, "text", lines))
        keep("jsonb", _raw(db, "jsonb", lines))
        staged, imported = _path(db, dsn, entity, lines, run + (100 if entity == "skus" else 0))
        keep("staging", staged)
        keep("import", imported)
        path = keep("path", staged + imported)
        ratios["typed"].append(path / keep("typed", _typed(db, entity, "text")))
        ratios["binary"].append(path / keep("binary", _typed(db, entity, "binary")))
    return best, {form: statistics.median(values) for form, values in ratios.items()}


def rows(name: str, lines: int, best: dict[str, float], ratio: dict[str, float]) -> list[tuple[str, str]]:
    rate = {name: lines / seconds for name, seconds in best.items()}
    label = f"{name} ({lines:,} lines)"
    return [
        (f"{label}: COPY text, lines/s", f"{rate['text']:.0f}"),
        (f"{label}: COPY jsonb, lines/s", f"{rate['jsonb']:.0f}"),
        (f"{label}: COPY typed (the floor), lines/s", f"{rate['typed']:.0f}"),
        (f"{label}: COPY typed, binary, lines/s", f"{rate['binary']:.0f}"),
        (f"{label}: path (staging + import), lines/s", f"{rate['path']:.0f}"),
        (f"{label}:   staging alone, lines/s", f"{rate['staging']:.0f}"),
        (f"{label}:   import alone, lines/s", f"{rate['import']:.0f}"),
        (f"{label}: path / COPY typed, median of rounds (target <= 2)", f"{ratio['typed']:.2f}x"),
        (f"{label}: path / COPY typed, binary, median of rounds", f"{ratio['binary']:.2f}x"),
    ]


def figures(argv: list[str] | None = None) -> list[tuple[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders-per-day", type=int, default=2000)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--products", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    out = []
    with tempfile.TemporaryDirectory(prefix="bulk-sync-bench-") as tmp, LocalCluster(Path(tmp)) as cluster:
        # the orders of today's narrow mirror, then the whole order, each in a database of its own
        for variant in ("narrow order", "whole order"):
            dsn = cluster.create_database(variant.replace(" ", "_"))
            with psycopg.connect(dsn, autocommit=True) as db:
                for shop in SHOPS:
                    sqlapi.add_shop(db, shop, f"{shop.lower()}.myshopify.com")
                db.execute("update bulk_sync.settings set max_backfill_days = 400")
                # an import slot for every shop's orders (the default is 2): the bench decides how many run at once
                db.execute("update bulk_sync.import_limits set max_concurrent_imports = %s", (len(SHOPS),))
                db.execute("update bulk_sync.settings set max_concurrent_imports = %s", (len(SHOPS),))
                if variant == "narrow order":
                    db.execute(NARROW)
                for entity in ("orders",) if variant == "narrow order" else ("orders", "skus"):
                    lines = export_lines(query(db, entity), args.orders_per_day, args.days, args.products)
                    label = f"{entity} export, {variant}" if entity == "orders" else f"{entity} export"
                    out += rows(label, len(lines), *measure(db, dsn, entity, lines, args.repeat))
        # One, two and three imports at a time, on six shops' orders exports (a third of the days each).
        with psycopg.connect(dsn, autocommit=True) as db:
            days = max(1, round(args.days / 3))
            text = query(db, "orders")
            exports = [export_lines(text, args.orders_per_day, days, args.products, shop) for shop in SHOPS]
            runs = [imports_at_once(db, dsn, exports, run) for run in range(args.repeat)]
            lines = sum(len(e) for e in exports)
            best = {n: min(r[n] for r in runs) for n in runs[0]}
            label = f"{len(exports)} orders imports ({lines:,} lines, {os.cpu_count()} cores)"
            out.append((f"{label}: 1 / 2 / 3 at a time, lines/s", " / ".join(f"{lines / best[n]:.0f}" for n in best)))
            gains = " / ".join(f"{best[1] / best[n]:.2f}x" for n in best if n > 1)
            out.append((f"{label}: 2 / 3 at a time against 1", gains))
    return out


def main(argv: list[str] | None = None) -> None:
    print_table(figures(argv))


if __name__ == "__main__":
    exit_on_sigterm()
    main()
