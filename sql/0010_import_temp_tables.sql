-- The import's session temp tables: bounded in size, and analyzed once filled. Nothing vacuums or analyzes temp
-- tables; without statistics the planner guessed their size and joined them to shopify.order_line_items and
-- shopify.refunds by scanning those whole tables, once per batch (imports slowed as the tables grew).

-- Reads the job's next batch of staged lines into pg_temp.bulk_sync_batch, classified; returns how many.
create or replace function bulk_sync_stage_batch(p_job bulk_sync_jobs, p_size integer) returns integer
language plpgsql as $$
declare
    v_count integer;
    v_root_type text := case p_job.entity when 'skus' then 'ProductVariant' else 'Order' end;
    v_child_type text := case p_job.entity when 'orders' then 'LineItem' end;
    v_safe boolean := false;
begin
    if to_regclass('pg_temp.bulk_sync_batch') is null then
        create temp table bulk_sync_batch (
            line_no bigint primary key,
            line text not null,
            doc jsonb,
            gid text,
            kind text,
            parent text,
            reason text
        );
        create temp table bulk_sync_won (gid text primary key);
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
            insert into pg_temp.bulk_sync_batch (line_no, line, doc, gid, kind, parent, reason)
            select line_no, line, doc, gid, kind, parent,
                   case
                       when doc is null then 'not JSON'
                       when jsonb_typeof(doc) <> 'object' then 'not a JSON object'
                       when gid is null then 'missing id'
                       when kind is null then 'malformed id ' || left(gid, 200)
                       when kind = v_root_type and parent is null then
                           case when kind = 'Order' and not bulk_sync_refunds_ok(doc -> 'refunds')
                                then 'refunds is not a list of refunds with ids' end
                       when kind = v_child_type and parent is not null then null
                       when kind in (v_root_type, v_child_type) and parent is not null then kind || ' with a __parentId'
                       when kind = v_child_type then kind || ' without a __parentId'
                       else format('unexpected object type %s in a %s export', kind, p_job.entity)
                   end
            from (
                select line_no, line, doc,
                       case when jsonb_typeof(doc -> 'id') = 'string' then doc ->> 'id' end as gid,
                       substring(doc ->> 'id' from '^gid://shopify/([A-Za-z]+)/[0-9]+$') as kind,
                       case when jsonb_typeof(doc) = 'object' then doc ->> '__parentId' end as parent
                from (
                    select line_no, line,
                           case when v_safe then bulk_sync_try_jsonb(line) else line::jsonb end as doc
                    from bulk_sync_staging
                    where job_id = p_job.id
                      and line_no > p_job.lines_processed and line_no <= p_job.lines_processed + p_size
                    offset 0  -- parse each line once: keeps the planner from repeating the cast per reference
                ) as parsed
                offset 0
            ) as classified;
            get diagnostics v_count = row_count;
            analyze pg_temp.bulk_sync_batch;
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

-- Records the batch's orders as roots of the job, and whether each won (is in pg_temp.bulk_sync_won, analyzed here:
-- every caller has just filled it and joins it to a shopify table next).
create or replace function bulk_sync_record_roots(p_job bulk_sync_jobs) returns void
language plpgsql as $$
begin
    analyze pg_temp.bulk_sync_won;
    insert into bulk_sync_import_roots (job_id, gid, accepted)
    select distinct on (b.gid) p_job.id, b.gid, w.gid is not null
    from pg_temp.bulk_sync_batch as b
    left join pg_temp.bulk_sync_won as w on w.gid = b.gid
    where b.reason is null and b.kind = 'Order'
    on conflict (job_id, gid) do update set accepted = excluded.accepted;
end;
$$;
