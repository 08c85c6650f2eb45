"""bulk-sync: Shopify bulk exports into PostgreSQL, driven by a job pipeline that lives in the database."""

__version__ = "0.3.0.dev0"
