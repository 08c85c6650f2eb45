-- What people and dashboards read: jobs by status, progress, freshness and what is stuck.

-- Jobs per shop, entity and status.
create or replace view bulk_sync.status as
select
    shop,
    entity,
    status,
    count(*) as jobs,
    min(next_attempt_at) filter (where status = 'queued') as next_attempt_at,
    max(updated_at) as last_change
from bulk_sync.jobs
group by shop, entity, status;

-- Progress per shop and entity; percent weighs jobs by the time their windows span (merged jobs cover many days);
-- synced_through and behind: the freshness of the shop's orders once incremental sync runs.
create or replace view bulk_sync.progress as
select
    j.shop,
    j.entity,
    count(*) as total,
    count(*) filter (where j.status = 'completed') as completed,
    count(*) filter (where j.status = 'failed') as failed,
    count(*) filter (where j.status = 'queued') as queued,
    count(*) filter (where j.status <> 'queued' and not j.status = any(bulk_sync.states('terminal'))) as active,
    round(
        100.0
        * coalesce(sum(extract(epoch from coalesce(j.window_end - j.window_start, interval '1 day'))) filter (
            where j.status = 'completed'
        ), 0)
        / sum(extract(epoch from coalesce(j.window_end - j.window_start, interval '1 day'))), 1
    ) as percent,
    coalesce(sum(j.lines_processed - j.lines_rejected), 0) as rows_imported,
    coalesce(sum(j.lines_rejected), 0) as rows_rejected,
    coalesce(sum(j.bytes_copied), 0) as bytes_copied,
    max(j.updated_at) as last_change,
    max(w.watermark) as synced_through,
    date_trunc('second', now() - max(w.watermark)) as behind,
    -- days of windows queued and completed (a snapshot has none), objects Shopify reported exported so far (the
    -- polls' objectCount), rows written by fetches
    round(coalesce(sum(extract(epoch from j.window_end - j.window_start)), 0) / 86400, 1) as days_total,
    round(
        coalesce(sum(extract(epoch from j.window_end - j.window_start)) filter (where j.status = 'completed'), 0)
        / 86400, 1
    ) as days_done,
    coalesce(sum(j.object_count), 0) as objects_exported,
    coalesce(sum(j.rows_fetched), 0) as rows_fetched
from bulk_sync.jobs as j
left join bulk_sync.watermarks as w on j.shop = w.shop and j.entity = w.entity
where not j.status = any(bulk_sync.states('covers_window', false))
group by j.shop, j.entity;

-- Per shop and entity: how far its data is current (orders: the incremental watermark).
create or replace view bulk_sync.freshness as
select
    s.code as shop,
    w.entity,
    w.watermark as synced_through,
    date_trunc('second', now() - w.watermark) as behind,
    w.updated_at
from bulk_sync.shops as s
inner join bulk_sync.watermarks as w on s.code = w.shop;

-- One row per live job that has not moved for longer than expected, with the likely reason.
create or replace view bulk_sync.stuck as
with settings as (
    select
        make_interval(secs => stuck_after_seconds) as patience,
        make_interval(secs => max_operation_seconds) as max_operation
    from bulk_sync.settings
    where id
),

live as (
    select
        j.*,
        s.active,
        now() - j.updated_at as idle_for,
        exists(
            select from pgmq.q_bulk_sync as q
            where q.msg_id = j.task_msg_id
        ) as has_message
    from bulk_sync.jobs as j
    inner join bulk_sync.shops as s on j.shop = s.code
    where not j.status = any(bulk_sync.states('terminal'))
)

select
    l.id,
    l.shop,
    l.entity,
    l.status,
    l.updated_at as since,
    l.idle_for,
    l.attempts,
    l.last_error,
    case
        when not l.active then 'the shop is paused: select bulk_sync.resume_shop(' || quote_literal(l.shop) || ')'
        when l.lease_expires_at < now()
            then 'the lease of ' || coalesce(l.leased_by, 'a runner')
                || ' expired: the runner vanished (the next claim or tick hands the step out again)'
        when l.status = 'waiting' and now() - l.operation_started_at > st.max_operation / 2
            then 'the Shopify operation has been running for ' || date_trunc('second', now() - l.operation_started_at)
        when l.status = 'queued' then 'due with a free slot, but not dispatched: is a runner or pg_cron running?'
        when l.status = 'copied' then 'an import slot is free, but the import was not dispatched'
        when
            l.lease_expires_at is null and l.has_message and l.status = any(bulk_sync.states('holds_shop_slot'))
            and exists (
                select from bulk_sync.runners as r
                where r.seen_at > now() - interval '5 minutes'
            )
            and not exists (
                select from bulk_sync.runners as r
                where r.seen_at > now() - interval '5 minutes' and (r.shops is null or l.shop = any(r.shops))
            )
            then 'no runner seen in the last 5 minutes has credentials for shop ' || l.shop
                || ' (SHOP_' || l.shop || '_TOKEN, or its client credentials)'
        when l.lease_expires_at is null and l.has_message then 'no runner has taken its task: is a runner running?'
        when l.lease_expires_at is null then 'its task message is gone: bulk_sync.tick() sends it again'
        else 'a runner is working on it (leased by ' || coalesce(l.leased_by, '?') || ')'
    end as reason
from live as l
cross join settings as st
where
    (
        l.idle_for > st.patience
        -- Waiting in line (for a retry time, a shop slot or an import slot) is progress, not being stuck.
        and not (l.status = 'queued' and (l.next_attempt_at > now() or bulk_sync.free_slots(l.shop) = 0))
        and not (l.status = 'copied' and bulk_sync.free_import_slots(l.entity) = 0)
    )
    -- Polled all the time, yet going nowhere.
    or (l.status = 'waiting' and now() - l.operation_started_at > st.max_operation / 2);

-- What the shops hold now: shopify.live_<table> for each table of the mirror (bulk_sync.mirror_tables), without
-- what the shops deleted: a root's rows not marked deleted, a child's rows whose root is not (joined up its parents;
-- a refund whose order the mirror lacks counts as held). Made from the rows, so a table added as data has its view.
do $make$
declare
    v_t record;
begin
    for v_t in
        with recursive up as (
            select t.name, t.name as node, 0 as depth, null::text as joins from bulk_sync.mirror_tables as t
            union all
            select up.name, p.name, up.depth + 1,
                   concat(up.joins, format(' left join shopify.%I as p%s on p%s.id = %s.%I', p.name, up.depth + 1,
                                           up.depth + 1, case when up.depth = 0 then 'c' else 'p' || up.depth end,
                                           c.parent_column))
            from up
            inner join bulk_sync.mirror_tables as c on up.node = c.name
            inner join bulk_sync.mirror_tables as p on c.parent = p.name
        )
        select u.name, coalesce(u.joins, '') as joins,
               case when u.depth = 0 then 'c' else 'p' || u.depth end as root
        from up as u
        inner join bulk_sync.mirror_tables as r on u.node = r.name and r.via = 'root'
    loop
        execute format(
            'create or replace view shopify.%I as select c.* from shopify.%I as c%s where %s.deleted_at is null',
            'live_' || v_t.name, v_t.name, v_t.joins, v_t.root);
    end loop;
end;
$make$;

-- Shopify's sales report per shop and day (the day in the shop's time zone; amounts in the shop's currency), by
-- Shopify's definitions: an order counts on the day it was placed with its gross sales (original price x quantity of
-- its lines), its discounts (the lines' discounts and their shares of the order's), its shipping (after shipping
-- discounts) and the taxes charged; a refund counts on the day it was made with its returns (the refunded lines'
-- subtotals) and the taxes it gave back. net_sales = gross_sales - discounts - returns; total_sales = net_sales +
-- shipping + taxes. Test orders and what the shops deleted are left out.
create or replace view shopify.daily_sales as
with events as (
    select
        o.shop,
        o.created_at as at,
        1 as orders,
        coalesce((
            select sum(li.total_price) from shopify.order_line_items as li
            where li.order_id = o.id
        ), 0) as gross_sales,
        coalesce((
            select sum(a.amount) from shopify.order_line_items as li
            inner join shopify.order_line_discount_allocations as a on li.id = a.line_item_id
            where li.order_id = o.id
        ), 0) as discounts,
        0 as returns,
        coalesce((
            select sum(sl.discounted_price) from shopify.order_shipping_lines as sl
            where sl.order_id = o.id
        ), 0) as shipping,
        coalesce(o.total_tax, 0) as taxes
    from shopify.live_orders as o
    where o.test is not true
    union all
    select
        o.shop,
        r.created_at as at,
        0 as orders,
        0 as gross_sales,
        0 as discounts,
        coalesce(rl.subtotal, 0) as returns,
        0 as shipping,
        -coalesce(rl.total_tax, 0) as taxes
    from shopify.live_refunds as r
    inner join shopify.live_orders as o on r.order_id = o.id
    cross join
        lateral (
            select
                sum(x.subtotal) as subtotal,
                sum(x.total_tax) as total_tax
            from shopify.refund_line_items as x
            where x.refund_id = r.id
        ) as rl
    where o.test is not true
)

select
    e.shop,
    (e.at at time zone s.timezone)::date as day,
    sum(e.orders)::integer as orders,
    sum(e.gross_sales) as gross_sales,
    sum(e.discounts) as discounts,
    sum(e.returns) as returns,
    sum(e.gross_sales) - sum(e.discounts) - sum(e.returns) as net_sales,
    sum(e.shipping) as shipping,
    sum(e.taxes) as taxes,
    sum(e.gross_sales) - sum(e.discounts) - sum(e.returns) + sum(e.shipping) + sum(e.taxes) as total_sales
from events as e
inner join bulk_sync.shops as s on e.shop = s.code
group by e.shop, (e.at at time zone s.timezone)::date;
