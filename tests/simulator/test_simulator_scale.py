"""The simulator at scale, in its own process: deterministic data, and a 1,000,000-line export streamed with flat
memory (the figures are printed; run with -s to see them)."""

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.sim import POLL, RUN, TOKEN

ENV = {**os.environ, **{f"SHOP_{c}_TOKEN": TOKEN for c in ("DA", "DE", "NL", "INT", "CHF", "BIG")}}


def _dump(tmp: Path, seed: int) -> tuple[subprocess.Popen, Path]:
    out = tmp / f"truth-{seed}-{time.monotonic_ns()}"
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "simulate", "--seed", str(seed), "--orders-per-day", "100",
         "--from", "2025-09-01", "--to", "2025-10-31", "--dump-truth", str(out)],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    return process, out


def _digest(process: subprocess.Popen, out: Path) -> str:
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    digest = hashlib.sha256()
    for table in ("orders", "order_line_items", "refunds", "skus"):
        digest.update((out / f"{table}.jsonl").read_bytes())
    return digest.hexdigest()


def test_sixty_one_days_of_five_shops_generate_deterministically(tmp_path: Path) -> None:
    dumps = [_dump(tmp_path, seed) for seed in (7, 7, 8)]  # three processes at once
    first, second, other = (_digest(*dump) for dump in dumps)
    assert first == second
    assert first != other


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_million_line_export_streams_with_flat_memory() -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "runner", "simulate", "--shops", "BIG", "--port", "0", "--orders-per-day", "10500",
         "--from", "2025-09-01", "--to", "2025-09-24", "--objects-per-second", "1000000000"],
        env=ENV, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        base = server.stdout.readline().split(" at ")[1].split(" ")[0]
        url = f"{base}/big/admin/api/2026-10/graphql.json"
        headers = {"X-Shopify-Access-Token": TOKEN}
        query = "{ orders { edges { node { id name createdAt updatedAt totalPriceSet { shopMoney { amount currencyCode } } refunds { id createdAt } lineItems { edges { node { id sku quantity currentQuantity variant { id } } } } } } } }"  # noqa: E501
        warm = httpx.post(url, json={"query": "{ shop { name } }"}, headers=headers)  # the schema is loaded
        assert warm.status_code == 200 and "errors" not in warm.json()
        idle = _rss_kib(server.pid)
        started = httpx.post(url, json={"query": RUN, "variables": {"q": query}}, headers=headers).json()
        op_id = started["data"]["bulkOperationRunQuery"]["bulkOperation"]["id"]
        samples = []
        while True:
            op = httpx.post(url, json={"query": POLL, "variables": {"id": op_id}}, headers=headers).json()
            op = op["data"]["bulkOperation"]
            samples.append(_rss_kib(server.pid))
            if op["status"] == "COMPLETED":
                break
            time.sleep(0.5)
        written = samples[-1]
        lines = size = 0
        download = []
        with httpx.stream("GET", op["url"], timeout=60) as response:
            for chunk in response.iter_bytes(1 << 20):
                size += len(chunk)
                lines += chunk.count(b"\n")
                download.append(_rss_kib(server.pid))
        assert int(op["objectCount"]) == lines >= 1_000_000
        assert size == int(op["fileSize"])
        print(
            f"\nexport of {lines:,} lines, {size / 1e6:.0f} MB: server RSS idle {idle / 1024:.0f} MiB, "
            f"peak while exporting {max(samples) / 1024:.0f} MiB, during download "
            f"{min(download) / 1024:.0f}-{max(download) / 1024:.0f} MiB"
        )
        assert max(download) - written < 20 * 1024  # streaming the file adds under 20 MiB
        half = len(samples) // 2
        assert max(samples[half:]) - max(samples[:half]) < 40 * 1024  # flat while the export grows
        assert max(samples) - idle < 150 * 1024  # producing it is bounded by a day of orders, not the export
    finally:
        server.terminate()
        server.wait(10)
