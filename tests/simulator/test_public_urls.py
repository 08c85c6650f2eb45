"""The URLs the simulator hands out use the scheme and host the client used: behind a TLS front (a test-made
certificate) an export URL is https through that front and is fetched through it; --public-url names them outright."""

import http.client
import json
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from runner.simulator.server import SimulatorServer
from tests.sim import EDGES, RUN, TOKEN, start

FIELDS = "query($id: ID!) { bulkOperation(id: $id) { status url } }"


def _certificate(folder) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and de.myshopify.com: (certificate, key)."""
    cert, key = folder / "front.pem", folder / "front.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=front",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:de.myshopify.com", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return str(cert), str(key)


def _front(target: SimulatorServer, cert: str, key: str) -> ThreadingHTTPServer:
    """A TLS-terminating proxy in front of the simulator, as a load balancer is: it forwards each request over plain
    HTTP with X-Forwarded-Proto: https and X-Forwarded-Host set to the host the client asked for."""
    host, port = target.server_address[:2]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: object) -> None:
            pass

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            headers |= {"X-Forwarded-Proto": "https", "X-Forwarded-Host": self.headers["Host"],
                        "Host": self.headers["Host"]}  # fmt: skip
            upstream = http.client.HTTPConnection(host, port, timeout=30)
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            upstream.close()

        do_GET = do_POST = _forward  # noqa: N815 - http.server's naming

    front = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    front.socket = tls.wrap_socket(front.socket, server_side=True)
    threading.Thread(target=front.serve_forever, args=(0.05,), daemon=True).start()
    return front


def test_an_export_url_through_a_tls_front_is_https_and_works(tmp_path) -> None:
    server = start(("DE",), days=1, orders_per_day=12)
    cert, key = _certificate(tmp_path)
    front = _front(server, cert, key)
    try:
        base = f"https://127.0.0.1:{front.server_address[1]}"
        trust = ssl.create_default_context(cafile=cert)  # the test's own certificate, nothing else
        client = httpx.Client(verify=trust, headers={"X-Shopify-Access-Token": TOKEN}, timeout=30)
        url = f"{base}/admin/api/2026-01/graphql.json"  # Shopify's own path: the shop is the one Host names
        host = {"Host": "de.myshopify.com"}
        started = client.post(url, json={"query": RUN, "variables": {"q": EDGES}}, headers=host).json()
        op_id = started["data"]["bulkOperationRunQuery"]["bulkOperation"]["id"]
        for _ in range(600):
            op = client.post(url, json={"query": FIELDS, "variables": {"id": op_id}}, headers=host).json()
            op = op["data"]["bulkOperation"]
            if op["status"] == "COMPLETED":
                break
            time.sleep(0.02)
        assert op["url"].startswith("https://de.myshopify.com/de/bulk/"), op["url"]
        # the client reaches that host through the front (its DNS, here the connection's address)
        path = op["url"].removeprefix("https://de.myshopify.com")
        body = client.get(f"{base}{path}", headers=host)
        assert body.status_code == 200, body.text
        ids = sorted(json.loads(line)["id"] for line in body.text.splitlines())
        assert ids == sorted(row["id"] for row in server.shopify.truth("DE", "orders"))
        # straight to the simulator, no front: http and the Host asked for, as before
        plain = httpx.post(f"{server.shop_url('DE')}/admin/api/2026-01/graphql.json", timeout=30,
                           json={"query": FIELDS, "variables": {"id": op_id}},
                           headers={"X-Shopify-Access-Token": TOKEN}).json()  # fmt: skip
        assert plain["data"]["bulkOperation"]["url"].startswith(f"{server.base_url}/de/bulk/")
    finally:
        front.shutdown()
        front.server_close()
        server.stop()


def test_public_url_names_the_urls_handed_out() -> None:
    server = start(("DE",), days=1, orders_per_day=5)
    server.public_url = "https://shopify-sim.example"
    try:
        url = f"{server.shop_url('DE')}/admin/api/2026-01/graphql.json"
        headers = {"X-Shopify-Access-Token": TOKEN}
        started = httpx.post(url, json={"query": RUN, "variables": {"q": EDGES}}, headers=headers, timeout=30).json()
        op_id = started["data"]["bulkOperationRunQuery"]["bulkOperation"]["id"]
        for _ in range(600):
            op = httpx.post(url, json={"query": FIELDS, "variables": {"id": op_id}}, headers=headers, timeout=30)
            op = op.json()["data"]["bulkOperation"]
            if op["status"] == "COMPLETED":
                break
            time.sleep(0.02)
        assert op["url"].startswith("https://shopify-sim.example/de/bulk/"), op["url"]
    finally:
        server.stop()
