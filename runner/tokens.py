"""Access tokens, per shop: a legacy custom app's static token, or the OAuth client credentials grant (a token that
expires after about a day: fetched on first need, renewed before it expires and once more on a 401, one renewal at a
time per shop, shared by all of a runner's workers). Tokens and secrets stay in memory: never logged, never in an
error's text."""

import threading
import time
from collections.abc import Callable

import httpx

from runner import log, tls
from runner.shopify_client import Fatal, Transient

MARGIN_SECONDS = 300.0  # renew this long before expiry (a tenth of the lifetime when that is shorter)


class StaticToken:
    """A legacy custom app's token: it does not expire, and a 401 cannot be cured by renewing it."""

    renewable = False

    def __init__(self, token: str) -> None:
        self._token = token

    def get(self) -> str:
        return self._token

    def accepted(self) -> None:
        pass


class ClientCredentials:
    """The client credentials grant of one shop: POST <base>/admin/oauth/access_token."""

    renewable = True

    def __init__(
        self, shop: str, base_url: str, client_id: str, client_secret: str, timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic, on_grant: Callable[[str], None] = lambda why: None,
    ) -> None:  # fmt: skip
        self.shop = shop
        self._on_grant = on_grant  # told why, after each token granted
        self.endpoint = f"{base_url.rstrip('/')}/admin/oauth/access_token"
        self._client_id, self._secret = client_id, client_secret
        self._http = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0), verify=tls.context())
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0
        self._rejections = 0
        self.grants = 0

    def close(self) -> None:
        self._http.close()

    def get(self) -> str:
        """The current token, granted first when there is none or it is about to expire."""
        with self._lock:
            if self._token is None or self._clock() >= self._renew_at:
                self._grant("expiring" if self._token else "first use")
            return self._token

    def renew(self, rejected: str) -> str:
        """A new token after Shopify refused `rejected` with a 401 (unless another worker renewed it meanwhile)."""
        with self._lock:
            if self._token is None or self._token == rejected:
                self._grant("HTTP 401")
            return self._token

    def rejected_after_renewal(self) -> int:
        """Counts a 401 that came right after a new token; returns how many in a row."""
        with self._lock:
            self._rejections += 1
            return self._rejections

    def accepted(self) -> None:
        with self._lock:
            self._rejections = 0

    def _grant(self, why: str) -> None:
        form = {"grant_type": "client_credentials", "client_id": self._client_id, "client_secret": self._secret}
        try:
            response = self._http.post(self.endpoint, data=form, headers={"Accept": "application/json"})
        except httpx.TimeoutException:
            raise Transient("Shopify's token endpoint did not answer in time") from None
        except httpx.TransportError as exc:
            raise Transient(f"connection to Shopify's token endpoint failed ({type(exc).__name__})") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise Transient(f"HTTP {response.status_code} from Shopify's token endpoint")
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        token = body.get("access_token")
        if response.status_code != 200 or not isinstance(token, str) or not token:
            raise Fatal(self._refusal(response.status_code, body))
        try:
            lifetime = max(1.0, float(body.get("expires_in") or 86_399))
        except (TypeError, ValueError):
            lifetime = 86_399.0
        self._token = token
        self._renew_at = self._clock() + lifetime - min(MARGIN_SECONDS, lifetime / 10)
        self.grants += 1
        self._on_grant(why)
        log.step(shop=self.shop, phase="token", outcome="granted", detail=f"{why}; expires in {lifetime:.0f} s")

    def _refusal(self, status: int, body: dict) -> str:
        error = str(body.get("error") or f"HTTP {status}")
        description = str(body.get("error_description") or "")
        text = f"Shopify refused the client credentials grant: {error}" + (f" ({description})" if description else "")
        if error == "invalid_client":
            text += (
                f"; check SHOP_{self.shop}_CLIENT_ID/SECRET (or SHOPIFY_CLIENT_ID/SECRET) and that the app is "
                "installed on the shop"
            )
        return text.replace(self._secret, "<secret>")[:1000]
