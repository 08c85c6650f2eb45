"""Runner configuration, from the environment only (never stored): DATABASE_URL, and per shop its credentials and
optional base URL. A shop's credentials are its static token SHOP_<CODE>_TOKEN (a legacy custom app's; it wins),
else its app's client credentials SHOP_<CODE>_CLIENT_ID / SHOP_<CODE>_CLIENT_SECRET, else the one app's
SHOPIFY_CLIENT_ID / SHOPIFY_CLIENT_SECRET used for every shop. SHOP_<CODE>_URL replaces https://<domain>."""

import re
from dataclasses import dataclass, field

import psycopg

from runner.shared import ConfigError

_PER_SHOP = re.compile(r"^SHOP_([A-Z][A-Z0-9_]{0,15})_(TOKEN|CLIENT_ID|CLIENT_SECRET)$")


@dataclass(frozen=True)
class Credentials:
    token: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)


def credentials(code: str, env: dict[str, str]) -> Credentials | None:
    """The shop's credentials from the environment, or None when it has none."""
    if token := env.get(f"SHOP_{code}_TOKEN"):
        return Credentials(token=token)
    client_id, secret = env.get(f"SHOP_{code}_CLIENT_ID"), env.get(f"SHOP_{code}_CLIENT_SECRET")
    if not (client_id or secret):
        client_id, secret = env.get("SHOPIFY_CLIENT_ID"), env.get("SHOPIFY_CLIENT_SECRET")
    return Credentials(client_id=client_id, client_secret=secret) if client_id and secret else None


def base_url(code: str, domain: str, env: dict[str, str]) -> str:
    return env.get(f"SHOP_{code}_URL") or f"https://{domain}"


def _is_url(text: str) -> bool:
    """An absolute http(s) URL with a host: what a SHOP_<CODE>_URL must be."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or out of range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def webhook_secret(code: str | None, env: dict[str, str]) -> str | None:
    """The secret that signs a shop's webhooks: its app's client secret, else the one app's, else
    SHOPIFY_WEBHOOK_SECRET (a legacy custom app's API secret key)."""
    own = env.get(f"SHOP_{code}_CLIENT_SECRET") if code else None
    return own or env.get("SHOPIFY_CLIENT_SECRET") or env.get("SHOPIFY_WEBHOOK_SECRET") or None


def servable(env: dict[str, str], only: list[str] | None = None) -> list[str] | None:
    """The shops a runner with this environment can serve (limited to `only` when given): every shop (None) when
    one app's credentials are set, else those with credentials of their own."""
    if only is not None:
        return [code for code in only if credentials(code, env)]
    if env.get("SHOPIFY_CLIENT_ID") and env.get("SHOPIFY_CLIENT_SECRET"):
        return None
    return sorted(code for code in _named(env) if credentials(code, env))


def _named(env: dict[str, str]) -> set[str]:
    """The shop codes that some SHOP_<CODE>_TOKEN / _CLIENT_ID / _CLIENT_SECRET names."""
    return {m.group(1) for name in env if (m := _PER_SHOP.match(name))}


def check(env: dict[str, str], conn: psycopg.Connection, only: list[str] | None = None) -> list[str]:
    """The active shops served (all, or those of `only`), after checking the environment: one ConfigError naming
    every half-set pair of client credentials, every unknown shop of `only`, and every served shop without
    credentials."""
    half = sorted(
        f"SHOP_{code}_CLIENT_ID and SHOP_{code}_CLIENT_SECRET"
        for code in _named(env)
        if bool(env.get(f"SHOP_{code}_CLIENT_ID")) != bool(env.get(f"SHOP_{code}_CLIENT_SECRET"))
    )
    if bool(env.get("SHOPIFY_CLIENT_ID")) != bool(env.get("SHOPIFY_CLIENT_SECRET")):
        half.append("SHOPIFY_CLIENT_ID and SHOPIFY_CLIENT_SECRET")
    if half:
        raise ConfigError(f"client credentials come in pairs: set both of {'; '.join(half)}")
    codes = [code for (code,) in conn.execute("select code from bulk_sync.shops where active order by code")]
    if only is not None:
        known = {code for (code,) in conn.execute("select code from bulk_sync.shops")}
        if unknown := [code for code in only if code not in known]:
            raise ConfigError(f"--shops names an unknown shop: {', '.join(unknown)}")
        codes = [code for code in codes if code in only]
    if not codes:
        raise ConfigError("no active shop: register one with select bulk_sync.add_shop('DE', 'my-shop.myshopify.com');")
    urls = {c: env[f"SHOP_{c}_URL"] for c in codes if env.get(f"SHOP_{c}_URL")}
    bad = [f"SHOP_{c}_URL={url!r}" for c, url in urls.items() if not _is_url(url)]
    if bad:
        raise ConfigError(f"not an http(s) URL: {', '.join(bad)} (e.g. https://my-shop.myshopify.com)")
    missing = [code for code in codes if credentials(code, env) is None]
    if missing:
        names = ", ".join(f"SHOP_{c}_TOKEN or SHOP_{c}_CLIENT_ID and SHOP_{c}_CLIENT_SECRET" for c in missing)
        raise ConfigError(
            f"no credentials for an active shop: set {names} (or SHOPIFY_CLIENT_ID and SHOPIFY_CLIENT_SECRET for every "
            "shop)"
        )
    return codes
