"""One structured line per step (logfmt), scrubbed of URL query strings and Shopify tokens whatever the caller
passes."""

import json
import re
import sys
import threading
import time

_SECRET = re.compile(r"(https?://[^\s?#\"']*)\?[^\s\"']*|shp[a-z]{2}_[A-Za-z0-9]+")
_lock = threading.Lock()
_sink = sys.stderr


def send_to(stream) -> None:
    """Where step lines go (None: back to stderr)."""
    global _sink
    _sink = stream or sys.stderr


def redact(text: str) -> str:
    return _SECRET.sub(lambda m: f"{m.group(1)}?<redacted>" if m.group(1) else "<redacted-token>", text)


def _value(value: object) -> str:
    text = redact(str(value))
    return json.dumps(text) if not text or any(c in text for c in ' "=\\') else text


def step(**fields: object) -> None:
    """Writes `ts=... key=value ...` to stderr."""
    line = " ".join(f"{k}={_value(v)}" for k, v in {"ts": time.strftime("%Y-%m-%dT%H:%M:%S"), **fields}.items())
    with _lock:
        print(line, file=_sink, flush=True)
