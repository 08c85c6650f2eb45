"""A real PostgreSQL cluster for the tests: pg_cron preloaded, pgmq installed, migrations applied once to the
template database; every test gets a fresh copy of it."""

import os
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from pytest_postgresql import factories

from runner.localpg import bindir
from runner.migrate import migrate

os.environ["BULK_SYNC_PG_CTL"] = str(bindir() / "pg_ctl")

SERVER_OPTIONS = " ".join(
    (
        "-c shared_preload_libraries=pg_cron",
        "-c cron.database_name=postgres",
        "-c cron.use_background_workers=on",
        "-c max_worker_processes=32",
        "-c max_connections=200",
        "-c fsync=off",
        "-c synchronous_commit=off",
        "-c full_page_writes=off",
    )
)


def _prepare_template(host: str, port: int, user: str, dbname: str, **_: object) -> None:
    with psycopg.connect(host=host, port=port, user=user, dbname="postgres", autocommit=True) as conn:
        conn.execute("create extension if not exists pg_cron")
    with psycopg.connect(host=host, port=port, user=user, dbname=dbname) as conn:
        migrate(conn)


postgresql_proc = factories.postgresql_proc(
    executable=str(Path(__file__).with_name("pg_ctl_as_postgres")),
    postgres_options=SERVER_OPTIONS,
    load=[_prepare_template],
)
postgresql = factories.postgresql("postgresql_proc")


@pytest.fixture
def dsn(postgresql: psycopg.Connection) -> str:
    """A connection string for the test's own database (for extra sessions and subprocesses)."""
    info = postgresql.info
    return f"host={info.host} port={info.port} user={info.user} dbname={info.dbname}"


@pytest.fixture
def db(dsn: str):
    """An autocommit session on the test's database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def five_shops(db: psycopg.Connection) -> list[str]:
    codes = ["DA", "DE", "NL", "INT", "CHF"]
    for code in codes:
        db.execute("select bulk_sync.add_shop(%s, %s)", (code, f"{code.lower()}.myshopify.com"))
    return codes


@pytest.fixture
def new_database(postgresql: psycopg.Connection, dsn: str):
    """Makes empty databases beside the test's own; yields a function returning a connection string for one."""
    made = []

    def make(name: str) -> str:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        made.append(name)
        return dsn.replace(f"dbname={postgresql.info.dbname}", f"dbname={name}")

    yield make
    with psycopg.connect(dsn, autocommit=True) as admin:
        for name in made:
            admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
