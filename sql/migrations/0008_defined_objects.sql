-- What bulk-sync's definition files created (routines, views, triggers; names qualified), recorded by migrate:
-- applying the files again drops only these. Whatever else is in schemas bulk_sync and shopify is the user's, and a
-- user's view over one of these is saved and re-created (runner/definitions.py).
create table bulk_sync.defined_objects (
    kind text not null check (kind in ('routine', 'view', 'trigger')),
    name text not null,
    primary key (kind, name)
);
