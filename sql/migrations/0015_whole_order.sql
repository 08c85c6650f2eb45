-- The whole order: what a sales report per shop and day needs. The order's tags, channel, test flag, presentment
-- currency, discounts, shipping and the presentment amounts; its tax lines and transactions, its shipping line, and
-- per line item its discount allocations and tax lines. Rows of lists without ids of their own are keyed by their
-- parent and their position in its list.
alter table bulk_sync.mirror_tables add column keyed_by text not null default 'id' check (keyed_by in ('id', 'position'));

alter table bulk_sync.mirror_tables drop constraint mirror_tables_via_check;

-- lists of one type under several parents (TaxLine under orders and line items)
alter table bulk_sync.mirror_tables drop constraint mirror_tables_graphql_type_key;

-- an inline object is a list of at most one (Order.shippingLine)
alter table bulk_sync.mirror_tables add constraint mirror_tables_via_check
check (via in ('root', 'connection', 'list', 'object'));

alter table bulk_sync.mirror_columns drop constraint mirror_columns_type_check;

alter table bulk_sync.mirror_columns add constraint mirror_columns_type_check
check (type in ('text', 'text[]', 'integer', 'numeric', 'boolean', 'timestamptz', 'jsonb'));

alter table shopify.orders
add column tags text[],
add column source_name text,
add column test boolean,
add column presentment_currency text,
add column subtotal_price_presentment numeric,
add column total_price_presentment numeric,
add column total_tax_presentment numeric,
add column total_discounts numeric,
add column total_discounts_presentment numeric,
add column total_shipping numeric,
add column total_shipping_presentment numeric,
add column shipping_country text,
add column shipping_province text,
add column shipping_zip text,
add column discount_codes text[];

alter table shopify.order_line_items
add column discounted_total numeric,
add column total_discount numeric,
add column unit_price_presentment numeric;

create table shopify.order_tax_lines (
    order_id text not null references shopify.orders (id) on delete cascade,
    position integer not null,
    shop text not null,
    title text,
    rate numeric,
    price numeric,
    price_presentment numeric,
    raw jsonb not null,
    import_job bigint not null,
    imported_at timestamptz not null default now(),
    primary key (order_id, position)
);

create table shopify.order_transactions (
    id text primary key check (id like 'gid://shopify/OrderTransaction/%'),
    shop text not null,
    order_id text not null references shopify.orders (id) on delete cascade,
    kind text,
    status text,
    gateway text,
    amount numeric,
    currency text,
    amount_presentment numeric,
    presentment_currency text,
    processed_at timestamptz,
    parent_id text,
    test boolean,
    raw jsonb not null,
    import_job bigint not null,
    imported_at timestamptz not null default now()
);

create index order_transactions_order on shopify.order_transactions (order_id);

create table shopify.order_shipping_lines (
    order_id text not null references shopify.orders (id) on delete cascade,
    position integer not null,
    shop text not null,
    title text,
    code text,
    source text,
    price numeric,
    price_presentment numeric,
    discounted_price numeric,
    discounted_price_presentment numeric,
    raw jsonb not null,
    import_job bigint not null,
    imported_at timestamptz not null default now(),
    primary key (order_id, position)
);

create table shopify.order_line_discount_allocations (
    line_item_id text not null references shopify.order_line_items (id) on delete cascade,
    position integer not null,
    shop text not null,
    amount numeric,
    amount_presentment numeric,
    currency text,
    discount_index integer,
    allocation_method text,
    target_type text,
    raw jsonb not null,
    import_job bigint not null,
    imported_at timestamptz not null default now(),
    primary key (line_item_id, position)
);

create table shopify.order_line_tax_lines (
    line_item_id text not null references shopify.order_line_items (id) on delete cascade,
    position integer not null,
    shop text not null,
    title text,
    rate numeric,
    price numeric,
    price_presentment numeric,
    raw jsonb not null,
    import_job bigint not null,
    imported_at timestamptz not null default now(),
    primary key (line_item_id, position)
);

insert into bulk_sync.mirror_tables (
    name, position, graphql_type, via, parent, field, parent_column, version_column, keyed_by
) values
('order_tax_lines', 5, 'TaxLine', 'list', 'orders', 'taxLines', 'order_id', null, 'position'),
('order_transactions', 6, 'OrderTransaction', 'list', 'orders', 'transactions', 'order_id', null, 'id'),
('order_shipping_lines', 7, 'ShippingLine', 'object', 'orders', 'shippingLine', 'order_id', null, 'position'),
(
    'order_line_discount_allocations', 8, 'DiscountAllocation', 'list', 'order_line_items', 'discountAllocations',
    'line_item_id', null, 'position'
),
('order_line_tax_lines', 9, 'TaxLine', 'list', 'order_line_items', 'taxLines', 'line_item_id', null, 'position');

insert into bulk_sync.entity_tables (entity, table_name) values
('orders', 'order_tax_lines'),
('orders', 'order_transactions'),
('orders', 'order_shipping_lines'),
('orders', 'order_line_discount_allocations'),
('orders', 'order_line_tax_lines');

insert into bulk_sync.mirror_columns (table_name, column_name, position, paths, type) values
('orders', 'tags', 19, '{tags}', 'text[]'),
('orders', 'source_name', 20, '{sourceName}', 'text'),
('orders', 'test', 21, '{test}', 'boolean'),
('orders', 'presentment_currency', 22, '{presentmentCurrencyCode}', 'text'),
('orders', 'subtotal_price_presentment', 23, '{subtotalPriceSet.presentmentMoney.amount}', 'numeric'),
('orders', 'total_price_presentment', 24, '{totalPriceSet.presentmentMoney.amount}', 'numeric'),
('orders', 'total_tax_presentment', 25, '{totalTaxSet.presentmentMoney.amount}', 'numeric'),
('orders', 'total_discounts', 26, '{totalDiscountsSet.shopMoney.amount}', 'numeric'),
('orders', 'total_discounts_presentment', 27, '{totalDiscountsSet.presentmentMoney.amount}', 'numeric'),
('orders', 'total_shipping', 28, '{totalShippingPriceSet.shopMoney.amount}', 'numeric'),
('orders', 'total_shipping_presentment', 29, '{totalShippingPriceSet.presentmentMoney.amount}', 'numeric'),
('orders', 'shipping_country', 30, '{shippingAddress.countryCodeV2}', 'text'),
('orders', 'shipping_province', 31, '{shippingAddress.provinceCode}', 'text'),
('orders', 'shipping_zip', 32, '{shippingAddress.zip}', 'text'),
('orders', 'discount_codes', 33, '{discountCodes}', 'text[]'),
('order_line_items', 'discounted_total', 11, '{discountedTotalSet.shopMoney.amount}', 'numeric'),
('order_line_items', 'total_discount', 12, '{totalDiscountSet.shopMoney.amount}', 'numeric'),
('order_line_items', 'unit_price_presentment', 13, '{originalUnitPriceSet.presentmentMoney.amount}', 'numeric'),
('order_tax_lines', 'title', 1, '{title}', 'text'),
('order_tax_lines', 'rate', 2, '{rate}', 'numeric'),
('order_tax_lines', 'price', 3, '{priceSet.shopMoney.amount}', 'numeric'),
('order_tax_lines', 'price_presentment', 4, '{priceSet.presentmentMoney.amount}', 'numeric'),
('order_transactions', 'kind', 1, '{kind}', 'text'),
('order_transactions', 'status', 2, '{status}', 'text'),
('order_transactions', 'gateway', 3, '{gateway}', 'text'),
('order_transactions', 'amount', 4, '{amountSet.shopMoney.amount}', 'numeric'),
('order_transactions', 'currency', 5, '{amountSet.shopMoney.currencyCode}', 'text'),
('order_transactions', 'amount_presentment', 6, '{amountSet.presentmentMoney.amount}', 'numeric'),
('order_transactions', 'presentment_currency', 7, '{amountSet.presentmentMoney.currencyCode}', 'text'),
('order_transactions', 'processed_at', 8, '{processedAt}', 'timestamptz'),
('order_transactions', 'parent_id', 9, '{parentTransaction.id}', 'text'),
('order_transactions', 'test', 10, '{test}', 'boolean'),
('order_shipping_lines', 'title', 1, '{title}', 'text'),
('order_shipping_lines', 'code', 2, '{code}', 'text'),
('order_shipping_lines', 'source', 3, '{source}', 'text'),
('order_shipping_lines', 'price', 4, '{originalPriceSet.shopMoney.amount}', 'numeric'),
('order_shipping_lines', 'price_presentment', 5, '{originalPriceSet.presentmentMoney.amount}', 'numeric'),
('order_shipping_lines', 'discounted_price', 6, '{discountedPriceSet.shopMoney.amount}', 'numeric'),
('order_shipping_lines', 'discounted_price_presentment', 7, '{discountedPriceSet.presentmentMoney.amount}', 'numeric'),
('order_line_discount_allocations', 'amount', 1, '{allocatedAmountSet.shopMoney.amount}', 'numeric'),
('order_line_discount_allocations', 'amount_presentment', 2, '{allocatedAmountSet.presentmentMoney.amount}', 'numeric'),
('order_line_discount_allocations', 'currency', 3, '{allocatedAmountSet.shopMoney.currencyCode}', 'text'),
('order_line_discount_allocations', 'discount_index', 4, '{discountApplication.index}', 'integer'),
('order_line_discount_allocations', 'allocation_method', 5, '{discountApplication.allocationMethod}', 'text'),
('order_line_discount_allocations', 'target_type', 6, '{discountApplication.targetType}', 'text'),
('order_line_tax_lines', 'title', 1, '{title}', 'text'),
('order_line_tax_lines', 'rate', 2, '{rate}', 'numeric'),
('order_line_tax_lines', 'price', 3, '{priceSet.shopMoney.amount}', 'numeric'),
('order_line_tax_lines', 'price_presentment', 4, '{priceSet.presentmentMoney.amount}', 'numeric');
