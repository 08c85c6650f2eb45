-- Entities as data: the bulk query an export sends and the column lists its import writes are made here from the
-- rows of bulk_sync.entities, bulk_sync.mirror_tables, bulk_sync.entity_tables and bulk_sync.mirror_columns
-- (sql/migrations/0014_entities.sql). A column added to the mirror is a row there: its field is selected and its
-- value written without an edit here.

-- A timestamp as Shopify's search syntax wants it: full ISO-8601 in UTC.
create or replace function bulk_sync.search_time(p_moment timestamptz) returns text
language sql immutable as $$
    select to_char(p_moment at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"');
$$;

-- The tables of the mirror an export of p_entity writes (bulk_sync.entity_tables), parents first.
create or replace function bulk_sync.written_tables(p_entity text) returns setof bulk_sync.mirror_tables
language sql stable as $$
    select t.* from bulk_sync.mirror_tables as t
    inner join bulk_sync.entity_tables as e on t.name = e.table_name
    where e.entity = p_entity
    order by t.position;
$$;

-- The root table of p_entity's exports: the table of its root type's objects (whether the entity writes it or not).
create or replace function bulk_sync.root_table(p_entity text) returns text
language sql stable as $$
    select t.name from bulk_sync.entities as e
    inner join bulk_sync.mirror_tables as t on e.root_type = t.graphql_type and t.via = 'root'
    where e.entity = p_entity;
$$;

-- The GraphQL selection of dotted paths ('a.b', 'a.c', 'd' -> 'a { b c } d'), each field once, in first-seen order.
create or replace function bulk_sync.graphql_fields(p_paths text[]) returns text
language plpgsql immutable as $$
begin
    return (
        select string_agg(f.head || coalesce(' { ' || bulk_sync.graphql_fields(f.rest) || ' }', ''), ' '
                          order by f.first)
        from (
            select split_part(u.p, '.', 1) as head, min(u.n) as first,
                   array_agg(substr(u.p, strpos(u.p, '.') + 1) order by u.n) filter (where strpos(u.p, '.') > 0) as rest
            from unnest(p_paths) with ordinality as u (p, n)
            group by 1
        ) as f
    );
end;
$$;

-- The selection of one table's objects in an export of p_entity: the id (unless its rows are keyed by position),
-- its columns' fields when the entity writes the table, the fields its children read of it ('^' paths), and each
-- child the entity exports: a connection as edges and nodes, a list or an object inline.
create or replace function bulk_sync.selection(p_entity text, p_table text) returns text
language plpgsql stable as $$
declare
    v_paths text[];
    v_children text;
begin
    select array_agg(ltrim(u.p, '^') order by t.position, c.position, u.n) into v_paths
    from bulk_sync.mirror_columns as c
    inner join bulk_sync.written_tables(p_entity) as t on c.table_name = t.name
    cross join lateral unnest(c.paths) with ordinality as u (p, n)
    where (t.name = p_table and u.p not like '^%') or (t.parent = p_table and u.p like '^%');
    select string_agg(
               case t.via when 'connection' then format('%s { edges { node { %s } } }', t.field, s.fields)
                          else format('%s { %s }', t.field, s.fields) end,
               ' ' order by t.position)
      into v_children
    from bulk_sync.written_tables(p_entity) as t
    cross join lateral (select bulk_sync.selection(p_entity, t.name) as fields) as s
    where t.parent = p_table and t.via <> 'fetched';  -- fetched after the import (sql/45_fetch.sql)
    return concat_ws(' ',
        -- roots and connections need their id (nested connections' lines name it), lists keyed by id too
        (select 'id' from bulk_sync.mirror_tables where name = p_table and (keyed_by = 'id' or via = 'connection')),
        bulk_sync.graphql_fields(v_paths), v_children);
end;
$$;

-- The bulk query that exports a job's entity and window (a snapshot has none): the root connection, filtered by
-- the window's field and sorted by creation when the window is by creation, selecting what the entity writes.
create or replace function bulk_sync.bulk_query(p_job bulk_sync.jobs) returns text
language sql stable as $$
    select format(
        '{ %s%s { edges { node { %s } } } }',
        e.root,
        case when p_job.window_start is not null then format(
            '(query: "%1$s:>=''%2$s'' %1$s:<''%3$s''"%4$s)',
            p_job.filter_field, bulk_sync.search_time(p_job.window_start), bulk_sync.search_time(p_job.window_end),
            -- No sort key with an updated_at filter: reported to drop records.
            case when p_job.filter_field = 'created_at' then ', sortKey: CREATED_AT' else '' end
        ) else '' end,
        concat_ws(' ', bulk_sync.selection(e.entity, bulk_sync.root_table(e.entity)), nullif(e.selection, ''))
    )
    from bulk_sync.entities as e
    where e.entity = p_job.entity;
$$;

-- The SQL expression of a mirrored column's value read from p_doc (p_parent_doc for '^' paths): the first of its
-- paths present, cast to its type.
create or replace function bulk_sync.value_sql(p_paths text[], p_type text, p_doc text, p_parent_doc text)
returns text
language sql immutable as $$
    select case when p_type in ('text', 'jsonb') then v
                when p_type = 'text[]' then format('bulk_sync.text_array(%s)', v)
                else format('(%s)::%s', v, p_type) end
    from (
        select case when count(*) > 1 then 'coalesce(' || string_agg(e, ', ' order by n) || ')'
                    else min(e) end as v
        from (
            select u.n, format(
                       case when strpos(ltrim(u.p, '^'), '.') = 0 then '%s %s %L' else '%s %s %L::text[]' end,
                       case when u.p like '^%' then p_parent_doc else p_doc end,
                       case when strpos(ltrim(u.p, '^'), '.') = 0
                            then case when p_type in ('jsonb', 'text[]') then '->' else '->>' end
                            else case when p_type in ('jsonb', 'text[]') then '#>' else '#>>' end end,
                       case when strpos(ltrim(u.p, '^'), '.') = 0 then ltrim(u.p, '^')
                            else '{' || replace(ltrim(u.p, '^'), '.', ',') || '}' end
                   ) as e
            from unnest(p_paths) with ordinality as u (p, n)
        ) as x
    ) as y;
$$;

-- The strings of a JSON array as a text array; null when it is not an array.
create or replace function bulk_sync.text_array(p_value jsonb) returns text[]
language sql immutable as $$
    select case when jsonb_typeof(p_value) = 'array' then array(select jsonb_array_elements_text(p_value)) end;
$$;

-- A list field's elements: a JSON array as it is, an object as a list of one (an inline object), else none.
create or replace function bulk_sync.as_list(p_value jsonb) returns jsonb
language sql immutable as $$
    select case jsonb_typeof(p_value) when 'array' then p_value when 'object' then jsonb_build_array(p_value)
                else '[]'::jsonb end;
$$;

-- A table's mirrored columns as SQL: their names, their values read from p_doc (p_parent_doc: the parent's object)
-- and the assignments of an upsert, each in the columns' order.
create or replace function bulk_sync.columns_sql(
    p_table text, p_doc text, p_parent_doc text default null, out columns text, out exprs text, out sets text
)
language sql stable as $$
    select string_agg(quote_ident(c.column_name), ', ' order by c.position),
           string_agg(bulk_sync.value_sql(c.paths, c.type, p_doc, p_parent_doc), ', ' order by c.position),
           string_agg(format('%1$I = excluded.%1$I', c.column_name), ', ' order by c.position)
    from bulk_sync.mirror_columns as c
    where c.table_name = p_table;
$$;

-- Refuses a job whose window does not fit its entity: a snapshot's job has none, every other job one.
create or replace function bulk_sync.jobs_window_fits() returns trigger
language plpgsql as $$
begin
    if (select e.snapshot from bulk_sync.entities as e where e.entity = new.entity)
       = (new.window_start is not null) then
        raise exception 'job of entity % %', new.entity,
            case when new.window_start is null then 'needs a window' else 'is a snapshot: it has no window' end
            using errcode = 'check_violation';
    end if;
    return new;
end;
$$;

-- Here, not in 10_state_machine.sql: it reads the entities, this file's idea.
create or replace trigger jobs_window_fits
before insert or update of entity, window_start on bulk_sync.jobs
for each row execute function bulk_sync.jobs_window_fits();
