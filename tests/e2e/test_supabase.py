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
-- Like supautils: a CREATE EXTENSION pgmq that has to make schema pgmq makes it as the platform's superuser (here
-- the cluster's), whose it stays; enabled into a schema the role made first ("Create a new schema" in the
-- dashboard), the schema stays the role's. Noted before the command, acted on after it.
create function hooks.before_create() returns event_trigger language plpgsql security definer as $$
begin
    perform set_config('hooks.pgmq_schema_existed', (to_regnamespace('pgmq') is not null)::text, true);
end;
$$;
create event trigger before_create on ddl_command_start when tag in ('CREATE EXTENSION')
execute function hooks.before_create();
-- Like Supabase's after-create script for pgmq: the role that enabled it owns its objects; and, like it, set local
-- search_path = '' for the rest of the transaction (after any CREATE EXTENSION).
create function hooks.after_create() returns event_trigger language plpgsql security definer as $$
declare
    v_owner text := (select extowner::regrole::text from pg_extension where extname = 'pgmq');
    v_object record;
begin
    if exists (select from pg_event_trigger_ddl_commands() where object_identity = 'pgmq') then
        if current_setting('hooks.pgmq_schema_existed', true) = 'false' then
            execute format('alter schema pgmq owner to %I', current_user);
        end if;
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
    # As pgmq's own control file: any role that may create in the database may create it, and owns what it makes
    # (Supabase lets its owner role create it: supautils' privileged extensions).
    (extension / "pgmq.control").write_text(
        f"comment = 'message queue'\ndefault_version = '{version}'\nrelocatable = false\nschema = 'pgmq'\n"
        "superuser = false\n"
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
        # The reader sees what it should, which proves the check above can see a privilege at all; personal data
        # only the reader of personal data.
        seen = reachable(db, "bulk_sync_reader")
        assert "column shopify.orders.id" in seen and "column shopify.orders.email" not in seen
        assert "relation shopify.orders" in reachable(db, "bulk_sync_reader_pii")
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


# What the dashboard runs for Database > Extensions > pgmq with "Create a new schema"
ENABLE_PGMQ = "create schema if not exists pgmq; create extension pgmq with schema pgmq;"

# What Studio's "Expose Queues via PostgREST" grants (beside its wrapper functions in schema pgmq_public)
EXPOSE_QUEUES = """
grant usage on schema pgmq to anon, authenticated, service_role;
grant all privileges on all tables in schema pgmq to {owner}, service_role;
alter default privileges in schema pgmq grant all privileges on tables to {owner}, service_role;
"""


def _queue_grantees(dsn: str) -> set[str]:
    """Every role but the owner holding a privilege on bulk-sync's queue tables or their sequences."""
    with psycopg.connect(dsn) as db:
        rows = db.execute(
            """select distinct coalesce(a.grantee::regrole::text, 'public') from pg_class as c
               cross join lateral aclexplode(c.relacl) as a
               where c.relnamespace = 'pgmq'::regnamespace and a.grantee <> c.relowner
                 and (c.relname in ('q_bulk_sync', 'a_bulk_sync') or c.relname like 'q_bulk_sync%%seq'
                      or c.relname like 'a_bulk_sync%%seq')"""
        ).fetchall()
    return {role for (role,) in rows}


def _refused(dsn: str) -> str:
    """migrate's one line for a pgmq it cannot use; nothing of bulk-sync made."""
    result = cli("migrate", dsn=dsn, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    message = result.stderr.strip()
    assert message.count("\n") == 0, message
    with psycopg.connect(dsn) as db:
        assert db.execute("select to_regnamespace('bulk_sync')").fetchone() == (None,)  # nothing changed
    return message


def test_migrate_as_owner_with_pgmq_enabled_beforehand_then_a_backfill(server: LocalCluster, tmp_path: Path) -> None:
    dsn = _project(server, "enabled_before")
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(ENABLE_PGMQ)
        db.execute(sql.SQL(EXPOSE_QUEUES).format(owner=sql.Identifier(OWNER)))  # Studio's toggle, before migrate
    result = cli("migrate", dsn=dsn, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pgmq (" not in result.stdout  # found, used as it is
    assert "btree_gist (extension in extensions)" in result.stdout
    # pgmq.create grants pg_monitor reading; Studio service_role all; the default privileges anon and authenticated
    assert "queue closed to anon, authenticated, pg_monitor, service_role" in result.stdout
    assert _queue_grantees(dsn) == set()
    _assert_api_roles_reach_nothing(dsn)
    _backfill(dsn, tmp_path)
    _assert_api_roles_reach_nothing(dsn)
    with psycopg.connect(dsn, autocommit=True) as db:  # the toggle again, after: the next migrate takes it back
        db.execute(sql.SQL(EXPOSE_QUEUES).format(owner=sql.Identifier(OWNER)))
        db.execute("grant select on pgmq.q_bulk_sync to anon")
    assert _queue_grantees(dsn) == {"anon", "service_role"}
    result = cli("migrate", dsn=dsn, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "applied: queue closed to anon, service_role"
    assert _queue_grantees(dsn) == set()
    assert cli("migrate", dsn=dsn).stdout.strip() == "database is up to date"


def test_migrate_creates_pgmq_through_the_hook_then_a_backfill(server: LocalCluster, tmp_path: Path) -> None:
    dsn = _project(server, "created_by_migrate")
    # With no search_path at all, not only after the hook: everything migrate runs names its schema.
    result = cli("migrate", dsn=f"{dsn} options='-c search_path='", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pgmq (extension)" in result.stdout
    with psycopg.connect(dsn) as db:
        owners = "select extowner::regrole::text from pg_extension where extname = 'pgmq'"
        assert db.execute(owners).fetchone() == (OWNER,)
        assert db.execute("select nspowner::regrole::text from pg_namespace where nspname = 'pgmq'").fetchone() == (
            OWNER,
        )  # a schema of its own, as the dashboard makes it: not the platform's
    _assert_api_roles_reach_nothing(dsn)
    _backfill(dsn, tmp_path)


def test_pgmq_enabled_without_a_schema_of_its_own_is_one_line_naming_the_fix(server: LocalCluster) -> None:
    dsn = _project(server, "plain_pgmq")
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("create extension pgmq")  # the owner's extension, in a schema the platform made
    message = _refused(dsn)
    assert "permission denied for schema pgmq" in message and "schema pgmq belongs to postgres" in message
    assert "drop extension pgmq" in message and "Supabase support" in message and ENABLE_PGMQ in message
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("drop extension pgmq")  # what the owner can do; the schema stays the platform's
    with psycopg.connect(server.dsn("plain_pgmq"), autocommit=True) as support:
        support.execute("drop schema pgmq")  # what support does
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(ENABLE_PGMQ)
    result = cli("migrate", dsn=dsn, timeout=120)
    assert result.returncode == 0, result.stderr


def test_a_pgmq_the_owner_cannot_use_is_one_line_naming_the_fix(server: LocalCluster) -> None:
    dsn = _project(server, "foreign_pgmq")
    with psycopg.connect(server.dsn("foreign_pgmq"), autocommit=True) as admin:
        admin.execute("create extension pgmq")  # by the platform's superuser, as older Supabase images did
    message = _refused(dsn)
    assert "permission denied for schema pgmq" in message and "pgmq was enabled by postgres" in message
    assert "Supabase support" in message and "Create a new schema" in message and ENABLE_PGMQ in message
    with psycopg.connect(server.dsn("foreign_pgmq"), autocommit=True) as support:
        support.execute("drop extension pgmq; drop schema pgmq")
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(ENABLE_PGMQ)
    result = cli("migrate", dsn=dsn, timeout=120)
    assert result.returncode == 0, result.stderr


def test_a_self_hosted_pgmq_of_another_role_is_one_line_naming_the_fix(server: LocalCluster) -> None:
    """A server that is not Supabase's (no API roles' extensions schema), its pgmq made by a superuser."""
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        admin.execute("create database self_hosted")
        if not admin.execute("select from pg_roles where rolname = 'app_owner'").fetchone():
            admin.execute("create role app_owner login createrole")
        admin.execute("grant create on database self_hosted to app_owner")
    with psycopg.connect(server.dsn("self_hosted"), autocommit=True) as admin:
        admin.execute("create extension pgmq")
    dsn = server.dsn("self_hosted").replace("user=postgres", "user=app_owner")
    message = _refused(dsn)
    assert "Supabase" not in message and "schema pgmq belongs to postgres" in message
    assert "drop extension if exists pgmq; drop schema pgmq;" in message and "migrate again as app_owner" in message
    with psycopg.connect(server.dsn("self_hosted"), autocommit=True) as admin:
        admin.execute("drop extension if exists pgmq; drop schema pgmq;")
    result = cli("migrate", dsn=dsn, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pgmq (extension)" in result.stdout


def test_a_release_0_1_database_on_supabase_is_closed_by_the_upgrade(server: LocalCluster) -> None:
    from tests.releases import install_release_0_1

    dsn = _project(server, "release_0_1")
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(ENABLE_PGMQ)
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
