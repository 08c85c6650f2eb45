"""Connecting to the project's database from DATABASE_URL, in a way that works directly and through any pooler:
no prepared statements (a transaction pooler hands each transaction to whichever server connection is free, where
a statement prepared on another one does not exist, or one of the same name does), nothing set for the session,
and an application_name that tells bulk-sync's connections apart in pg_stat_activity."""

import os

import psycopg

from runner.shared import ConfigError

# What every connection of bulk-sync is opened with. prepare_threshold=None: psycopg never prepares a statement
# (by default it does after a query's 5th run). Measured on a direct connection, preparing saved nothing worth a
# switch: the SQL that runs often is one call of a PL/pgSQL function, whose own statements keep their plans.
OPTIONS: dict[str, object] = {"connect_timeout": 10, "prepare_threshold": None}


def database_url(url: str | None = None) -> str:
    url = url or os.environ.get("DATABASE_URL")
    if not url:
        raise ConfigError("DATABASE_URL is not set: export DATABASE_URL=postgresql://user@host:5432/dbname")
    return url


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (PostgreSQL's errors carry details below it), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect(url: str | None = None, application_name: str = "bulk-sync", **kwargs) -> psycopg.Connection:
    """Opens a connection, turning connection failures into a ConfigError without the password."""
    url = database_url(url)
    try:
        return psycopg.connect(url, application_name=application_name, **OPTIONS, **kwargs)
    except psycopg.OperationalError as exc:
        raise ConfigError(f"cannot connect to the database: {first_line(exc)}") from None
    except psycopg.ProgrammingError as exc:  # not a connection string at all; its text never holds the password
        raise ConfigError(
            f"DATABASE_URL is not a connection string ({first_line(exc)}): use postgresql://user@host:5432/dbname"
        ) from None
