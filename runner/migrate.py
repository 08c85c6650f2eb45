"""Brings a database to the current bulk-sync: the extensions it needs, the append-only migrations in
sql/migrations/ (tables, indexes, data), then the definition files sql/NN_<area>.sql (functions, views, grants),
re-applied whenever one of them changes. Everything is recorded in bulk_sync.migrations."""

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from runner.definitions import reapply as definitions_again
from runner.shared import ConfigError

_LOCK_KEY = 0x62756C6B  # serialises concurrent migrate runs
_MIGRATION = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_DEFINITION = re.compile(r"^(\d{2})_([a-z0-9_]+)\.sql$")
# A database of release 0.1 kept its migrations in public; these must all be there to upgrade it.
_RELEASE_0_1 = {1: "schema", 2: "state_machine", 3: "claim", 4: "reports", 5: "api", 6: "import", 7: "runner",
                8: "stuck", 9: "roles", 10: "import_temp_tables", 11: "window_sizing", 12: "incremental"}  # fmt: skip


@dataclass(frozen=True)
class SqlFile:
    name: str  # migrations/0001_baseline.sql, 10_state_machine.sql
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


def _files(directory: Path, pattern: re.Pattern, prefix: str) -> list[SqlFile]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        if not pattern.match(path.name):
            raise ValueError(f"SQL file name {prefix}{path.name!r} does not follow {pattern.pattern}")
        found.append(SqlFile(prefix + path.name, path.read_text()))
    return found


def migrations(root: Path | None = None) -> list[SqlFile]:
    """The append-only migrations, in order."""
    return _files((root or sql_dir()) / "migrations", _MIGRATION, "migrations/")


def definitions(root: Path | None = None) -> list[SqlFile]:
    """The definition files (functions, views, grants), in the order they are applied."""
    return _files(root or sql_dir(), _DEFINITION, "")


def _one(conn: psycopg.Connection, query: str, params: tuple = ()) -> object:
    return conn.execute(query, params).fetchone()[0]


def _extension_schema(conn: psycopg.Connection) -> str:
    """Where an extension bulk-sync creates goes: Supabase's `extensions` schema, else a schema of its own."""
    return "extensions" if _one(conn, "select to_regnamespace('extensions') is not null") else "btree_gist"


def _ensure_btree_gist(conn: psycopg.Connection) -> str | None:
    """btree_gist (the jobs' exclusion constraint) wherever it is installed, else created outside public."""
    if _one(conn, "select exists (select from pg_extension where extname = 'btree_gist')"):
        return None
    schema = _extension_schema(conn)
    conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("create extension btree_gist schema {}").format(sql.Identifier(schema)))
    return f"btree_gist (extension in {schema})"


def _pgmq_unusable(conn: psycopg.Connection) -> str | None:
    """Why this role cannot create bulk-sync's queue with the installed pgmq, or None when it can."""
    if not _one(conn, "select has_schema_privilege('pgmq', 'usage')"):
        return "permission denied for schema pgmq"
    if _one(conn, "select to_regclass('pgmq.q_bulk_sync') is not null"):
        return None  # the queue exists: nothing to create
    if not _one(conn, "select has_schema_privilege('pgmq', 'create')"):
        return "permission denied to create in schema pgmq"
    owner_ok = _one(
        conn, "select coalesce((select pg_has_role(extowner, 'usage') from pg_extension where extname = 'pgmq'), true)"
    )
    return None if owner_ok else "the pgmq extension belongs to another role"


# What Supabase's dashboard runs for Database > Extensions > pgmq with "Create a new schema": the role enabling it
# owns schema pgmq and everything in it (a plain `create extension pgmq` leaves the schema to the platform).
_PGMQ_OWN_SCHEMA = "create schema if not exists pgmq; create extension pgmq with schema pgmq;"


def _pgmq_advice(conn: psycopg.Connection, reason: str) -> str:
    """One line: why this role cannot use pgmq, and what makes it usable on this kind of server."""
    me, schema_owner, schema_mine, ext_owner, ext_mine = conn.execute(
        """select current_user, n.nspowner::regrole::text, pg_has_role(n.nspowner, 'usage'),
                  e.extowner::regrole::text, coalesce(pg_has_role(e.extowner, 'usage'), false)
           from pg_namespace as n left join pg_extension as e on e.extname = 'pgmq'
           where n.nspname = 'pgmq'"""
    ).fetchone()
    owners = f"schema pgmq belongs to {schema_owner}" + (f", the extension to {ext_owner}" if ext_owner else "")
    if not _on_supabase(conn):
        return (
            f"pgmq is installed but {me} cannot use it ({reason}; {owners}): have {ext_owner or schema_owner} or a "
            f"superuser run `drop extension if exists pgmq; drop schema pgmq;` (its queues go with them), then run "
            f"migrate again as {me}: it creates pgmq for {me}"
        )
    enable = (
        'then enable pgmq again in Database > Extensions with "Create a new schema" named pgmq (or run: '
        f"{_PGMQ_OWN_SCHEMA}) and run migrate again"
    )
    if ext_mine and schema_mine:
        first = "run `drop extension pgmq;` (its queues go with it)"
    elif ext_mine:
        first = (
            f"run `drop extension pgmq;` (its queues go with it); schema pgmq stays {schema_owner}'s, which only "
            "Supabase support can drop: ask them to"
        )
    else:
        first = (
            f"pgmq was enabled by {ext_owner or schema_owner}: ask Supabase support to drop extension and schema pgmq"
        )
    return f"pgmq is installed but {me} cannot use it ({reason}; {owners}); on Supabase, {first}, {enable}"


def _on_supabase(conn: psycopg.Connection) -> bool:
    """A Supabase project's database: its API roles and its extensions schema."""
    return bool(
        _one(
            conn,
            "select to_regrole('service_role') is not null and to_regrole('authenticated') is not null"
            " and to_regnamespace('extensions') is not null",
        )
    )


def _ensure_pgmq(conn: psycopg.Connection) -> str | None:
    """pgmq as found; else the server's extension in a schema of its own; else the SQL shipped in the pgmq
    package."""
    if _one(conn, "select to_regnamespace('pgmq') is not null"):
        reason = _pgmq_unusable(conn)
        if reason:
            raise ConfigError(_pgmq_advice(conn, reason))
        return None
    if _one(conn, "select exists (select from pg_available_extensions where name = 'pgmq')"):
        conn.execute("create schema if not exists pgmq")
        conn.execute("create extension pgmq with schema pgmq")
        return "pgmq (extension)"
    from pgmq.install import get_embedded_install_sql

    conn.execute(get_embedded_install_sql())
    return "pgmq (embedded sql)"


def _bootstrap(conn: psycopg.Connection) -> None:
    conn.execute("create schema if not exists bulk_sync")
    conn.execute(
        """create table if not exists bulk_sync.migrations (
               name text primary key,
               checksum text not null,
               applied_at timestamptz not null default now())"""
    )


def _is_release_0_1(conn: psycopg.Connection) -> bool:
    """True for a database of release 0.1 (its migrations in public.bulk_sync_migrations); refuses an older one."""
    if not _one(conn, "select to_regclass('public.bulk_sync_migrations') is not null"):
        return False
    done = dict(conn.execute("select version, name from public.bulk_sync_migrations").fetchall())
    missing = [f"{v:04d}_{n}" for v, n in _RELEASE_0_1.items() if done.get(v) != n]
    if missing:
        raise ConfigError(
            f"this database has an older bulk-sync without migration {missing[0]}: run `bulk-sync migrate` of "
            "release 0.1 first, then this one"
        )
    return True


def _upgrade_release_0_1(conn: psycopg.Connection, root: Path, baseline: SqlFile) -> str | None:
    """Moves a database of release 0.1 into the new schemas and records the baseline as applied."""
    if not _is_release_0_1(conn):
        return None
    conn.execute((root / "upgrades" / "from_0.1.sql").read_text())
    conn.execute(
        "insert into bulk_sync.migrations (name, checksum) values (%s, %s)", (baseline.name, baseline.checksum)
    )
    return "upgraded from release 0.1"


def migrate(conn: psycopg.Connection, root: Path | None = None) -> list[str]:
    """Brings the database up to date; returns what it did (nothing on a second run). Extensions are created in
    transactions of their own (an extension's after-create hook may change search_path for the rest of its
    transaction); everything else in one transaction, under a lock that serialises concurrent runs."""
    root = root or sql_dir()
    todo, defs = migrations(root), definitions(root)
    done: list[str] = []
    conn.commit()
    with conn.transaction():
        _is_release_0_1(conn)  # an unfinished older release stops here, before anything changes
    for ensure in (_ensure_pgmq, _ensure_btree_gist):
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            note = ensure(conn)
        done += [note] if note else []
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        _bootstrap(conn)
        upgraded = _upgrade_release_0_1(conn, root, todo[0])
        done += [upgraded] if upgraded else []
        applied = dict(conn.execute("select name, checksum from bulk_sync.migrations").fetchall())
        migrated = False
        for m in todo:
            if m.name in applied:
                if applied[m.name] != m.checksum:
                    raise ConfigError(
                        f"migration {m.name} changed after it was applied; add a new migration instead of editing "
                        "an applied one"
                    )
                continue
            try:
                conn.execute(m.sql)
            except psycopg.Error as exc:  # a migration's own refusal (SQLSTATE BSnnn) is the user's to act on
                if not (exc.sqlstate or "").startswith("BS"):
                    raise
                raise ConfigError(f"migration {m.name} stopped, nothing changed: {exc.diag.message_primary}") from None
            conn.execute("insert into bulk_sync.migrations (name, checksum) values (%s, %s)", (m.name, m.checksum))
            done.append(m.name)
            migrated = True
        stale = [d for d in defs if applied.get(d.name) != d.checksum]
        gone = {name for name in applied if "/" not in name} - {d.name for d in defs}
        # After a migration every definition is applied again: some fold what the tables hold (the job states).
        if stale or gone or migrated:
            kept = definitions_again(conn, lambda: [conn.execute(d.sql) for d in defs])
            conn.execute("delete from bulk_sync.migrations where name = any(%s)", (sorted(gone),))
            conn.execute(
                "insert into bulk_sync.migrations (name, checksum) select * from unnest(%s::text[], %s::text[]) "
                "on conflict (name) do update set checksum = excluded.checksum, applied_at = now()",
                ([d.name for d in defs], [d.checksum for d in defs]),
            )
            done.append(f"definitions ({', '.join(d.name for d in stale) or 'unchanged files, re-applied'})")
            done += [f"kept {', '.join(kept)} (re-created over the new definitions)"] if kept else []
        # Every time: whoever was granted a privilege on the queue since (Supabase Studio's "Expose Queues via
        # PostgREST" grants service_role all of every queue table) loses it.
        if revoked := _one(conn, "select bulk_sync.close_queue()"):
            done.append(f"queue closed to {', '.join(revoked)}")
    return done
