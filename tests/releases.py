"""Databases of earlier releases, built from their SQL kept under tests/fixtures/ (as that release's migrate did)."""

from pathlib import Path

import psycopg

RELEASE_0_1 = Path(__file__).parent / "fixtures" / "release-0.1"


def install_release_0_1(conn: psycopg.Connection) -> None:
    """Migrates an empty database the way `bulk-sync migrate` of release 0.1 did: everything in public."""
    with conn.transaction():
        conn.execute(
            """create table bulk_sync_migrations (
                   version integer primary key, name text not null, checksum text not null,
                   applied_at timestamptz not null default now())"""
        )
        if not conn.execute("select to_regnamespace('pgmq') is not null").fetchone()[0]:
            from pgmq.install import get_embedded_install_sql

            conn.execute(get_embedded_install_sql())
        for path in sorted(RELEASE_0_1.glob("*.sql")):
            conn.execute(path.read_text())
            version, name = path.stem.split("_", 1)
            conn.execute(
                "insert into bulk_sync_migrations (version, name, checksum) values (%s, %s, 'release-0.1')",
                (int(version), name),
            )
