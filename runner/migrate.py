"""Applies sql/ migrations in order, once each, recording them in bulk_sync_migrations."""

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

_LOCK_KEY = 0x62756C6B  # serialises concurrent migrate runs
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def sql_dir() -> Path:
    """sql/ beside the package in a checkout, or inside it in an installed wheel."""
    for candidate in (Path(__file__).parent / "sql", Path(__file__).parent.parent / "sql"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("the sql/ directory of bulk-sync is missing")


def migrations(directory: Path | None = None) -> list[Migration]:
    found = []
    for path in sorted((directory or sql_dir()).glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file name {path.name!r} is not NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    return found


def _install_pgmq(conn: psycopg.Connection) -> str:
    """pgmq as an extension where the server has it (Supabase), else the SQL shipped in the pgmq package."""
    if conn.execute("select to_regnamespace('pgmq') is not null").fetchone()[0]:
        return "present"
    if conn.execute("select exists (select from pg_available_extensions where name = 'pgmq')").fetchone()[0]:
        conn.execute("create extension if not exists pgmq")
        return "extension"
    from pgmq.install import get_embedded_install_sql

    conn.execute(get_embedded_install_sql())
    return "embedded sql"


def migrate(conn: psycopg.Connection, directory: Path | None = None) -> list[str]:
    """Brings the database up to date; returns the names of the migrations it applied (none on a second run)."""
    todo = migrations(directory)
    applied = []
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            """create table if not exists bulk_sync_migrations (
                   version integer primary key,
                   name text not null,
                   checksum text not null,
                   applied_at timestamptz not null default now())"""
        )
        done = dict(conn.execute("select version, checksum from bulk_sync_migrations").fetchall())
        if any(m.version not in done for m in todo):
            pgmq = _install_pgmq(conn)
            if pgmq != "present":
                applied.append(f"pgmq ({pgmq})")
        for m in todo:
            if m.version in done:
                if done[m.version] != m.checksum:
                    raise RuntimeError(
                        f"migration {m.version:04d}_{m.name} changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            conn.execute(m.sql)
            conn.execute(
                "insert into bulk_sync_migrations (version, name, checksum) values (%s, %s, %s)",
                (m.version, m.name, m.checksum),
            )
            applied.append(f"{m.version:04d}_{m.name}")
    return applied
