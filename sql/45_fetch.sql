-- The fetch: rows a bulk query cannot export (a connection inside a list, such as Refund.refundLineItems inside
-- Order.refunds: bulk_sync.mirror_tables via 'fetched') are read after the import with regular queries of their
-- parents' ids, in pages. The import queues the parents it wrote whose rows are not current (queue_fetches); the job
-- then waits in state fetching while a runner sends the query fetch_task gives it and hands the answer to
-- bulk_sync.report_fetched (sql/50_reports.sql), which writes it with write_fetched. A job completes only when every
-- parent it queued is fetched to its last page.
--
-- A regular query may cost at most 1,000 points (Shopify's single query limit, checked before it runs): an object
-- costs 1, a connection 2 plus its page size times the cost of one of its nodes. The page sizes are made from that.

-- The cost of one fetched row of p_table: its object and each object its columns' paths pass through.
create or replace function bulk_sync.row_cost(p_table text) returns integer
language sql stable as $$
    select 1 + count(distinct array_to_string((string_to_array(u.p, '.'))[1:k], '.'))::integer
    from bulk_sync.mirror_columns as c
    cross join lateral unnest(c.paths) as u (p)
    cross join lateral generate_series(1, cardinality(string_to_array(u.p, '.')) - 1) as k
    where c.table_name = p_table;
$$;

-- The regular query that fetches a page of p_table's rows for each of a list of parents ($ids), from after $after.
create or replace function bulk_sync.fetch_query(p_table text) returns text
language sql stable as $$
    select format(
        'query bulkSyncFetch($ids: [ID!]!, $first: Int!, $after: String) { nodes(ids: $ids) { ... on %s { id '
        '%s(first: $first, after: $after) { pageInfo { hasNextPage endCursor } edges { node { %s } } } } } }',
        p.graphql_type, t.field,
        bulk_sync.graphql_fields(array(
            select u.p from bulk_sync.mirror_columns as c
            cross join lateral unnest(c.paths) with ordinality as u (p, n)
            where c.table_name = p_table order by c.position, u.n
        )))
    from bulk_sync.mirror_tables as t
    inner join bulk_sync.mirror_tables as p on t.parent = p.name
    where t.name = p_table;
$$;

-- Queues the fetch of each fetched table's rows (bulk_sync.mirror_tables: via fetched) of the job's entity for the
-- parents this batch wrote (children of the batch's winning roots, pg_temp.bulk_sync_won) whose rows were not fetched
-- at their version (updated_at) yet, nor are being fetched at it by another live job (an orders export and a refunds
-- export of the same days write the same refunds: their lines are fetched once; should that job fail, retry_failed
-- fetches them with it).
create or replace function bulk_sync.queue_fetches(p_job bulk_sync.jobs) returns void
language plpgsql as $$
declare
    v_t record;
begin
    for v_t in
        select f.name, p.name as parent, p.parent_column
        from bulk_sync.written_tables(p_job.entity) as f
        inner join bulk_sync.mirror_tables as p on f.parent = p.name
        where f.via = 'fetched'
    loop
        execute format(
            'insert into bulk_sync.fetches (job_id, table_name, parent_id, version)
             select $1, %1$L, p.id, p.updated_at
             from shopify.%2$I as p
             inner join pg_temp.bulk_sync_won as w on p.%3$I = w.gid
             where p.import_job = $1
               and not exists (
                   select from bulk_sync.fetched as f
                   where f.table_name = %1$L and f.parent_id = p.id and f.version >= p.updated_at
               )
               and not exists (
                   select from bulk_sync.fetches as q
                   inner join bulk_sync.jobs as j on q.job_id = j.id
                   where q.table_name = %1$L and q.parent_id = p.id and q.version >= p.updated_at
                     and j.id <> $1 and not j.status = any($2)
               )
             on conflict do nothing', v_t.name, v_t.parent, v_t.parent_column)
        using p_job.id, bulk_sync.states('terminal');
    end loop;
end;
$$;

-- What a runner needs to fetch the job's next page: the query, its variables (the parents' ids, the page size, the
-- cursor) and its requested cost. A parent with a next page goes alone (its cursor is its own), with pages as large
-- as the cost limit allows; first pages go together, 5 rows each (most refunds have fewer lines), as many parents as
-- fit.
create or replace function bulk_sync.fetch_task(p_job bulk_sync.jobs) returns jsonb
language plpgsql stable as $$
declare
    v_next bulk_sync.fetches;
    v_cost integer;
    v_first integer;
    v_ids text[];
begin
    select f.* into v_next from bulk_sync.fetches as f
    inner join bulk_sync.mirror_tables as t on f.table_name = t.name
    where f.job_id = p_job.id
    order by t.position, f.cursor is null, f.parent_id
    limit 1;
    if not found then
        return null;
    end if;
    v_cost := bulk_sync.row_cost(v_next.table_name);
    if v_next.cursor is not null then
        v_first := least(250, (1000 - 3) / v_cost);
        v_ids := array[v_next.parent_id];
    else
        v_first := 5;
        v_ids := array(
            select f.parent_id from bulk_sync.fetches as f
            where f.job_id = p_job.id and f.table_name = v_next.table_name and f.cursor is null
            order by f.parent_id
            limit 1000 / (3 + v_first * v_cost)
        );
    end if;
    return jsonb_build_object(
        'query', bulk_sync.fetch_query(v_next.table_name),
        'variables', jsonb_build_object('ids', to_jsonb(v_ids), 'first', v_first, 'after', v_next.cursor),
        'cost', cardinality(v_ids) * (3 + v_first * v_cost));
end;
$$;

-- Writes the page p_data (the data of fetch_query's answer) for the job's parents p_ids, asked in that order: each
-- parent's rows replace its stored ones from its first page on, at positions after those of its earlier pages; a
-- parent with a next page keeps its cursor, a parent done (or gone from Shopify: null) is recorded as fetched at the
-- version queued. Returns how many rows it wrote.
create or replace function bulk_sync.write_fetched(p_job bulk_sync.jobs, p_ids text[], p_data jsonb) returns integer
language plpgsql as $$
declare
    v_t bulk_sync.mirror_tables;
    v_count integer;
    c record;
begin
    select t.* into strict v_t from bulk_sync.mirror_tables as t
    where t.name = (select min(f.table_name) from bulk_sync.fetches as f
                    where f.job_id = p_job.id and f.parent_id = any(p_ids));
    c := bulk_sync.columns_sql(v_t.name, 'e.node');
    create temp table if not exists bulk_sync_page (
        parent_id text, cursor text, fetched integer, version timestamptz, conn jsonb
    ) on commit drop;
    truncate pg_temp.bulk_sync_page;
    insert into pg_temp.bulk_sync_page
    select f.parent_id, f.cursor, f.fetched, f.version, p_data -> 'nodes' -> (i.k::integer - 1) -> v_t.field
    from unnest(p_ids) with ordinality as i (id, k)
    inner join bulk_sync.fetches as f on f.job_id = p_job.id and f.table_name = v_t.name and f.parent_id = i.id;
    -- a first page (or a parent gone) replaces all the parent's rows
    execute format(
        'delete from shopify.%I as r using pg_temp.bulk_sync_page as g
         where r.%I = g.parent_id and (g.cursor is null or g.conn is null)', v_t.name, v_t.parent_column);
    execute format(
        'insert into shopify.%1$I as r (position, shop, %2$I, %3$s, raw, import_job, imported_at)
         select g.fetched + e.n, $1, g.parent_id, %4$s, e.node, $2, now()
         from pg_temp.bulk_sync_page as g
         cross join lateral jsonb_array_elements(
             case when jsonb_typeof(g.conn -> ''edges'') = ''array'' then g.conn -> ''edges'' else ''[]'' end
         ) with ordinality as x (edge, n)
         cross join lateral (select x.edge -> ''node'' as node, x.n) as e
         on conflict (%2$I, position) do update
            set shop = excluded.shop, %5$s, raw = excluded.raw, import_job = excluded.import_job,
                imported_at = excluded.imported_at',
        v_t.name, v_t.parent_column, c.columns, c.exprs, c.sets)
    using p_job.shop, p_job.id;
    get diagnostics v_count = row_count;
    -- a next page: only where this one brought rows (a page without any ends the parent, whatever it says)
    update bulk_sync.fetches as f
       set cursor = g.conn #>> '{pageInfo,endCursor}',
           fetched = g.fetched + jsonb_array_length(g.conn -> 'edges')
      from pg_temp.bulk_sync_page as g
     where f.job_id = p_job.id and f.table_name = v_t.name and f.parent_id = g.parent_id
       and (g.conn #>> '{pageInfo,hasNextPage}')::boolean
       and g.conn #>> '{pageInfo,endCursor}' is not null
       and jsonb_typeof(g.conn -> 'edges') = 'array' and jsonb_array_length(g.conn -> 'edges') > 0;
    insert into bulk_sync.fetched as d (table_name, parent_id, shop, version)
    select v_t.name, g.parent_id, p_job.shop, g.version
    from pg_temp.bulk_sync_page as g
    inner join bulk_sync.fetches as f
        on f.job_id = p_job.id and f.table_name = v_t.name and f.parent_id = g.parent_id
       and f.cursor is not distinct from g.cursor  -- no next page recorded above
    on conflict (table_name, parent_id) do update
    set version = excluded.version, shop = excluded.shop, fetched_at = now();
    delete from bulk_sync.fetches as f
    using pg_temp.bulk_sync_page as g
    where f.job_id = p_job.id and f.table_name = v_t.name and f.parent_id = g.parent_id
      and f.cursor is not distinct from g.cursor;
    return v_count;
end;
$$;
