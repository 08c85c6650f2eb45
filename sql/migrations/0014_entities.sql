-- Entities as data: what each entity exports, which tables of the mirror its export writes, and where each mirrored
-- column comes from in an exported line. The bulk query's selection and the import's column lists are made from these
-- rows (sql/35_entities.sql); adding a column is a row here plus the column, not new PL/pgSQL.

-- An entity: one kind of export. Its root connection and the GraphQL type of the root's objects, and what the root
-- selects besides the mirrored columns (an ids-only export selects only that).
create table bulk_sync.entities (
    entity text primary key,
    position smallint not null unique,  -- the order people read them in
    root text not null,  -- the root connection of its bulk query (QueryRoot.<root>)
    root_type text not null,  -- the GraphQL type of the root's objects, the kind in their ids
    selection text not null default ''  -- root fields selected besides the mirrored columns' (GraphQL)
);

insert into bulk_sync.entities (entity, position, root, root_type, selection) values
('orders', 1, 'orders', 'Order', ''),
('refunds', 2, 'orders', 'Order', ''),
('skus', 3, 'productVariants', 'ProductVariant', ''),
('order_ids', 4, 'orders', 'Order', 'createdAt updatedAt');

-- A table of the mirror (shopify.<name>): the GraphQL type of its objects, and where they come from: the root of an
-- export, a connection of the parent's objects (a line of its own with __parentId), or a list inline in the
-- parent's object (rows keyed by their own id).
create table bulk_sync.mirror_tables (
    name text primary key,
    position smallint not null unique,
    graphql_type text not null unique,
    via text not null check (via in ('root', 'connection', 'list')),
    parent text references bulk_sync.mirror_tables (name),
    field text,  -- the parent type's connection or list field
    parent_column text,  -- the column that holds the parent's id
    version_column text,  -- the column whose newer value wins over an older export's (none: the newest export's)
    check ((via = 'root') = (parent is null)),
    check ((via = 'root') = (field is null) and (via = 'root') = (parent_column is null))
);

insert into bulk_sync.mirror_tables (name, position, graphql_type, via, parent, field, parent_column, version_column)
values
('orders', 1, 'Order', 'root', null, null, null, 'updated_at'),
('order_line_items', 2, 'LineItem', 'connection', 'orders', 'lineItems', 'order_id', null),
('refunds', 3, 'Refund', 'list', 'orders', 'refunds', 'order_id', 'order_updated_at'),
('skus', 4, 'ProductVariant', 'root', null, null, null, 'updated_at');

-- The tables an export of each entity writes.
create table bulk_sync.entity_tables (
    entity text not null references bulk_sync.entities (entity),
    table_name text not null references bulk_sync.mirror_tables (name),
    primary key (entity, table_name)
);

insert into bulk_sync.entity_tables (entity, table_name) values
('orders', 'orders'),
('orders', 'order_line_items'),
('orders', 'refunds'),
('refunds', 'refunds'),
('skus', 'skus');

-- A mirrored column: the JSON paths in its object's exported line (dotted; the first present wins; '^' before a
-- path: the parent's object) and its type. id, shop, the parent's id, raw, import_job and imported_at are every
-- table's and not listed.
create table bulk_sync.mirror_columns (
    table_name text not null references bulk_sync.mirror_tables (name),
    column_name text not null,
    position smallint not null,
    paths text[] not null check (cardinality(paths) > 0),
    type text not null check (type in ('text', 'integer', 'numeric', 'boolean', 'timestamptz', 'jsonb')),
    primary key (table_name, column_name),
    unique (table_name, position)
);

insert into bulk_sync.mirror_columns (table_name, column_name, position, paths, type) values
('orders', 'name', 1, '{name}', 'text'),
('orders', 'created_at', 2, '{createdAt}', 'timestamptz'),
('orders', 'updated_at', 3, '{updatedAt}', 'timestamptz'),
('orders', 'processed_at', 4, '{processedAt}', 'timestamptz'),
('orders', 'cancelled_at', 5, '{cancelledAt}', 'timestamptz'),
('orders', 'cancel_reason', 6, '{cancelReason}', 'text'),
('orders', 'currency', 7, '{currencyCode,totalPriceSet.shopMoney.currencyCode}', 'text'),
('orders', 'subtotal_price', 8, '{subtotalPriceSet.shopMoney.amount}', 'numeric'),
('orders', 'current_subtotal_price', 9, '{currentSubtotalPriceSet.shopMoney.amount}', 'numeric'),
('orders', 'total_price', 10, '{totalPriceSet.shopMoney.amount}', 'numeric'),
('orders', 'current_total_price', 11, '{currentTotalPriceSet.shopMoney.amount}', 'numeric'),
('orders', 'total_tax', 12, '{totalTaxSet.shopMoney.amount}', 'numeric'),
('orders', 'total_refunded', 13, '{totalRefundedSet.shopMoney.amount}', 'numeric'),
('orders', 'financial_status', 14, '{displayFinancialStatus}', 'text'),
('orders', 'fulfillment_status', 15, '{displayFulfillmentStatus}', 'text'),
('orders', 'customer_id', 16, '{customer.id}', 'text'),
('orders', 'email', 17, '{email}', 'text'),
('orders', 'note', 18, '{note}', 'text'),
('order_line_items', 'sku', 1, '{sku}', 'text'),
('order_line_items', 'title', 2, '{title}', 'text'),
('order_line_items', 'name', 3, '{name}', 'text'),
('order_line_items', 'quantity', 4, '{quantity}', 'integer'),
('order_line_items', 'current_quantity', 5, '{currentQuantity}', 'integer'),
('order_line_items', 'variant_id', 6, '{variant.id}', 'text'),
('order_line_items', 'product_id', 7, '{product.id}', 'text'),
('order_line_items', 'unit_price', 8, '{originalUnitPriceSet.shopMoney.amount}', 'numeric'),
('order_line_items', 'total_price', 9, '{originalTotalSet.shopMoney.amount}', 'numeric'),
('order_line_items', 'currency', 10, '{originalUnitPriceSet.shopMoney.currencyCode}', 'text'),
('refunds', 'created_at', 1, '{createdAt}', 'timestamptz'),
('refunds', 'note', 2, '{note}', 'text'),
('refunds', 'total_refunded', 3, '{totalRefundedSet.shopMoney.amount}', 'numeric'),
('refunds', 'currency', 4, '{totalRefundedSet.shopMoney.currencyCode}', 'text'),
('refunds', 'order_updated_at', 5, '{^updatedAt}', 'timestamptz'),
('skus', 'sku', 1, '{sku}', 'text'),
('skus', 'title', 2, '{title}', 'text'),
('skus', 'product_id', 3, '{product.id}', 'text'),
('skus', 'product_title', 4, '{product.title}', 'text'),
('skus', 'price', 5, '{price}', 'numeric'),
('skus', 'inventory_quantity', 6, '{inventoryQuantity}', 'integer'),
('skus', 'updated_at', 7, '{updatedAt}', 'timestamptz');

-- Entities are rows now: the checks that listed them become references.
alter table bulk_sync.jobs drop constraint jobs_entity_check;

alter table bulk_sync.jobs add constraint jobs_entity_fkey
foreign key (entity) references bulk_sync.entities (entity);

alter table bulk_sync.import_limits drop constraint import_limits_entity_check;

alter table bulk_sync.import_limits add constraint import_limits_entity_fkey
foreign key (entity) references bulk_sync.entities (entity);
