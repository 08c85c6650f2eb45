-- The import: staged JSONL lines into shopify.*, set-based, in batches that each commit their rows together with
-- lines_processed, newer wins, and every line either imported or quarantined with its reason. Shopify writes
-- children after their parents, so a child's parent is always in an earlier line.

-- Refuses staged lines or import roots of a job that does not exist, once per statement (the foreign key did it once
-- per line; sql/migrations/0006_staging_checks.sql).
create or replace function bulk_sync.check_staged_jobs() returns trigger
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_job bigint;
begin
    select a.job_id into v_job
    from (select distinct job_id from added) as a
    where not exists (select from bulk_sync.jobs as j where j.id = a.job_id)
    limit 1;
    if found then
        raise exception 'job % does not exist: % rows refused', v_job, tg_table_name
            using errcode = 'foreign_key_violation';
    end if;
    return null;
end;
$$;

create or replace trigger staging_jobs_exist
after insert on bulk_sync.staging
referencing new table as added
for each statement execute function bulk_sync.check_staged_jobs();

create or replace trigger import_roots_jobs_exist
after insert on bulk_sync.import_roots
referencing new table as added
for each statement execute function bulk_sync.check_staged_jobs();

-- Removes what deleted jobs staged (lines and import roots), as a cascading foreign key would.
create or replace function bulk_sync.forget_staged() returns trigger
language plpgsql as $$
begin
    delete from bulk_sync.staging as s using removed as r where s.job_id = r.id;
    delete from bulk_sync.import_roots as i using removed as r where i.job_id = r.id;
    return null;
end;
$$;

-- Here, not in 10_state_machine.sql: it keeps staging (this file's tables) free of deleted jobs' lines.
create or replace trigger jobs_forget_staged
after delete on bulk_sync.jobs
referencing old table as removed
for each statement execute function bulk_sync.forget_staged();

-- Parses one line as jsonb, or null when it is not JSON (the slow path, only for batches with a bad line).
create or replace function bulk_sync.try_jsonb(p_line text) returns jsonb
language plpgsql immutable as $$
begin
    return p_line::jsonb;
exception when others then
    return null;
end;
$$;

-- True when an inline list keyed by id is absent or a list of objects that each have an id.
create or replace function bulk_sync.ids_ok(p_list jsonb) returns boolean
language sql immutable as $$
    select p_list is null or jsonb_typeof(p_list) = 'null'
        or (jsonb_typeof(p_list) = 'array'
            and not jsonb_path_exists(p_list, '$[*] ? (@.type() != "object" || !exists(@.id) || @.id.type() != "string")'));
$$;

-- The import's session temp tables: bounded in size, and analyzed once filled. Nothing vacuums or analyzes temp
-- tables; without statistics the planner guessed their size and joined them to shopify.order_line_items and
-- shopify.refunds by scanning those whole tables, once per batch (imports slowed as the tables grew).

-- Reads the job's next batch of staged lines into pg_temp.bulk_sync_batch, parsed and classified, each object's last
-- valid line in the batch marked latest (the one that counts when an object comes twice); returns how many.
create or replace function bulk_sync.stage_batch(p_job bulk_sync.jobs, p_size integer) returns integer
language plpgsql as $$
declare
    v_count integer;
    v_root_type text := (select root_type from bulk_sync.entities where entity = p_job.entity);
    -- the types of the lines with a __parentId: the connections the export selects
    v_child_types text [] := array(
        select graphql_type from bulk_sync.written_tables(p_job.entity) where via = 'connection'
    );
    -- the root's inline lists whose rows are keyed by id: each element must have one
    v_id_lists text[] := array(
        select field from bulk_sync.written_tables(p_job.entity)
        where parent = bulk_sync.root_table(p_job.entity) and via = 'list' and keyed_by = 'id'
    );
    v_safe boolean := false;
begin
    if not exists (
        select from pg_attribute where attrelid = to_regclass('pg_temp.bulk_sync_batch') and attname = 'latest'
    ) then
        -- none yet, or one of the shape before an upgrade (a session that imported before it)
        drop table if exists pg_temp.bulk_sync_batch, pg_temp.bulk_sync_won;
        create temp table bulk_sync_batch (
            line_no bigint,
            doc jsonb,
            gid text,
            kind text,
            parent text,
            reason text,
            latest boolean not null default true
        );
        create temp table bulk_sync_won (gid text);
        -- ANALYZE then samples 300 rows, not 30,000: the planner needs their number and the few kinds, not histograms
        alter table pg_temp.bulk_sync_batch alter gid set statistics 1, alter kind set statistics 1,
            alter parent set statistics 1, alter reason set statistics 1, alter latest set statistics 1;
        alter table pg_temp.bulk_sync_won alter gid set statistics 1;
    end if;
    -- Nothing vacuums a session's temp tables: deleted rows pile up (a long-lived runner's batch table reached
    -- 100 MB, spilled out of temp_buffers and slowed every import to disk reads). Truncate once it outgrows a few
    -- megabytes; below that, delete keeps the cached plans of small imports.
    if pg_relation_size('pg_temp.bulk_sync_batch') > 4 * 1024 * 1024 then
        truncate pg_temp.bulk_sync_batch, pg_temp.bulk_sync_won;
    else
        delete from pg_temp.bulk_sync_batch;
        delete from pg_temp.bulk_sync_won;
    end if;
    loop
        begin
            insert into pg_temp.bulk_sync_batch (line_no, doc, gid, kind, parent, reason)
            select line_no, doc, gid, kind, parent,
                   case
                       when doc is null then 'not JSON'
                       when jsonb_typeof(doc) <> 'object' then 'not a JSON object'
                       when gid is null then 'missing id'
                       when kind is null then 'malformed id ' || left(gid, 200)
                       when kind = v_root_type and parent is null then (
                           select format('%1$s is not a list of %1$s with ids', f) from unnest(v_id_lists) as f
                           where not bulk_sync.ids_ok(doc -> f) limit 1
                       )
                       when kind = any(v_child_types) and parent is not null then null
                       when kind = v_root_type and parent is not null then kind || ' with a __parentId'
                       when kind = any(v_child_types) then kind || ' without a __parentId'
                       else format('unexpected object type %s in a %s export', kind, p_job.entity)
                   end
            from (
                select line_no, doc, gid,
                       -- gid://shopify/<Kind>/<number>: split_part and a digits check, a tenth of a regex's cost
                       case when gid like 'gid://shopify/%' and split_part(gid, '/', 4) ~ '^[A-Za-z]+$'
                                 and split_part(gid, '/', 5) ~ '^[0-9]+$' and split_part(gid, '/', 6) = ''
                            then split_part(gid, '/', 4) end as kind,
                       parent
                from (
                    select line_no, doc,
                           case when jsonb_typeof(doc -> 'id') = 'string' then doc ->> 'id' end as gid,
                           case when jsonb_typeof(doc) = 'object' then doc ->> '__parentId' end as parent
                    from (
                        select line_no,
                               case when v_safe then bulk_sync.try_jsonb(line) else line::jsonb end as doc
                        from bulk_sync.staging
                        where job_id = p_job.id
                          and line_no > p_job.lines_processed and line_no <= p_job.lines_processed + p_size
                        offset 0  -- parse each line once: keeps the planner from repeating the cast per reference
                    ) as parsed
                    offset 0
                ) as identified
                offset 0
            ) as classified;
            get diagnostics v_count = row_count;
            -- Hashes ids only (sorting whole lines for distinct on spilled to disk); normally finds nothing.
            update pg_temp.bulk_sync_batch as b set latest = false
            from (
                select gid, max(line_no) as last_line
                from pg_temp.bulk_sync_batch where reason is null
                group by gid having count(*) > 1
            ) as d
            where b.gid = d.gid and b.line_no < d.last_line and b.reason is null;
            -- What the planner needs; statistics of the documents themselves cost more than the rest of the batch.
            analyze pg_temp.bulk_sync_batch (gid, kind, parent, reason, latest);
            return v_count;
        exception when others then
            -- A malformed line in this batch: parse it again line by line.
            if v_safe then
                raise;
            end if;
            v_safe := true;
        end;
    end loop;
end;
$$;

-- Records the batch's roots (objects of type p_type) as roots of the job, and whether each won (is in
-- pg_temp.bulk_sync_won, analyzed here: every caller has just filled it and joins it to a shopify table next); with
-- p_all, each as accepted whether it won or not (a snapshot: what it lacks is deleted when it completes).
create or replace function bulk_sync.record_roots(
    p_job bulk_sync.jobs, p_type text, p_all boolean default false
) returns void
language plpgsql as $$
begin
    analyze pg_temp.bulk_sync_won;
    perform bulk_sync.insert_new(p_job,
        format(
            'insert into bulk_sync.import_roots as r (job_id, gid, accepted)
             select $2, b.gid, %s or w.gid is not null
             from pg_temp.bulk_sync_batch as b
             left join pg_temp.bulk_sync_won as w on w.gid = b.gid
             where b.reason is null and b.kind = %L and b.latest',
            p_all::text, p_type),
        'on conflict (job_id, gid) do update set accepted = excluded.accepted');
end;
$$;

-- Imports a batch of an export that writes its root table (orders, skus): the roots (newer or equal updated_at
-- wins), then the winners' children: their inline lists (refunds, tax lines, ...) and their connections (line items,
-- with their own lists). Children exist only for roots stored before, so only a batch that replaced stored roots
-- deletes any.
create or replace function bulk_sync.import_tree(p_job bulk_sync.jobs) returns void
language plpgsql as $$
declare
    v_e bulk_sync.entities := (select e from bulk_sync.entities as e where e.entity = p_job.entity);
    v_root text := bulk_sync.root_table(p_job.entity);
    v_replaced boolean := bulk_sync.write_root(p_job, v_root) > 0;
    v_name text;
begin
    perform bulk_sync.record_roots(p_job, v_e.root_type, v_e.snapshot);
    perform bulk_sync.replace_lists(p_job, v_root, v_replaced);
    for v_name in
        select name from bulk_sync.written_tables(p_job.entity) where parent = v_root and via = 'connection'
    loop
        perform bulk_sync.import_connection(p_job, v_name, v_replaced);
    end loop;
end;
$$;

-- The statement that writes the batch's latest valid objects of kind p_kind into shopify.<p_table> and records
-- them in pg_temp.bulk_sync_won: without p_upsert, a plain insert of the ids not stored yet; with it, the ids not
-- already written, replacing (p_set) a stored row whose updated_at is not newer. p_values reads gid and doc, and $1
-- (the shop), $2 (the job) and $3 (when its export started).
create or replace function bulk_sync.write_latest_sql(
    p_upsert boolean, p_kind text, p_table text, p_columns text, p_values text, p_set text
) returns text
language sql immutable as $$
    select format(
        'with latest as (
             select gid, doc from pg_temp.bulk_sync_batch as b
             where reason is null and kind = %L and latest and not exists (%s)
         ),
         written as (insert into shopify.%I as t (%s) select %s from latest %s returning t.id)
         insert into pg_temp.bulk_sync_won (gid) select id from written',
        p_kind,
        case when p_upsert then 'select from pg_temp.bulk_sync_won as w where w.gid = b.gid'
             else format('select from shopify.%I as s where s.id = b.gid', p_table) end,
        p_table, p_columns, p_values,
        case when p_upsert then format(
            'on conflict (id) do update set %s,
                 -- alive again only in an export that started after the deletion was learnt of
                 deleted_at = case when t.deleted_at > $3 then t.deleted_at end
             where coalesce(t.updated_at, ''-infinity'') <= coalesce(excluded.updated_at, ''-infinity'')', p_set)
        else '' end
    );
$$;

-- Writes the batch's latest valid objects of a kind (bulk_sync.write_latest_sql) and records the winners in
-- pg_temp.bulk_sync_won; returns how many the upsert wrote (stored objects replaced). Most objects of a backfill are
-- new: a plain insert of those first (cheaper per row, bulk_sync.insert_new says why), then the upsert of the rest.
-- Should a concurrent import store one of them meanwhile, the insert is undone whole and the upsert takes them all.
create or replace function bulk_sync.write_latest(
    p_job bulk_sync.jobs, p_kind text, p_table text, p_columns text, p_values text, p_set text
) returns integer
language plpgsql as $$
declare
    v_count integer;
begin
    begin
        execute bulk_sync.write_latest_sql(false, p_kind, p_table, p_columns, p_values, p_set)
        using p_job.shop, p_job.id, p_job.operation_started_at;
    exception when unique_violation then
        null;
    end;
    execute bulk_sync.write_latest_sql(true, p_kind, p_table, p_columns, p_values, p_set)
    using p_job.shop, p_job.id, p_job.operation_started_at;
    get diagnostics v_count = row_count;
    return v_count;
end;
$$;

-- Runs p_insert (an INSERT reading $1 the shop, $2 the job, $3 when its export started) as a plain insert, and once
-- more with p_on_conflict appended when it meets a key already stored; returns the rows written. Keys are rarely
-- there already (an object twice in an export), and a plain insert costs about a fifth less per row than an
-- upsert's speculative insertion.
create or replace function bulk_sync.insert_new(p_job bulk_sync.jobs, p_insert text, p_on_conflict text)
returns integer
language plpgsql as $$
declare
    v_count integer;
begin
    begin
        execute p_insert using p_job.shop, p_job.id, p_job.operation_started_at;
    exception when unique_violation then
        execute p_insert || ' ' || p_on_conflict using p_job.shop, p_job.id, p_job.operation_started_at;
    end;
    get diagnostics v_count = row_count;
    return v_count;
end;
$$;

-- Writes the batch's objects of a root table (orders, skus) with bulk_sync.write_latest, columns as
-- bulk_sync.mirror_columns says; returns how many stored objects they replaced.
create or replace function bulk_sync.write_root(p_job bulk_sync.jobs, p_table text) returns integer
language plpgsql as $$
declare
    c record := bulk_sync.columns_sql(p_table, 'doc');
begin
    return bulk_sync.write_latest(p_job, (select graphql_type from bulk_sync.mirror_tables where name = p_table), p_table,
        'id, shop, ' || c.columns || ', raw, import_job, imported_at',
        'gid, $1, ' || c.exprs || ', doc, $2, now()',
        'shop = excluded.shop, ' || c.sets
        || ', raw = excluded.raw, import_job = excluded.import_job, imported_at = excluded.imported_at');
end;
$$;

-- Replaces the rows of every list or object table under p_table that the job's entity writes
-- (bulk_sync.replace_list), in their order; p_replaced: some parents were stored before (else none has rows yet).
create or replace function bulk_sync.replace_lists(p_job bulk_sync.jobs, p_table text, p_replaced boolean)
returns void
language plpgsql as $$
declare
    v_name text;
begin
    for v_name in
        select name from bulk_sync.written_tables(p_job.entity) where parent = p_table and via in ('list', 'object')
    loop
        perform bulk_sync.replace_list(p_job, v_name, p_replaced);
    end loop;
end;
$$;

-- Replaces the rows of a list table (bulk_sync.mirror_tables: via list or object) of the batch's parents that won
-- (roots) or were accepted (children of accepted roots) with their inline lists: the parents' rows go, each element
-- is written (from the parent's last line, should a parent come twice), keyed by its id or by its parent and
-- position, keeping a stored row whose version column is newer. Without p_replaced (no parent was stored before)
-- there is nothing to delete, and a plain insert is tried first (bulk_sync.insert_new).
create or replace function bulk_sync.replace_list(p_job bulk_sync.jobs, p_table text, p_replaced boolean)
returns void
language plpgsql as $$
declare
    v_t bulk_sync.mirror_tables;
    v_parent bulk_sync.mirror_tables;
    v_parents text;
    v_key text;
    c record := bulk_sync.columns_sql(p_table, 'e.value', 'p.doc');
begin
    select * into strict v_t from bulk_sync.mirror_tables where name = p_table;
    select * into strict v_parent from bulk_sync.mirror_tables where name = v_t.parent;
    v_parents := case when v_parent.via = 'root' then format(
        'select b.gid as id, b.doc, b.line_no from pg_temp.bulk_sync_batch as b
         join pg_temp.bulk_sync_won as w on w.gid = b.gid
         where b.reason is null and b.kind = %L', v_parent.graphql_type)
    else format(
        'select b.gid as id, b.doc, b.line_no from pg_temp.bulk_sync_batch as b
         join bulk_sync.import_roots as r on r.job_id = $2 and r.gid = b.parent and r.accepted
         where b.reason is null and b.kind = %L and b.latest', v_parent.graphql_type) end;
    v_key := case v_t.keyed_by when 'id' then 'id' else quote_ident(v_t.parent_column) || ', position' end;
    if p_replaced then
        execute format('delete from shopify.%I as r using (%s) as p where r.%I = p.id', p_table, v_parents,
                       v_t.parent_column)
        using p_job.shop, p_job.id;
    end if;
    perform bulk_sync.insert_new(p_job,
        format(
            'insert into shopify.%1$I as r (%2$s, shop, %3$I, %4$s, raw, import_job, imported_at)
             select distinct on (%5$s) %6$s, $1, p.id, %7$s, e.value, $2, now()
             from (%8$s) as p
             cross join lateral jsonb_array_elements(bulk_sync.as_list(p.doc -> %9$L)) with ordinality as e (value, n)
             order by %5$s, p.line_no desc',
            p_table,
            case v_t.keyed_by when 'id' then 'id' else 'position' end,
            v_t.parent_column, c.columns,
            case v_t.keyed_by when 'id' then 'e.value ->> ''id''' else 'p.id, e.n' end,
            case v_t.keyed_by when 'id' then 'e.value ->> ''id''' else 'e.n' end,
            c.exprs, v_parents, v_t.field),
        format(
            'on conflict (%1$s) do update
                set shop = excluded.shop, %2$I = excluded.%2$I, %3$s, raw = excluded.raw,
                    import_job = excluded.import_job, imported_at = excluded.imported_at%4$s',
            v_key, v_t.parent_column, c.sets,
            case when v_t.version_column is not null then format(
                ' where coalesce(r.%1$I, ''-infinity'') <= coalesce(excluded.%1$I, ''-infinity'')',
                v_t.version_column)
            else '' end));
end;
$$;

-- The SQL of the version (version_column, a timestamptz) of a row of p_table, read from its exported line p_doc.
create or replace function bulk_sync.version_sql(p_table text, p_doc text) returns text
language sql stable as $$
    select bulk_sync.value_sql(c.paths, 'timestamptz', p_doc, null)
    from bulk_sync.mirror_tables as t
    inner join bulk_sync.mirror_columns as c on t.name = c.table_name and t.version_column = c.column_name
    where t.name = p_table;
$$;

-- Imports a batch of an export that writes lists of its roots but not the roots (refunds): a root's lists win
-- unless the stored root, or a stored row of one of its lists, is newer (their version columns); the winners' lists
-- are replaced.
create or replace function bulk_sync.import_lists(p_job bulk_sync.jobs) returns void
language plpgsql as $$
declare
    v_root bulk_sync.mirror_tables;
    v_version text;
    v_newer text;
begin
    select * into strict v_root from bulk_sync.mirror_tables where name = bulk_sync.root_table(p_job.entity);
    v_version := bulk_sync.version_sql(v_root.name, 'b.doc');
    select string_agg(format('exists (select from shopify.%I as x where x.%I = b.gid and x.%I > %s)',
                             t.name, t.parent_column, t.version_column, v_version), ' or ')
      into v_newer
    from bulk_sync.written_tables(p_job.entity) as t
    where t.parent = v_root.name and t.version_column is not null;
    execute format(
        'insert into pg_temp.bulk_sync_won (gid)
         select b.gid from pg_temp.bulk_sync_batch as b
         where b.reason is null and b.kind = %L and b.latest
           and not exists (select from shopify.%I as o where o.id = b.gid and o.%I > %s)
           and not (%s)',
        v_root.graphql_type, v_root.name, v_root.version_column, v_version, coalesce(v_newer, 'false'));
    perform bulk_sync.record_roots(p_job, v_root.graphql_type);
    perform bulk_sync.replace_lists(p_job, v_root.name, true);
end;
$$;

-- Imports the batch's objects of a connection table (bulk_sync.mirror_tables: via connection) whose parent won in
-- this job, and their lists; quarantines orphans (no parent earlier in the export). p_replaced: as replace_lists.
create or replace function bulk_sync.import_connection(p_job bulk_sync.jobs, p_table text, p_replaced boolean)
returns void
language plpgsql as $$
declare
    v_t bulk_sync.mirror_tables;
    c record := bulk_sync.columns_sql(p_table, 'b.doc');
begin
    select * into strict v_t from bulk_sync.mirror_tables where name = p_table;
    if p_replaced then
        -- the winners' children: what this export no longer has disappears
        execute format('delete from shopify.%I as c using pg_temp.bulk_sync_won as w
                        where c.%I = w.gid and c.import_job <> $1', p_table, v_t.parent_column)
        using p_job.id;
    end if;
    update pg_temp.bulk_sync_batch as b
       set reason = 'orphan child: parent ' || left(b.parent, 200) || ' is not earlier in this export'
     where b.reason is null and b.kind = v_t.graphql_type
       and not exists (select from bulk_sync.import_roots as r where r.job_id = p_job.id and r.gid = b.parent);
    -- The winners' other children are gone (above), so an id is there already only when a parent came twice in
    -- this export or a child changed parents.
    perform bulk_sync.insert_new(p_job,
        format(
            'insert into shopify.%1$I as li (id, shop, %2$I, %3$s, raw, import_job, imported_at)
             select b.gid, $1, b.parent, %4$s, b.doc - ''__parentId'', $2, now()
             from pg_temp.bulk_sync_batch as b
             join bulk_sync.import_roots as r on r.job_id = $2 and r.gid = b.parent and r.accepted
             where b.reason is null and b.kind = %5$L and b.latest',
            p_table, v_t.parent_column, c.columns, c.exprs, v_t.graphql_type),
        format(
            'on conflict (id) do update
                set shop = excluded.shop, %1$I = excluded.%1$I, %2$s, raw = excluded.raw,
                    import_job = excluded.import_job, imported_at = excluded.imported_at',
            v_t.parent_column, c.sets));
    perform bulk_sync.replace_lists(p_job, p_table, p_replaced);
end;
$$;

-- Ends an import: failed unless every line is imported or quarantined and the count is Shopify's; else completed,
-- or fetching when the import queued rows to fetch (sql/45_fetch.sql). Returns the state it left the job in.
create or replace function bulk_sync.finish_import(p_job bulk_sync.jobs) returns text
language plpgsql as $$
declare
    v_message text := format('%s lines: %s imported, %s quarantined', p_job.lines_total,
                             p_job.lines_total - p_job.lines_rejected, p_job.lines_rejected);
    v_fetches integer := (select count(*) from bulk_sync.fetches where job_id = p_job.id);
begin
    if p_job.lines_processed <> p_job.lines_total or p_job.lines_total is distinct from p_job.object_count then
        perform bulk_sync.fail(p_job, 'import', format(
            'import incomplete: %s lines processed (%s quarantined) of %s staged; Shopify reported %s objects',
            p_job.lines_processed, p_job.lines_rejected, p_job.lines_total, coalesce(p_job.object_count::text, '?')));
        return 'failed';
    end if;
    if v_fetches > 0 then
        perform bulk_sync.transition(p_job, 'fetching', 'import', 'ok',
                                     format('%s; rows of %s parents to fetch', v_message, v_fetches));
        return 'fetching';
    end if;
    p_job := bulk_sync.transition(p_job, 'completed', 'import', 'ok', v_message);
    perform bulk_sync.job_completed(p_job);
    return 'completed';
end;
$$;

-- Settles what a job's completion settles beyond its state: the export's deletions and gaps
-- (bulk_sync.export_complete) and, kept for no time, its staging.
create or replace function bulk_sync.job_completed(p_job bulk_sync.jobs) returns void
language plpgsql as $$
begin
    perform bulk_sync.export_complete(p_job);
    if (bulk_sync.get_settings()).staging_retention_seconds = 0 then
        perform bulk_sync.clear_staging(array[p_job.id]);
    end if;
end;
$$;

-- Records the ids of an export of nothing but its roots' ids (order_ids, customer_ids), each with whether the mirror
-- holds it alive and as new, and when it was created and last updated.
create or replace function bulk_sync.record_ids(p_job bulk_sync.jobs) returns void
language plpgsql as $$
declare
    v_root bulk_sync.mirror_tables;
begin
    select * into strict v_root from bulk_sync.mirror_tables where name = bulk_sync.root_table(p_job.entity);
    execute format(
        'insert into bulk_sync.import_roots (job_id, gid, accepted, created_at, updated_at)
         select $1, b.gid,
                exists (
                    select from shopify.%I as o
                    where o.id = b.gid and o.deleted_at is null and o.%I >= %s
                ),
                (b.doc ->> ''createdAt'')::timestamptz, (b.doc ->> ''updatedAt'')::timestamptz
         from pg_temp.bulk_sync_batch as b
         where b.reason is null and b.kind = %L and b.latest
         on conflict (job_id, gid) do update
         set accepted = excluded.accepted, created_at = excluded.created_at, updated_at = excluded.updated_at',
        v_root.name, v_root.version_column, bulk_sync.version_sql(v_root.name, 'b.doc'), v_root.graphql_type)
    using p_job.id;
end;
$$;

-- Sends a job whose staged lines are all gone (staging is unlogged: a crash of the database empties it) back to
-- exporting, to download its export again and import it from the first line; returns 'restaged'.
create or replace function bulk_sync.restage(p_job bulk_sync.jobs) returns text
language plpgsql as $$
declare
    v_message text := format(
        'staged lines lost (the database restarted: staging is unlogged) after %s of %s lines; downloading again',
        p_job.lines_processed, p_job.lines_total);
begin
    perform bulk_sync.clear_staging(array[p_job.id]);  -- the import roots, lost with the lines they came from
    p_job.next_attempt_at := now();
    p_job.bytes_copied := 0;
    p_job.lines_total := null;
    p_job.lines_processed := 0;
    p_job.lines_rejected := 0;
    perform bulk_sync.transition(p_job, 'exporting', 'import', 'retry', v_message);
    return 'restaged';
end;
$$;

-- Imports the next batch of a job whose import lease p_fence holds; returns 'more', 'completed', 'fetching', 'failed',
-- 'stale' or 'restaged'.
-- The rows and the advanced lines_processed commit together, in the caller's transaction.
create or replace function bulk_sync.import_batch(p_job_id bigint, p_fence bigint) returns text
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_job bulk_sync.jobs := bulk_sync.fenced(p_job_id, p_fence, '{importing}', 'import');
    v_s bulk_sync.settings := bulk_sync.get_settings();
    v_count integer;
    v_rejected integer;
begin
    if v_job is null then
        return 'stale';
    end if;
    v_count := bulk_sync.stage_batch(v_job, v_s.import_batch_size);
    if v_count > 0 then
        -- by what the entity writes (bulk_sync.entity_tables): its root table and their children, lists of its
        -- roots only (refunds), or nothing but the ids (order_ids, customer_ids)
        if exists (select from bulk_sync.written_tables(v_job.entity) where via = 'root') then
            perform bulk_sync.import_tree(v_job);
        elsif exists (select from bulk_sync.written_tables(v_job.entity)) then
            perform bulk_sync.import_lists(v_job);
        else
            perform bulk_sync.record_ids(v_job);
        end if;
        perform bulk_sync.queue_fetches(v_job);
        insert into bulk_sync.rejects (job_id, line_no, reason, line)
        select v_job.id, b.line_no, b.reason, s.line
        from pg_temp.bulk_sync_batch as b
        join bulk_sync.staging as s on s.job_id = v_job.id and s.line_no = b.line_no
        where b.reason is not null
        on conflict (job_id, line_no) do update set reason = excluded.reason;
        get diagnostics v_rejected = row_count;
        update bulk_sync.jobs
           set lines_processed = lines_processed + v_count, lines_rejected = lines_rejected + v_rejected,
               lease_expires_at = now() + make_interval(secs => v_s.lease_seconds)
         where id = v_job.id
        returning * into v_job;
    end if;
    if v_count > 0 and v_job.lines_processed < coalesce(v_job.lines_total, 0) then
        return 'more';
    end if;
    -- Nothing left to read before the last line: lost in a crash (all of it), or a bug (finish_import fails the job).
    if v_job.lines_processed < v_job.lines_total and not exists (select from bulk_sync.staging where job_id = v_job.id) then
        return bulk_sync.restage(v_job);
    end if;
    return bulk_sync.finish_import(v_job);
end;
$$;

-- Where a job's import left it, for the runner's metrics: the state its import ended in (a job fetching may have
-- moved on since), its entity, lines processed and quarantined, and the fence of that end (one past the import
-- task's when that import ended the job's importing; more when another did).
create or replace function bulk_sync.import_outcome(p_job_id bigint)
returns table (status text, entity text, lines_processed bigint, lines_rejected bigint, fence bigint)
language sql stable
security definer set search_path = pg_catalog, pg_temp as $$
    select coalesce(r.to_status, j.status), j.entity, j.lines_processed, j.lines_rejected, coalesce(r.fence, j.fence)
    from bulk_sync.jobs as j
    left join lateral (
        select e.to_status, e.fence from bulk_sync.job_runs as e
        where e.job_id = j.id and e.from_status = 'importing' and e.to_status is distinct from 'importing'
        order by e.id desc
        limit 1
    ) as r on true
    where j.id = p_job_id;
$$;

-- Imports a whole job, one committed batch at a time (CALL it outside a transaction block). Resumes where the
-- last committed batch stopped; a concurrent or stale caller imports nothing twice (the job row and fence decide).
create or replace procedure bulk_sync.import(p_job_id bigint, p_fence bigint)
language plpgsql as $$
declare
    v_result text;
begin
    loop
        v_result := bulk_sync.import_batch(p_job_id, p_fence);
        commit;
        exit when v_result <> 'more';
    end loop;
end;
$$;

-- The tick's share of importing: takes import tasks no runner claimed within 5 s and works on its own jobs within a
-- time budget, returning the batches it ran. All of it commits with the tick (one transaction; redone if it dies).
create or replace function bulk_sync.tick_import(p_budget interval) returns integer
language plpgsql as $$
declare
    v_deadline timestamptz := clock_timestamp() + p_budget;
    v_job bulk_sync.jobs;
    v_batches integer := 0;
begin
    for v_job in
        select * from bulk_sync.jobs
        where status = 'ready_to_import' and updated_at < now() - interval '5 s'
        order by id
        for update skip locked
    loop
        perform bulk_sync.transition(v_job, 'importing', 'import', 'claimed', 'import claimed by bulk_sync.tick',
                                     p_lease_by => 'bulk_sync_tick');
    end loop;
    for v_job in
        select * from bulk_sync.jobs
        where status = 'importing' and leased_by = 'bulk_sync_tick' and lease_expires_at > now()
        order by id
    loop
        loop
            exit when clock_timestamp() >= v_deadline;
            v_batches := v_batches + 1;
            exit when bulk_sync.import_batch(v_job.id, v_job.fence) <> 'more';
        end loop;
        exit when clock_timestamp() >= v_deadline;
    end loop;
    return v_batches;
end;
$$;

-- Removes what jobs staged (lines and import bookkeeping); returns how many lines. Quarantined lines stay.
create or replace function bulk_sync.clear_staging(p_job_ids bigint[]) returns bigint
language plpgsql as $$
declare
    v_count bigint;
begin
    delete from bulk_sync.import_roots where job_id = any(p_job_ids);
    delete from bulk_sync.staging where job_id = any(p_job_ids);
    get diagnostics v_count = row_count;
    return v_count;
end;
$$;

-- Staged lines of finished jobs, kept for staging_retention_seconds, then removed; returns how many lines.
create or replace function bulk_sync.prune_staging() returns bigint
language sql as $$
    select bulk_sync.clear_staging(array(
        select j.id from bulk_sync.jobs as j
        where j.status = any(bulk_sync.states('final'))
          and j.finished_at < now() - make_interval(secs => (bulk_sync.get_settings()).staging_retention_seconds)
          and exists (select from bulk_sync.staging as s where s.job_id = j.id)
    ));
$$;
