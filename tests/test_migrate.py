import os
import subprocess
import sys

import psycopg
import pytest

from runner.migrate import migrate, migrations


def test_migrations_recorded_once_and_second_run_changes_nothing(db: psycopg.Connection) -> None:
    recorded = db.execute("select version from bulk_sync_migrations order by version").fetchall()
    assert [v for (v,) in recorded] == [m.version for m in migrations()]
    before = db.execute("select count(*) from pg_proc").fetchone()
    assert migrate(db) == []
    assert db.execute("select count(*) from pg_proc").fetchone() == before


def test_edited_migration_is_refused(db: psycopg.Connection) -> None:
    db.execute("update bulk_sync_migrations set checksum = 'x' where version = 1")
    with pytest.raises(RuntimeError, match="changed after it was applied"):
        migrate(db)


def test_queue_and_core_tables_exist(db: psycopg.Connection) -> None:
    assert db.execute("select count(*) from pgmq.meta where queue_name = 'bulk_sync'").fetchone() == (1,)
    for table in ("bulk_sync_shops", "bulk_sync_jobs", "bulk_sync_job_runs", "bulk_sync_settings"):
        assert db.execute("select to_regclass(%s) is not null", (table,)).fetchone() == (True,)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runner", *args], capture_output=True, text=True, env=env, timeout=60)


def test_cli_migrate_on_an_empty_database(postgresql: psycopg.Connection, dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("create database fresh_cli")
    env = {**os.environ, "DATABASE_URL": dsn.replace(f"dbname={postgresql.info.dbname}", "dbname=fresh_cli")}
    first = _cli("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "0001_schema" in first.stdout and "pgmq" in first.stdout
    second = _cli("migrate", env=env)
    assert second.returncode == 0 and "up to date" in second.stdout


def test_cli_configuration_mistakes_are_one_line(dsn: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    missing = _cli("migrate", env=env)
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "DATABASE_URL" in missing.stderr
    unreachable = _cli("status", env={**env, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert unreachable.returncode == 2
    assert "cannot connect" in unreachable.stderr and "Traceback" not in unreachable.stderr
