"""One TLS context for every HTTPS client of the runner. Making one loads the CA bundle (about 35 ms of CPU), which a
new client per download, per shop and per token grant used to pay each time."""

import functools
import ssl

import httpx


@functools.cache
def context() -> ssl.SSLContext:
    """The process's TLS context: httpx's default verification, built once (SSLContext is safe to share)."""
    return httpx.create_ssl_context()
