"""The simulator on HTTP: each shop's Admin API, signed export downloads, and /_admin.

POST /<code>/admin/api/<version>/graphql.json     X-Shopify-Access-Token checked (401 on a wrong or expired one)
POST /<code>/admin/oauth/access_token             the client credentials grant (form or JSON body)
POST /admin/api/<version>/graphql.json            Shopify's own paths: the shop is the one whose domain the Host
POST /admin/oauth/access_token                    header names (--domain CODE=HOST), or the only shop served
GET  /<code>/bulk/bulk-<id>[.partial].jsonl?...   signed URL; Range supported; application/jsonl
GET  [/<code>]/admin/api/<version>/shop.json, orders.json, events.json; [/<code>]/admin/oauth/access_scopes.json
                                                  the REST API common clients call (rest.py)
GET  /_admin/stats                                counters per shop and faults injected
GET  /_admin/truth/<code>                         how many rows of each table the ground truth holds (JSON)
GET  /_admin/truth/<code>/<table>                 ground truth rows as JSONL
GET  /_admin/sales/<code>?tz=<zone>               Shopify's sales report per day, from the data's own numbers (JSON)
POST /_admin/faults                               replace the fault rules (JSON)
POST /_admin/shops/<code>/changes                 {"new_orders": n, "refunds": n, "edits": n, "deleted_orders": n,
                                                  "deleted_variants": n, "refunded_lines": n}: live data changes
                                                  (refunded_lines: a new order of n lines, all refunded at once;
                                                  also deleted_customers, redacted_customers, edited_products,
                                                  deleted_products)"""

import json
import re
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from zoneinfo import available_timezones

from runner.simulator import rest
from runner.simulator.api import internal_error
from runner.simulator.auth import INVALID_CLIENT, INVALID_TOKEN
from runner.simulator.faults import FaultError
from runner.simulator.shopify import Shopify
from runner.simulator.truth import TABLES, counts, daily_sales

_GRAPHQL = re.compile(r"^(?:/([a-z0-9_]+))?/admin/api/([0-9]{4}-[0-9]{2}|unstable)/graphql\.json$")
_GRANT = re.compile(r"^(?:/([a-z0-9_]+))?/admin/oauth/access_token$")
_REST = re.compile(
    r"^(?:/([a-z0-9_]+))?/admin/(?:api/(?:[0-9]{4}-[0-9]{2}|unstable)/([a-z_/]+)|(oauth/access_scopes))\.json$"
)
_DOWNLOAD = re.compile(r"^/([a-z0-9_]+)/bulk/bulk-[0-9]+(\.partial)?\.jsonl$")
_CHUNK = 64 * 1024


class _Handler(BaseHTTPRequestHandler):
    server: "SimulatorServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature of the base class
        return

    # -- plumbing ---------------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str = "application/json", headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: object, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _reset(self) -> None:
        """Closes the connection with a TCP reset, as a failing load balancer would."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _base_url(self) -> str:
        """Where the client reached the simulator, for the URLs it hands out (export URLs): --public-url, else what a
        TLS front says it was asked (X-Forwarded-Proto, X-Forwarded-Host: their first values), else http and Host."""
        if self.server.public_url:
            return self.server.public_url
        host, port = self.server.server_address[:2]
        proto = (self.headers.get("X-Forwarded-Proto") or "http").split(",")[0].strip().lower()
        proto = proto if proto in ("http", "https") else "http"
        forwarded = (self.headers.get("X-Forwarded-Host") or "").split(",")[0].strip()
        return f"{proto}://{forwarded or self.headers.get('Host') or f'{host}:{port}'}"

    # -- routes -----------------------------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        path = urlsplit(self.path).path
        sim = self.server.shopify
        if match := _GRAPHQL.match(path):
            code = self._shop(match.group(1))
            body = self._body()
            if code not in sim.shops:
                return self._json(404, {"errors": "Not Found"})
            if not sim.auth.accepts(code, self.headers.get("X-Shopify-Access-Token")):
                return self._json(401, INVALID_TOKEN)
            if sim.faults.hit(code, "graphql_reset"):
                return self._reset()
            if sim.faults.hit(code, "graphql_5xx"):
                return self._json(503, {"errors": "Service Unavailable"})
            if sim.faults.hit(code, "graphql_internal"):
                return self._json(200, {"errors": [internal_error()]})
            try:
                request = json.loads(body or b"{}")
            except json.JSONDecodeError:
                return self._json(400, {"errors": "Bad Request: invalid JSON"})
            status, response, headers = sim.graphql(code, match.group(2), request, self._base_url())
            if headers.pop("X-Simulator-Reset", None):
                return self._reset()  # the operation was made; its answer is lost on the way
            return self._json(status, response, headers)
        if match := _GRANT.match(path):
            return self._grant(self._shop(match.group(1)))
        if path == "/_admin/faults":
            try:
                sim.faults.replace(json.loads(self._body() or b"{}"))
            except (FaultError, json.JSONDecodeError, AttributeError) as exc:
                return self._json(400, {"error": str(exc)})
            return self._json(200, {"ok": True})
        if match := re.match(r"^/_admin/shops/([a-z0-9_]+)/changes$", path):
            code = match.group(1).upper()
            if code not in sim.shops:
                return self._json(404, {"error": f"unknown shop {code}"})
            spec = json.loads(self._body() or b"{}")
            kinds = ("new_orders", "refunds", "edits", "deleted_orders", "deleted_variants", "refunded_lines",
                     "deleted_customers", "redacted_customers", "edited_products", "deleted_products")  # fmt: skip
            counts = {k: int(spec.get(k, 0)) for k in kinds}
            return self._json(200, sim.change(code, **counts))
        return self._json(404, {"errors": "Not Found"})

    def _shop(self, prefix: str | None) -> str:
        """The shop a request is for: its path prefix, else its Host header (an unknown one: "" and a 404)."""
        if prefix is not None:
            return prefix.upper()
        return self.server.shopify.shop_for_host(self.headers.get("Host") or "") or ""

    def _grant(self, code: str) -> None:
        sim = self.server.shopify
        body = self._body()
        if code not in sim.shops:
            return self._json(404, {"errors": "Not Found"})
        if sim.faults.hit(code, "grant_5xx"):
            return self._json(503, {"errors": "Service Unavailable"})
        if sim.faults.hit(code, "grant_refused"):
            return self._json(400, INVALID_CLIENT)
        if (self.headers.get("Content-Type") or "").startswith("application/json"):
            try:
                form = {k: str(v) for k, v in json.loads(body or b"{}").items()}
            except (json.JSONDecodeError, AttributeError):
                return self._json(400, {"error": "invalid_request", "error_description": "malformed JSON body"})
        else:
            form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
        status, answer = sim.auth.grant(code, form)
        return self._json(status, answer)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        sim = self.server.shopify
        if url.path == "/_admin/stats":
            return self._json(200, sim.stats())
        if match := re.match(r"^/_admin/truth/([a-z0-9_]+)$", url.path):
            code = match.group(1).upper()
            if code not in sim.shops:
                return self._json(404, {"error": "unknown shop"})
            return self._json(200, counts(sim.shops[code]))
        if match := re.match(r"^/_admin/truth/([a-z0-9_]+)/([a-z_]+)$", url.path):
            code, table = match.group(1).upper(), match.group(2)
            if code not in sim.shops or table not in TABLES:
                return self._json(404, {"error": "unknown shop or table"})
            return self._stream_lines(json.dumps(row) + "\n" for row in sim.truth(code, table))
        if match := re.match(r"^/_admin/sales/([a-z0-9_]+)$", url.path):
            code, zone = match.group(1).upper(), (parse_qs(url.query).get("tz") or ["UTC"])[0]
            if code not in sim.shops or zone not in available_timezones():
                return self._json(404, {"error": "unknown shop or time zone"})
            return self._json(200, daily_sales(sim.shops[code], zone))
        if match := _DOWNLOAD.match(url.path):
            return self._download(match.group(1).upper(), url)
        if match := _REST.match(url.path):
            return self._rest(self._shop(match.group(1)), match.group(2) or match.group(3), url)
        return self._json(404, {"errors": "Not Found"})

    def _rest(self, code: str, resource: str, url) -> None:
        sim = self.server.shopify
        if code not in sim.shops:
            return self._json(404, {"errors": "Not Found"})
        if not sim.auth.accepts(code, self.headers.get("X-Shopify-Access-Token")):
            return self._json(401, INVALID_TOKEN)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        base = self._base_url() + url.path.removesuffix(".json")
        status, body, headers = rest.answer(sim, code, resource, params, base)
        return self._json(status, body, headers)

    def _stream_lines(self, lines) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/jsonl")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        buffer = []
        size = 0
        for line in lines:
            buffer.append(line.encode())
            size += len(buffer[-1])
            if size >= _CHUNK:
                self._chunk(b"".join(buffer))
                buffer, size = [], 0
        if buffer:
            self._chunk(b"".join(buffer))
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _download(self, code: str, url) -> None:
        sim = self.server.shopify
        query = parse_qs(url.query)
        status, reason, result = sim.download(url.path, *(query.get(k, [None])[0] for k in ("Expires", "Signature")))
        if status != 200:
            return self._send(status, result, "application/xml")
        if sim.faults.hit(code, "download_reset"):
            return self._reset()
        if sim.faults.hit(code, "download_5xx"):
            return self._send(503, b"Service Unavailable", "text/plain")
        op, size = result
        start, end = 0, size - 1
        if (rng := re.match(r"^bytes=(\d+)-(\d*)$", self.headers.get("Range") or "")) and size:
            start, end = int(rng.group(1)), min(int(rng.group(2) or size - 1), size - 1)
            if start > end:
                return self._send(416, b"", "application/jsonl", {"Content-Range": f"bytes */{size}"})
        cut = sim.faults.hit(code, "download_cut")
        self.send_response(206 if start or end != size - 1 else 200)
        self.send_header("Content-Type", "application/jsonl")
        self.send_header("Content-Length", str(end - start + 1))
        if start or end != size - 1:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        remaining = (end - start + 1) // 2 if cut else end - start + 1
        rate, began, sent = sim.config.timing.download_rate, time.monotonic(), 0
        with op.path.open("rb") as src:
            src.seek(start)
            while remaining > 0:
                data = src.read(min(_CHUNK, remaining))
                if not data:
                    break
                self.wfile.write(data)
                remaining -= len(data)
                sent += len(data)
                if rate > 0:  # paced like a download over a link of this many bytes a second
                    time.sleep(max(0.0, began + sent / rate - time.monotonic()))
        if cut:
            self._reset()


class SimulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's listen backlog is 5: many runner threads connecting at once overflowed it, and each dropped
    # connection attempt waited for TCP's retransmission (1 s, then 3 s) before it was served
    request_queue_size = 128

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up (killed runners, injected resets) are routine here, not errors to print."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def __init__(
        self, shopify: Shopify, host: str = "127.0.0.1", port: int = 0, public_url: str | None = None
    ) -> None:  # fmt: skip
        self.shopify = shopify
        self.public_url = public_url.rstrip("/") if public_url else None
        super().__init__((host, port), _Handler)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def shop_url(self, code: str) -> str:
        """What SHOP_<CODE>_URL should be for this shop."""
        return f"{self.base_url}/{code.lower()}"

    def start(self) -> "SimulatorServer":
        # A short poll interval: stop() waits for the loop to notice, up to one interval.
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.shopify.close()
