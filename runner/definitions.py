"""Applying bulk-sync's definition files again without touching what users made. migrate records what the files
created (bulk_sync.defined_objects) and drops only that; a user's view or materialized view that depends on one of
those objects, directly or through other views, is saved (definition, options, owner, grants, comments, a
materialized view's indexes and whether it was populated), dropped, and re-created after the files ran. What cannot be
kept that way stops migrate with one line, inside its transaction: nothing changes."""

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from runner.shared import ConfigError

# bulk-sync's objects in schemas bulk_sync and shopify, as names that read the same whatever the search_path is.
_OBJECTS = """
    select 'routine', p.oid::regprocedure::text from pg_proc as p
    where p.pronamespace in ('bulk_sync'::regnamespace, 'shopify'::regnamespace)
    union all
    select 'view', c.oid::regclass::text from pg_class as c
    where c.relnamespace in ('bulk_sync'::regnamespace, 'shopify'::regnamespace) and c.relkind in ('v', 'm')
    union all
    select 'trigger', format('%I on %s', t.tgname, t.tgrelid::regclass) from pg_trigger as t
    join pg_class as c on c.oid = t.tgrelid
    where c.relnamespace in ('bulk_sync'::regnamespace, 'shopify'::regnamespace) and not t.tgisinternal"""

# Releases before bulk_sync.defined_objects: everything in schema bulk_sync was theirs, and these views of shopify.
_BEFORE_RECORDS = ("shopify.live_orders", "shopify.live_order_line_items", "shopify.live_refunds", "shopify.live_skus")

# Where bulk-sync's objects are in the catalog (class, oid), to find what depends on them.
_CATALOG_IDS = """
    select 'pg_proc', oid from pg_proc where oid::regprocedure::text = any(%(routines)s)
    union all select 'pg_class', oid from pg_class where oid::regclass::text = any(%(views)s)
    union all select 'pg_trigger', oid from pg_trigger
    where format('%%I on %%s', tgname, tgrelid::regclass) = any(%(triggers)s)"""

# What depends on the objects (class, oid) in a way that stops their drop: the view of a view's rule (null for
# anything else), its kind, the dependent's class and oid and what it is, in words.
_DEPENDENTS = """
    select distinct r.ev_class, c.relkind, d.classid::regclass::text, d.objid,
           pg_describe_object(d.classid, d.objid, d.objsubid)
    from pg_depend as d
    left join pg_rewrite as r on d.classid = 'pg_rewrite'::regclass and r.oid = d.objid
    left join pg_class as c on c.oid = r.ev_class
    where (d.refclassid, d.refobjid) in (select unnest(%s::regclass[]), unnest(%s::oid[])) and d.deptype = 'n'
      and r.ev_class is distinct from d.refobjid  -- a view's rule names the view itself too"""

_SAVE = """
    select c.relkind, c.relowner::regrole::text, pg_get_viewdef(c.oid), c.reloptions, c.relispopulated,
           pg_has_role(c.relowner, 'member'),
           array(select format('grant %%s%%s on %%s to %%s%%s', a.privilege_type,
                               coalesce(' (' || quote_ident(col.attname) || ')', ''), c.oid::regclass,
                               case when a.grantee = 0 then 'public' else quote_ident(a.grantee::regrole::text) end,
                               case when a.is_grantable then ' with grant option' else '' end)
                 from (select null::smallint as attnum, c.relacl as acl
                       union all select attnum, attacl from pg_attribute
                       where attrelid = c.oid and attacl is not null) as x
                 cross join lateral aclexplode(x.acl) as a
                 left join pg_attribute as col on col.attrelid = c.oid and col.attnum = x.attnum),
           c.relacl is not null,
           array(select format('comment on %%s %%s is %%L', kind, target, d.description)
                 from pg_description as d
                 cross join lateral (
                     select case when c.relkind = 'm' then 'materialized view' else 'view' end as kind,
                            c.oid::regclass::text as target
                     where d.objsubid = 0
                     union all
                     select 'column', c.oid::regclass::text || '.' || quote_ident(a.attname)
                     from pg_attribute as a where a.attrelid = c.oid and a.attnum = d.objsubid and d.objsubid > 0
                 ) as t
                 where d.classoid = 'pg_class'::regclass and d.objoid = c.oid),
           array(select pg_get_indexdef(i.indexrelid) from pg_index as i where i.indrelid = c.oid order by 1),
           (select string_agg(t.tgname, ', ') from pg_trigger as t where t.tgrelid = c.oid and not t.tgisinternal),
           (select string_agg(r.rulename, ', ') from pg_rewrite as r
            where r.ev_class = c.oid and r.rulename <> '_RETURN')
    from pg_class as c where c.oid = %s"""


@dataclass(frozen=True)
class UserView:
    """A user's view or materialized view, as saved before bulk-sync's objects under it were dropped."""

    name: str
    materialized: bool
    owner: str
    definition: str
    options: list[str] | None
    populated: bool
    grants: list[str]
    own_acl: bool  # privileges were changed from the defaults: the owner's are among the grants
    comments: list[str]
    indexes: list[str]

    @property
    def kind(self) -> sql.SQL:
        return sql.SQL("materialized view" if self.materialized else "view")

    def create(self) -> list[sql.Composable]:
        """The statements that make it again, as it was (names, definition and ACLs as the catalog printed them)."""
        name, owner = sql.SQL(self.name), sql.SQL(self.owner)
        options = (
            sql.SQL(" with ({})").format(sql.SQL(", ").join(map(sql.SQL, self.options)))
            if self.options
            else sql.SQL("")
        )
        data = sql.SQL(" with data" if self.populated else " with no data") if self.materialized else sql.SQL("")
        out = [
            sql.SQL("create {} {}{} as {}{}").format(
                self.kind, name, options, sql.SQL(self.definition.rstrip().rstrip(";")), data
            ),
            sql.SQL("alter {} {} owner to {}").format(self.kind, name, owner),
        ]
        if self.own_acl:
            out.append(sql.SQL("revoke all on {} from public, {}").format(name, owner))
        return out + [sql.SQL(s) for s in self.grants + self.comments + self.indexes]

    def drop(self) -> sql.Composable:
        return sql.SQL("drop {} {}").format(self.kind, sql.SQL(self.name))


@contextmanager
def _qualified(conn: psycopg.Connection):
    """Every name the catalog prints is schema-qualified while inside (search_path: pg_catalog only)."""
    path = conn.execute("select current_setting('search_path')").fetchone()[0]
    conn.execute("select set_config('search_path', 'pg_catalog', true)")
    try:
        yield
    finally:
        conn.execute("select set_config('search_path', %s, true)", (path,))


def existing(conn: psycopg.Connection) -> set[tuple[str, str]]:
    """(kind, name) of every routine, view and trigger in schemas bulk_sync and shopify."""
    with _qualified(conn):
        return set(conn.execute(_OBJECTS).fetchall())


def defined(conn: psycopg.Connection) -> set[tuple[str, str]]:
    """bulk-sync's objects that exist: those recorded, or before any record, what older releases made."""
    now = existing(conn)
    recorded = set(conn.execute("select kind, name from bulk_sync.defined_objects").fetchall())
    if recorded:
        return now & recorded
    return {(kind, name) for kind, name in now if name.startswith("bulk_sync.") or " on bulk_sync." in name
            or name in _BEFORE_RECORDS}  # fmt: skip


def record(conn: psycopg.Connection, objects: set[tuple[str, str]]) -> None:
    conn.execute("delete from bulk_sync.defined_objects")
    conn.execute(
        "insert into bulk_sync.defined_objects (kind, name) select * from unnest(%s::text[], %s::text[])",
        ([k for k, _ in sorted(objects)], [n for _, n in sorted(objects)]),
    )


def _refuse(what: str, why: str) -> ConfigError:
    return ConfigError(
        f"cannot apply bulk-sync's definitions again: {what} {why}; drop it, run migrate, then create it again "
        "(nothing was changed)"
    )


def _user_views(conn: psycopg.Connection, objects: set[tuple[str, str]]) -> list[UserView]:
    """The users' views over bulk-sync's objects, each after those it reads; refuses what cannot be re-created."""
    names = {kind: [n for k, n in objects if k == kind] for kind in ("routine", "view", "trigger")}
    ours = conn.execute(_CATALOG_IDS, {f"{k}s": v for k, v in names.items()}).fetchall()
    owned, frontier = set(ours), ours
    order: list[int] = []  # the users' views, each after the views it reads
    while frontier:
        rows = conn.execute(_DEPENDENTS, ([c for c, _ in frontier], [o for _, o in frontier])).fetchall()
        frontier = []
        for view, relkind, classid, objid, description in rows:
            if (classid, objid) in owned or ("pg_class", view) in owned:
                continue
            if view is None or relkind not in ("v", "m"):
                raise _refuse(description, "depends on bulk-sync's objects and is not a view")
            order = [v for v in order if v != view] + [view]
            frontier.append(("pg_class", view))
    return [_save(conn, oid) for oid in order]


def _save(conn: psycopg.Connection, oid: int) -> UserView:
    row = conn.execute(_SAVE, (oid,)).fetchone()
    relkind, owner, definition, options, populated, member, grants, own_acl, comments, indexes, triggers, rules = row
    name = conn.execute("select %s::regclass::text", (oid,)).fetchone()[0]
    kind = "materialized view" if relkind == "m" else "view"
    if triggers or rules:
        raise _refuse(f"{kind} {name}", f"depends on bulk-sync's objects and has {'triggers' if triggers else 'rules'} "
                      f"({triggers or rules}) that migrate does not re-create")  # fmt: skip
    if not member:
        me = conn.execute("select current_user").fetchone()[0]
        raise _refuse(f"{kind} {name}", f"depends on bulk-sync's objects and belongs to {owner}, whose objects {me} "
                      "cannot re-create")  # fmt: skip
    return UserView(name, relkind == "m", owner, definition, options, populated, grants, own_acl, comments, indexes)


def reapply(conn: psycopg.Connection, apply: Callable[[], None]) -> list[str]:
    """Drops bulk-sync's definitions (and, saved first, the users' views over them), runs `apply`, records what it
    created and re-creates the users' views; returns those views' names."""
    with _qualified(conn):
        ours = defined(conn)
        views = _user_views(conn, ours)
        for view in reversed(views):
            conn.execute(view.drop())
        _drop(conn, ours)
    before = existing(conn)
    apply()
    record(conn, existing(conn) - before)
    with _qualified(conn):
        for view in views:
            for statement in view.create():
                try:
                    with conn.transaction():
                        conn.execute(statement)
                except psycopg.Error as exc:
                    raise _refuse(
                        f"{view.kind.as_string()} {view.name}", f"could not be re-created ({exc.diag.message_primary})"
                    ) from None
    return [v.name for v in views]


def _drop(conn: psycopg.Connection, objects: set[tuple[str, str]]) -> None:
    """Drops bulk-sync's objects: materialized views and views (they may read functions), triggers, routines."""
    views = [n for k, n in objects if k == "view"]
    kinds = dict(conn.execute("select oid::regclass::text, relkind from pg_class where oid = any(%s::regclass[])",
                              (views,)).fetchall())  # fmt: skip
    groups = [
        ("drop materialized view {}", [n for n in views if kinds[n] == "m"]),
        ("drop view {}", [n for n in views if kinds[n] == "v"]),
        *(("drop trigger {}", [n]) for k, n in objects if k == "trigger"),
        ("drop routine {}", [n for k, n in objects if k == "routine"]),
    ]
    try:
        with conn.transaction():
            for statement, names in groups:
                if names:
                    conn.execute(sql.SQL(statement).format(sql.SQL(", ").join(map(sql.SQL, sorted(names)))))
    except psycopg.errors.DependentObjectsStillExist as exc:
        detail = (exc.diag.message_detail or "").splitlines()[0]
        raise _refuse(detail.split(" depends on ")[0], "depends on bulk-sync's objects") from None
