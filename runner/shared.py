"""What the runner and the simulator both need, and nothing else: the one module both import.

- ConfigError: an error a person can act on, printed as one line, never as a traceback.
- signature: what Shopify sends in X-Shopify-Hmac-SHA256 (the runner checks it, the simulator signs with it)."""

import base64
import hashlib
import hmac


class ConfigError(Exception):
    """A configuration mistake (missing variable, unreachable database, missing token)."""


def signature(secret: bytes, body: bytes) -> str:
    """Base64 of HMAC-SHA256 of the raw body, keyed with the app's client secret."""
    return base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode()
