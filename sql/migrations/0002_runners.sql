-- Runners as the claim sees them: each worker, the shops whose Shopify calls it can make (null: every shop) and
-- when it last claimed. bulk_sync.stuck says when no recent runner can serve a shop.
create table bulk_sync.runners (
    worker text primary key,
    shops text[],
    seen_at timestamptz not null default now()
);

create index runners_seen on bulk_sync.runners (seen_at);
