-- A shop is one myshopify domain: two codes on one domain exported the shop twice, its rows (keyed by GID) flipped
-- between the codes, and webhooks, which find their shop by domain, failed. A database that has such shops stops
-- here with one line naming them, and nothing changes.
do $$
declare
    v_shared text;
begin
    select string_agg(format('shops %s share domain %s', d.codes, d.domain), '; ') into v_shared
    from (
        select domain, string_agg(code, ' and ' order by code) as codes
        from bulk_sync.shops
        group by domain
        having count(*) > 1
    ) as d;
    if v_shared is not null then
        raise exception '%: a domain is one shop; point each code at its own shop''s domain '
            '(select bulk_sync.add_shop(code, domain) in the release you run now) and migrate again', v_shared
            using errcode = 'BS012';
    end if;
end;
$$;

alter table bulk_sync.shops add constraint shops_domain_key unique (domain);

-- A shop being removed (bulk_sync.remove_shop): paused, its jobs canceled, and deleted once every cancel of its
-- Shopify operations was handed to a runner; whether its rows in shopify.* go with it.
alter table bulk_sync.shops add column removal text check (removal in ('keep data', 'delete data'));
