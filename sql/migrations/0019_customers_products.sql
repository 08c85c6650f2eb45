-- Customers and products as entities of their own, rows of the entity tables like the others: customers exported by
-- windows of updated_at and kept current by incremental sync, products as a snapshot like SKUs (what a complete one
-- lacks is marked deleted).
create table shopify.customers (
    id text primary key check (id like 'gid://shopify/Customer/%'),
    shop text not null,
    created_at timestamptz,
    updated_at timestamptz,
    state text,
    tags text[],
    number_of_orders bigint,
    amount_spent numeric,
    currency text,
    email_marketing_state text,
    country text,
    province text,
    zip text,
    email text,
    phone text,
    first_name text,
    last_name text,
    address1 text,
    address2 text,
    city text,
    deleted_at timestamptz,
    raw jsonb not null,
    import_job bigint not null,
    imported_at timestamptz not null default now()
);

create index customers_shop_updated on shopify.customers (shop, updated_at);

create table shopify.products (
    id text primary key check (id like 'gid://shopify/Product/%'),
    shop text not null,
    title text,
    handle text,
    product_type text,
    vendor text,
    status text,
    tags text[],
    created_at timestamptz,
    updated_at timestamptz,
    published_at timestamptz,
    deleted_at timestamptz,
    raw jsonb not null,
    import_job bigint not null,
    imported_at timestamptz not null default now()
);

create index products_shop_handle on shopify.products (shop, handle);

create index skus_product on shopify.skus (product_id);

insert into bulk_sync.entities (entity, position, root, root_type, selection, backfill_field, snapshot, incremental)
values
('customers', 5, 'customers', 'Customer', '', 'updated_at', false, true),
('products', 6, 'products', 'Product', '', null, true, false);

insert into bulk_sync.mirror_tables (name, position, graphql_type, via, parent, field, parent_column, version_column)
values
('customers', 11, 'Customer', 'root', null, null, null, 'updated_at'),
('products', 12, 'Product', 'root', null, null, null, 'updated_at');

insert into bulk_sync.entity_tables (entity, table_name) values
('customers', 'customers'),
('products', 'products');

insert into bulk_sync.mirror_columns (table_name, column_name, position, paths, type) values
('customers', 'created_at', 1, '{createdAt}', 'timestamptz'),
('customers', 'updated_at', 2, '{updatedAt}', 'timestamptz'),
('customers', 'state', 3, '{state}', 'text'),
('customers', 'tags', 4, '{tags}', 'text[]'),
('customers', 'number_of_orders', 5, '{numberOfOrders}', 'integer'),
('customers', 'amount_spent', 6, '{amountSpent.amount}', 'numeric'),
('customers', 'currency', 7, '{amountSpent.currencyCode}', 'text'),
('customers', 'email_marketing_state', 8, '{defaultEmailAddress.marketingState}', 'text'),
('customers', 'country', 9, '{defaultAddress.countryCodeV2}', 'text'),
('customers', 'province', 10, '{defaultAddress.provinceCode}', 'text'),
('customers', 'zip', 11, '{defaultAddress.zip}', 'text'),
('customers', 'email', 12, '{defaultEmailAddress.emailAddress}', 'text'),
('customers', 'phone', 13, '{defaultPhoneNumber.phoneNumber}', 'text'),
('customers', 'first_name', 14, '{firstName}', 'text'),
('customers', 'last_name', 15, '{lastName}', 'text'),
('customers', 'address1', 16, '{defaultAddress.address1}', 'text'),
('customers', 'address2', 17, '{defaultAddress.address2}', 'text'),
('customers', 'city', 18, '{defaultAddress.city}', 'text'),
('products', 'title', 1, '{title}', 'text'),
('products', 'handle', 2, '{handle}', 'text'),
('products', 'product_type', 3, '{productType}', 'text'),
('products', 'vendor', 4, '{vendor}', 'text'),
('products', 'status', 5, '{status}', 'text'),
('products', 'tags', 6, '{tags}', 'text[]'),
('products', 'created_at', 7, '{createdAt}', 'timestamptz'),
('products', 'updated_at', 8, '{updatedAt}', 'timestamptz'),
('products', 'published_at', 9, '{publishedAt}', 'timestamptz');

-- an import slot each, and the overall cap the sum of the entities' as before (no entity waits on another)
insert into bulk_sync.import_limits (entity, max_concurrent_imports) values
('customers', 1),
('products', 1);

alter table bulk_sync.settings alter column max_concurrent_imports set default 7;

update bulk_sync.settings set max_concurrent_imports = 7
where max_concurrent_imports = 5;
