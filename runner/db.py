"""Connecting to the project's database from DATABASE_URL."""

import os

import psycopg

from runner.shared import ConfigError


def database_url(url: str | None = None) -> str:
    url = url or os.environ.get("DATABASE_URL")
    if not url:
        raise ConfigError("DATABASE_URL is not set: export DATABASE_URL=postgresql://user@host:5432/dbname")
    return url


def connect(url: str | None = None, **kwargs) -> psycopg.Connection:
    """Opens a connection, turning connection failures into a ConfigError without the password."""
    url = database_url(url)
    try:
        return psycopg.connect(url, connect_timeout=10, **kwargs)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot connect to the database: {first}") from None
