-- Personal data behind a role: which mirrored columns hold personal data (names, e-mail, phone, addresses, notes) is
-- data too. bulk_sync_reader reads every column but those and raw (which holds all of them); bulk_sync_reader_pii
-- reads everything (sql/90_roles.sql).
alter table bulk_sync.mirror_columns add column personal boolean not null default false;

update bulk_sync.mirror_columns set personal = true
where (table_name, column_name) in (
        ('orders', 'email'), ('orders', 'note'), ('orders', 'shipping_zip'), ('refunds', 'note'),
        ('customers', 'email'), ('customers', 'phone'), ('customers', 'first_name'), ('customers', 'last_name'),
        ('customers', 'address1'), ('customers', 'address2'), ('customers', 'city'), ('customers', 'zip')
    );
