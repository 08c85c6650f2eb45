"""Runner configuration: DATABASE_URL from the environment, shops from bulk_sync.shops, and per shop its token
(SHOP_<CODE>_TOKEN, never stored) and optional base URL (SHOP_<CODE>_URL, default https://<domain>)."""

import os
from dataclasses import dataclass, field

import psycopg

from runner.errors import ConfigError


@dataclass(frozen=True)
class Shop:
    code: str
    base_url: str
    api_version: str
    token: str = field(repr=False)


def load_shops(conn: psycopg.Connection, environ: dict[str, str] | None = None) -> dict[str, Shop]:
    """Every active shop with its credentials; one ConfigError naming every missing token."""
    env = os.environ if environ is None else environ
    rows = conn.execute("select code, domain, api_version from bulk_sync.shops where active order by code").fetchall()
    if not rows:
        raise ConfigError("no active shop: register one with select bulk_sync.add_shop('DE', 'my-shop.myshopify.com');")
    missing = [f"SHOP_{code}_TOKEN" for code, _, _ in rows if not env.get(f"SHOP_{code}_TOKEN")]
    if missing:
        raise ConfigError(f"missing access token for an active shop: set {', '.join(missing)}")
    return {
        code: Shop(code, env.get(f"SHOP_{code}_URL") or f"https://{domain}", version, env[f"SHOP_{code}_TOKEN"])
        for code, domain, version in rows
    }
