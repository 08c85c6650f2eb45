"""One structured line per step (logfmt, or JSON for platforms that parse it), scrubbed of URL query strings and
Shopify tokens whatever the caller passes."""

import json
import re
import sys
import threading
import time

_SECRET = re.compile(r"(https?://[^\s?#\"']*)\?[^\s\"']*|shp[a-z]{2}_[A-Za-z0-9]+")
_lock = threading.Lock()
_sink = sys.stderr
_json = False


def send_to(stream) -> None:
    """Where step lines go (None: back to stderr)."""
    global _sink
    _sink = stream or sys.stderr


def use_format(name: str) -> None:
    """logfmt (key=value ...) or json (one object per line)."""
    global _json
    _json = name == "json"


def redact(text: str) -> str:
    return _SECRET.sub(lambda m: f"{m.group(1)}?<redacted>" if m.group(1) else "<redacted-token>", text)


def _value(value: object) -> str:
    text = redact(str(value))
    return json.dumps(text) if not text or any(c in text for c in ' "=\\') else text


def _json_value(value: object) -> object:
    return value if value is None or isinstance(value, int | float) else redact(str(value))


def step(**fields: object) -> None:
    """Writes `ts=... key=value ...` (or the same as a JSON object) to stderr."""
    fields = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S"), **fields}
    if _json:
        line = json.dumps({k: _json_value(v) for k, v in fields.items()}, ensure_ascii=False)
    else:
        line = " ".join(f"{k}={_value(v)}" for k, v in fields.items())
    with _lock:
        print(line, file=_sink, flush=True)
