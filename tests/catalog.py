"""What a database holds of bulk-sync, as comparable data: schemas, tables and columns, constraints, indexes,
sequences, routines, views, triggers and every privilege on them; a table's rows."""

import psycopg
from psycopg import sql

SCHEMAS = {"schemas": ["bulk_sync", "shopify"]}  # the parameter of every query below

QUERIES = {
    "schemas": """
        select nspname, nspowner::regrole::text, coalesce(nspacl::text, '') from pg_namespace
        where nspname = any(%(schemas)s) order by 1""",
    "relations": """
        select c.oid::regclass::text, c.relkind, c.relowner::regrole::text, c.relpersistence,
               coalesce(c.relacl::text, '')
        from pg_class as c where c.relnamespace::regnamespace::text = any(%(schemas)s) and c.relkind <> 't'
        order by 1""",
    "columns": """
        select a.attrelid::regclass::text, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               coalesce(pg_get_expr(d.adbin, d.adrelid), ''), a.attidentity, coalesce(a.attacl::text, '')
        from pg_attribute as a
        join pg_class as c on c.oid = a.attrelid
        left join pg_attrdef as d on d.adrelid = a.attrelid and d.adnum = a.attnum
        where c.relnamespace::regnamespace::text = any(%(schemas)s) and c.relkind in ('r', 'v', 'p')
          and a.attnum > 0 and not a.attisdropped
        order by 1, 2""",
    "constraints": """
        select conrelid::regclass::text, conname, pg_get_constraintdef(oid) from pg_constraint
        where connamespace::regnamespace::text = any(%(schemas)s) order by 1, 2""",
    "indexes": """
        select schemaname, tablename, indexname, indexdef from pg_indexes where schemaname = any(%(schemas)s)
        order by 1, 2, 3""",
    "routines": """
        select p.oid::regprocedure::text, p.prokind, p.prosecdef, coalesce(p.proconfig::text, ''),
               md5(pg_get_functiondef(p.oid)), p.proowner::regrole::text, coalesce(p.proacl::text, '')
        from pg_proc as p where p.pronamespace::regnamespace::text = any(%(schemas)s) order by 1""",
    "views": """
        select schemaname, viewname, md5(definition) from pg_views where schemaname = any(%(schemas)s) order by 1, 2""",
    "triggers": """
        select tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) from pg_trigger
        where not tgisinternal and split_part(tgrelid::regclass::text, '.', 1) = any(%(schemas)s) order by 1, 2""",
}


def snapshot(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    """Every catalog fact above, by kind."""
    return {kind: conn.execute(query, SCHEMAS).fetchall() for kind, query in QUERIES.items()}


def differences(a: dict[str, list[tuple]], b: dict[str, list[tuple]]) -> dict[str, tuple[list, list]]:
    """Per kind, the rows only in a and the rows only in b (empty when identical)."""
    out = {}
    for kind in a:
        only_a, only_b = sorted(set(a[kind]) - set(b[kind])), sorted(set(b[kind]) - set(a[kind]))
        if only_a or only_b:
            out[kind] = (only_a, only_b)
    return out


def columns(conn: psycopg.Connection, table: str) -> str:
    """The table's columns, quoted, in order (for `rows` of a table whose later release adds columns)."""
    return conn.execute(
        "select string_agg(quote_ident(attname), ', ' order by attnum) from pg_attribute "
        "where attrelid = %s::regclass and attnum > 0 and not attisdropped",
        (table,),
    ).fetchone()[0]


def rows(conn: psycopg.Connection, table: str, names: str = "t.*") -> list[tuple]:
    """The table's rows as text, of the given columns (later migrations add columns: the old ones must be kept)."""
    query = sql.SQL("select row({})::text from {} as t order by 1")
    return conn.execute(query.format(sql.SQL(names), sql.Identifier(*table.split(".")))).fetchall()
