"""Databases of earlier releases, built from their SQL kept under tests/fixtures/ (as that release's migrate did)."""

import shutil
from pathlib import Path

import psycopg

RELEASE_0_1 = Path(__file__).parent / "fixtures" / "release-0.1"


def _embedded_pgmq(conn: psycopg.Connection) -> None:
    """pgmq from the SQL of the pgmq package, as on a server without the extension, unless it is there."""
    if not conn.execute("select to_regnamespace('pgmq') is not null").fetchone()[0]:
        from pgmq.install import get_embedded_install_sql

        conn.execute(get_embedded_install_sql())


def install_release_0_1(conn: psycopg.Connection) -> None:
    """Migrates an empty database the way `bulk-sync migrate` of release 0.1 did: everything in public."""
    with conn.transaction():
        conn.execute(
            """create table bulk_sync_migrations (
                   version integer primary key, name text not null, checksum text not null,
                   applied_at timestamptz not null default now())"""
        )
        _embedded_pgmq(conn)
        for path in sorted(RELEASE_0_1.glob("*.sql")):
            conn.execute(path.read_text())
            version, name = path.stem.split("_", 1)
            conn.execute(
                "insert into bulk_sync_migrations (version, name, checksum) values (%s, %s, 'release-0.1')",
                (int(version), name),
            )


RELEASE_0_2 = Path(__file__).parent / "fixtures" / "release-0.2"


def install_release_0_2(conn: psycopg.Connection) -> None:
    """Migrates an empty database the way `bulk-sync migrate` of release 0.2 (tag v0.2.0) did: pgmq (here the SQL of
    the pgmq package, as on a server without the extension), btree_gist in a schema of its own, its migrations and
    definition files, each recorded with its checksum."""
    from runner.migrate import definitions, migrations

    with conn.transaction():
        _embedded_pgmq(conn)
        if not conn.execute("select exists (select from pg_extension where extname = 'btree_gist')").fetchone()[0]:
            conn.execute("create schema btree_gist")
            conn.execute("create extension btree_gist with schema btree_gist")
        conn.execute("create schema bulk_sync")
        conn.execute(
            """create table bulk_sync.migrations (
                   name text primary key, checksum text not null, applied_at timestamptz not null default now())"""
        )
        for file in migrations(RELEASE_0_2) + definitions(RELEASE_0_2):
            conn.execute(file.sql)
            conn.execute(
                "insert into bulk_sync.migrations (name, checksum) values (%s, %s)", (file.name, file.checksum)
            )


def copy_sql(tmp_path: Path) -> Path:
    """This tree's sql/ copied under tmp_path, to edit as a next release would."""
    from runner.migrate import sql_dir

    root = tmp_path / "sql"
    shutil.copytree(sql_dir(), root)
    return root
