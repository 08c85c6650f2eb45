"""Access to the simulated shops as Shopify grants it: a shop's static token (a legacy custom app's, never expiring)
and the OAuth client credentials grant (POST /admin/oauth/access_token with the app's client id and secret),
answering a token that expires after `token_lifetime` seconds. A new grant does not revoke earlier tokens."""

import secrets
import threading
from collections import Counter
from dataclasses import dataclass

from runner.simulator.clock import Clock

INVALID_TOKEN = {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}
INVALID_CLIENT = {
    "error": "invalid_client",
    "error_description": "Client authentication failed due to unknown client, no client authentication included, or "
    "unsupported authentication method.",
}
SCOPES = "read_orders,read_all_orders,read_products"


@dataclass(frozen=True)
class App:
    """A custom app's client credentials, installed on a shop."""

    client_id: str
    client_secret: str


class Auth:
    def __init__(
        self, static: dict[str, str | None], apps: dict[str, App], clock: Clock, token_lifetime: float = 86_399
    ) -> None:
        self.static = static  # shop code -> its static token, or None
        self.apps = apps  # shop code -> the app installed on it, or absent
        self.clock = clock
        self.token_lifetime = token_lifetime
        self.issued: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()  # Admin API requests refused for an unknown or expired token
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (shop, expires at)
        self._lock = threading.Lock()

    def grant(self, shop: str, form: dict[str, str]) -> tuple[int, dict]:
        """The client credentials grant: (HTTP status, body) as Shopify answers it."""
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type", "error_description": "The authorization grant type is "
                         "not supported by the authorization server."}  # fmt: skip
        app = self.apps.get(shop)
        if app is None or form.get("client_id") != app.client_id or form.get("client_secret") != app.client_secret:
            return 400, INVALID_CLIENT
        token = f"shpat_{secrets.token_hex(16)}"
        lifetime = int(self.token_lifetime)
        with self._lock:
            self._tokens[token] = (shop, self.clock() + lifetime)
            self.issued[shop] += 1
        return 200, {"access_token": token, "scope": SCOPES, "expires_in": lifetime}

    def accepts(self, shop: str, token: str | None) -> bool:
        """True for the shop's static token or an unexpired token granted for it; counts refusals."""
        if token and token == self.static.get(shop):
            return True
        with self._lock:
            granted = self._tokens.get(token or "")
            if granted and granted[0] == shop and self.clock() < granted[1]:
                return True
            self.rejected[shop] += 1
        return False

    def webhook_secret(self, shop: str, default: str) -> str:
        """What signs the shop's webhooks: the client secret of its app, else the configured secret."""
        app = self.apps.get(shop)
        return app.client_secret if app else default
