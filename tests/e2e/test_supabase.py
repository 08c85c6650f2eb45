"""bulk-sync on a database set up like a stock Supabase project: the API roles and their default privileges, a
migrating role that is not a superuser, pgmq as an extension (enabled beforehand, or created by migrate) under an
after-create hook that empties search_path. The server runs from a private copy of this machine's PostgreSQL whose
share directory also holds the pgmq package's SQL as an extension."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from runner.localpg import LocalCluster, bindir
from runner.simulator.truth import TABLES
from tests.jobs import table
from tests.processes import cli
from tests.sim import TOKEN, start, truth

OWNER = "supa_owner"  # Supabase's "postgres": NOSUPERUSER, CREATEROLE, CREATEDB, BYPASSRLS
API_ROLES = ("anon", "authenticated")
SHOPS = {"DE": "2026-10", "NL": "2025-10"}

SUPABASE_ROLES = """
create role anon nologin noinherit;
create role authenticated nologin noinherit;
create role service_role nologin noinherit bypassrls;
create role {owner} login createrole createdb bypassrls;
"""

# In the project's database, as the platform's superuser: what the owner creates is everybody's, in public and (to
# prove it does not matter) in every schema; an extensions schema; the after-create hook.
SUPABASE_DATABASE = """
grant create on database {db} to {owner};
grant all on schema public to {owner};
grant usage on schema public to anon, authenticated, service_role;
alter default privileges for role {owner} in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges for role {owner} in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges for role {owner} in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges for role {owner} grant all on tables to anon, authenticated, service_role;
alter default privileges for role {owner} grant all on sequences to anon, authenticated, service_role;
alter default privileges for role {owner} grant all on functions to anon, authenticated, service_role;
alter default privileges for role {owner} grant all on schemas to anon, authenticated, service_role;
create schema extensions authorization {owner};
grant usage on schema extensions to anon, authenticated, service_role;
create schema hooks;
-- Like Supabase's after-create script for pgmq: the role that enabled it owns its schema and objects; and, like
-- it, set local search_path = '' for the rest of the transaction (after any CREATE EXTENSION).
create function hooks.after_create() returns event_trigger language plpgsql security definer as $$
declare
    v_owner text := (select extowner::regrole::text from pg_extension where extname = 'pgmq');
    v_object record;
begin
    if exists (select from pg_event_trigger_ddl_commands() where object_identity = 'pgmq') then
        execute format('alter schema pgmq owner to %I', v_owner);
        for v_object in
            select format('alter table %s owner to %I', oid::regclass, v_owner) as statement from pg_class
            where relnamespace = 'pgmq'::regnamespace and relkind in ('r', 'p')
            union all
            select format('alter routine %s owner to %I', oid::regprocedure, v_owner) from pg_proc
            where pronamespace = 'pgmq'::regnamespace
        loop
            execute v_object.statement;
        end loop;
    end if;
    perform set_config('search_path', '', true);
end;
$$;
create event trigger after_create on ddl_command_end when tag in ('CREATE EXTENSION')
execute function hooks.after_create();
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> LocalCluster:
    """This machine's PostgreSQL copied to a private prefix (the server finds share/ relative to its binaries),
    with pgmq.control and pgmq--<version>.sql from the pgmq package added to its extensions."""
    import pgmq.install

    base = tmp_path_factory.mktemp("supabase")
    real = bindir().parent  # .../lib/postgresql/<major>
    major = real.name
    share = Path(subprocess.check_output([real / "bin" / "pg_config", "--sharedir"], text=True).strip())
    prefix = base / "prefix"
    shutil.copytree(real, prefix / "lib" / "postgresql" / major, symlinks=True)
    shutil.copytree(share, prefix / "share" / "postgresql" / major, symlinks=True)
    version = (Path(pgmq.install.__file__).parent / "sql" / "VERSION").read_text().strip()
    extension = prefix / "share" / "postgresql" / major / "extension"
    (extension / f"pgmq--{version}.sql").write_text(pgmq.install.get_embedded_install_sql())
    # Supabase lets its owner role create pgmq (supautils' privileged extensions); plain PostgreSQL: trusted.
    (extension / "pgmq.control").write_text(
        f"comment = 'message queue'\ndefault_version = '{version}'\nrelocatable = false\nschema = 'pgmq'\n"
        "trusted = true\n"
    )
    # The server runs as the postgres user (when this runs as root): it must reach and read the private prefix.
    for path in base.parents:
        path.chmod(path.stat().st_mode | 0o001)
    for path in (base, *base.rglob("*")):
        path.chmod(path.stat().st_mode | 0o005)
    cluster = LocalCluster(base / "cluster", bin=prefix / "lib" / "postgresql" / major / "bin").start()
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL(SUPABASE_ROLES).format(owner=sql.Identifier(OWNER)))
    yield cluster
    cluster.stop()


def _project(server: LocalCluster, name: str) -> str:
    """A database set up like a Supabase project; returns the owner's connection string to it."""
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    with psycopg.connect(server.dsn(name), autocommit=True) as admin:
        admin.execute(sql.SQL(SUPABASE_DATABASE).format(owner=sql.Identifier(OWNER), db=sql.Identifier(name)))
    return server.dsn(name).replace("user=postgres", f"user={OWNER}")


def reachable(conn: psycopg.Connection, role: str) -> list[str]:
    """Every schema, relation, column and routine of bulk-sync (bulk_sync, shopify) that `role` can use at all."""
    return [
        name
        for (name,) in conn.execute(
            """
            select 'schema ' || nspname from pg_namespace
            where nspname in ('bulk_sync', 'shopify')
              and (has_schema_privilege(%(r)s, oid, 'usage') or has_schema_privilege(%(r)s, oid, 'create'))
            union all
            select 'relation ' || c.oid::regclass from pg_class as c
            cross join unnest(array['select', 'insert', 'update', 'delete', 'truncate', 'references', 'trigger']) as p
            where c.relnamespace in ('bulk_sync'::regnamespace, 'shopify'::regnamespace)
              and c.relkind in ('r', 'v', 'm', 'p', 'f')
              and has_table_privilege(%(r)s, c.oid, p)
            union all
            select 'sequence ' || c.oid::regclass from pg_class as c
            cross join unnest(array['usage', 'select', 'update']) as p
            where c.relnamespace in ('bulk_sync'::regnamespace, 'shopify'::regnamespace) and c.relkind = 'S'
              and has_sequence_privilege(%(r)s, c.oid, p)
            union all
            select 'column ' || a.attrelid::regclass || '.' || a.attname from pg_attribute as a
            join pg_class as c on c.oid = a.attrelid
            cross join unnest(array['select', 'insert', 'update', 'references']) as p
            where c.relnamespace in ('bulk_sync'::regnamespace, 'shopify'::regnamespace)
              and c.relkind in ('r', 'v', 'p') and a.attnum > 0 and not a.attisdropped
              and has_column_privilege(%(r)s, a.attrelid, a.attnum, p)
            union all
            select 'routine ' || p.oid::regprocedure from pg_proc as p
            where p.pronamespace = 'bulk_sync'::regnamespace and has_function_privilege(%(r)s, p.oid, 'execute')
            """,
            {"r": role},
        ).fetchall()
    ]


def _backfill(dsn: str, tmp_path: Path) -> None:
    """A backfill of two shops against the simulator, by a runner logged in with bulk_sync_runner; all of it must
    equal the simulator's ground truth."""
    shopify = start(tuple(SHOPS), days=3, orders_per_day=15)
    try:
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute("update bulk_sync.settings set poll_interval_seconds = 1")
            for code, version in SHOPS.items():
                db.execute("select bulk_sync.add_shop(%s, %s, %s)", (code, f"{code.lower()}.myshopify.com", version))
            assert db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-03')").fetchone()[0] > 0
            if not db.execute("select 1 from pg_roles where rolname = 'supa_runner'").fetchone():
                db.execute("create role supa_runner login in role bulk_sync_runner")  # roles are the server's
            env = {**os.environ, "DATABASE_URL": dsn.replace(f"user={OWNER}", "user=supa_runner")}
            for code in SHOPS:
                env[f"SHOP_{code}_TOKEN"] = TOKEN
                env[f"SHOP_{code}_URL"] = shopify.shop_url(code)
            log = tmp_path / "runner.log"
            with log.open("w") as out:
                runner = subprocess.run(
                    [sys.executable, "-m", "runner", "run", "--until-idle", "--concurrency", "3"],
                    env=env, stdout=out, stderr=out, timeout=300,
                )  # fmt: skip
            assert runner.returncode == 0, log.read_text()[-3000:]
            statuses = db.execute("select status, count(*) from bulk_sync.jobs group by status").fetchall()
            assert dict(statuses).keys() == {"completed"}, statuses
            for name in TABLES:
                expected = truth(shopify, SHOPS, name)
                assert table(db, name) == expected, name
                assert expected, name
    finally:
        shopify.stop()


def _assert_api_roles_reach_nothing(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as db:
        assert db.execute("select rolsuper from pg_roles where rolname = current_user").fetchone() == (False,)
        for role in API_ROLES:
            assert reachable(db, role) == [], role
        # The reader sees what it should, which proves the check above can see a privilege at all.
        assert "relation shopify.orders" in reachable(db, "bulk_sync_reader")
        owned_in_public = db.execute(
            """select (select count(*) from pg_class
                     where relnamespace = 'public'::regnamespace and relowner = current_user::regrole)
                  + (select count(*) from pg_proc
                     where pronamespace = 'public'::regnamespace and proowner = current_user::regrole)"""
        ).fetchone()[0]
        assert owned_in_public == 0


def test_the_hook_empties_search_path_for_the_rest_of_the_transaction(server: LocalCluster) -> None:
    dsn = _project(server, "hook_check")
    with psycopg.connect(dsn) as conn:
        conn.execute("create extension btree_gist schema extensions")
        with pytest.raises(psycopg.errors.InvalidSchemaName, match="no schema has been selected to create in"):
            conn.execute("create table made_after_the_hook (x integer)")


def test_migrate_as_owner_with_pgmq_enabled_beforehand_then_a_backfill(server: LocalCluster, tmp_path: Path) -> None:
    dsn = _project(server, "enabled_before")
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("create extension pgmq")  # what enabling Queues in the dashboard does
    result = cli("migrate", dsn=dsn, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pgmq" not in result.stdout  # found, used as it is
    assert "btree_gist (extension in extensions)" in result.stdout
    _assert_api_roles_reach_nothing(dsn)
    _backfill(dsn, tmp_path)
    _assert_api_roles_reach_nothing(dsn)


def test_migrate_creates_pgmq_through_the_hook_then_a_backfill(server: LocalCluster, tmp_path: Path) -> None:
    dsn = _project(server, "created_by_migrate")
    # With no search_path at all, not only after the hook: everything migrate runs names its schema.
    result = cli("migrate", dsn=f"{dsn} options='-c search_path='", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pgmq (extension)" in result.stdout
    with psycopg.connect(dsn) as db:
        assert db.execute("select extowner::regrole::text from pg_extension where extname = 'pgmq'").fetchone() == (
            OWNER,
        )
    _assert_api_roles_reach_nothing(dsn)
    _backfill(dsn, tmp_path)


def test_a_pgmq_the_owner_cannot_use_is_one_line_naming_the_fix(server: LocalCluster) -> None:
    dsn = _project(server, "foreign_pgmq")
    with psycopg.connect(server.dsn("foreign_pgmq"), autocommit=True) as admin:
        admin.execute("create extension pgmq")  # by the platform's superuser, as older Supabase images did
    result = cli("migrate", dsn=dsn, timeout=120)
    assert result.returncode == 2
    message = result.stderr.strip()
    assert message.count("\n") == 0, message
    assert "permission denied for schema pgmq" in message and "re-enable the pgmq extension" in message
    with psycopg.connect(dsn) as db:
        assert db.execute("select to_regnamespace('bulk_sync')").fetchone() == (None,)  # nothing changed


def test_a_release_0_1_database_on_supabase_is_closed_by_the_upgrade(server: LocalCluster) -> None:
    from tests.releases import install_release_0_1

    dsn = _project(server, "release_0_1")
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("create extension pgmq")
        # Release 0.1 created btree_gist in the transaction of its tables, which the hook breaks: it installed only
        # without the hook.
        with psycopg.connect(server.dsn("release_0_1"), autocommit=True) as admin:
            admin.execute("alter event trigger after_create disable")
            install_release_0_1(db)
            admin.execute("alter event trigger after_create enable")
        # Release 0.1 left public open: its tables, views and entry points were anon's (measured: not asserted
        # exactly, as the count is the old release's).
        before = [name for name in _reachable_in_public(db, "anon")]
        assert "bulk_sync_jobs" in before and "enqueue_backfill(date,date,text[],text[])" in before
        print(f"release 0.1 on Supabase: anon may use {len(before)} objects in public: {before}")
    result = cli("migrate", dsn=dsn, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "upgraded from release 0.1" in result.stdout
    _assert_api_roles_reach_nothing(dsn)
    with psycopg.connect(dsn) as db:
        assert _reachable_in_public(db, "anon") == []


def _reachable_in_public(conn: psycopg.Connection, role: str) -> list[str]:
    """Tables, views and routines in public that `role` may use (release 0.1 kept everything there), but for those
    of extensions (release 0.1 created btree_gist in public; it stays where it is)."""
    return [
        name
        for (name,) in conn.execute(
            """select c.oid::regclass::text from pg_class as c
               where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'v')
                 and has_table_privilege(%(r)s, c.oid, 'select')
                 and not exists (select from pg_depend as d where d.objid = c.oid and d.deptype = 'e')
               union all
               select p.oid::regprocedure::text from pg_proc as p
               where p.pronamespace = 'public'::regnamespace and has_function_privilege(%(r)s, p.oid, 'execute')
                 and not exists (select from pg_depend as d where d.objid = p.oid and d.deptype = 'e')
               order by 1""",
            {"r": role},
        ).fetchall()
    ]
