"""Bulk operations: lifecycle CREATED -> RUNNING -> COMPLETED (or FAILED, CANCELING -> CANCELED, EXPIRED), timing,
per app-and-shop concurrency, the export file, and signed download URLs."""

import datetime as dt
import functools
import hashlib
import hmac
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from runner.simulator.export import Export

ACTIVE = ("CREATED", "RUNNING", "CANCELING")


@dataclass
class Timing:
    start_latency: float = 0.5  # seconds in CREATED
    objects_per_second: float = 50_000.0
    cancel_seconds: float = 0.5
    url_lifetime: float = 7 * 86_400
    foreign_op_seconds: float = 5.0
    download_rate: float = 0.0  # bytes per second each export download is served at (0: as fast as it goes)


def iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return dt.datetime.fromtimestamp(int(moment), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class BulkOperation:
    number: int
    shop: str
    query: str
    created: float
    timing: Timing
    fail_with: str | None = None  # INTERNAL_SERVER_ERROR, TIMEOUT, ACCESS_DENIED, "" (null errorCode)
    stuck: bool = False
    lifetime: float = 0.0
    foreign_until: float | None = None  # another process's operation: occupies a slot until then
    path: Path | None = None
    lines: int = 0
    roots: int = 0
    size: int = 0
    partial_lines: int = 0
    partial_size: int = 0
    written: bool = False
    canceled_at: float | None = None
    expire_on_handout: bool = False  # the op_url_expired fault: the first URL handed out is already expired
    report_lost: bool = False  # the lost_start_report fault: the answer that made it never reaches the caller
    error: str | None = None

    @property
    def gid(self) -> str:
        return f"gid://shopify/BulkOperation/{self.number}"

    def _run_seconds(self) -> float:
        return self.timing.start_latency + self.lines / self.timing.objects_per_second

    def state(self, now: float) -> dict:
        """Status and counts as Shopify would report them at `now` (counts as strings)."""
        elapsed = now - self.created
        status, code, count, done_at = "RUNNING", None, 0, None
        if self.foreign_until is not None:
            status = "RUNNING" if now < self.foreign_until else "COMPLETED"
        elif self.canceled_at is not None:
            status = "CANCELING" if now < self.canceled_at + self.timing.cancel_seconds else "CANCELED"
            count = self._progress(self.canceled_at - self.created)
            done_at = self.canceled_at + self.timing.cancel_seconds if status == "CANCELED" else None
        elif elapsed < self.timing.start_latency:
            status = "CREATED"
        elif self.fail_with == "ACCESS_DENIED":
            status, code, done_at = "FAILED", "ACCESS_DENIED", self.created + self.timing.start_latency
        elif self.stuck or not self.written:
            count = min(self._progress(elapsed), self.lines // 2 if self.stuck else self.lines)
        elif self.fail_with is not None and elapsed >= self.timing.start_latency + self.partial_lines / self.rate:
            status, code, count = "FAILED", self.fail_with or None, self.partial_lines
            done_at = self.created + self.timing.start_latency + self.partial_lines / self.rate
        elif elapsed >= self._run_seconds():
            status, count, done_at = "COMPLETED", self.lines, self.created + self._run_seconds()
            if now >= done_at + self.lifetime:
                status = "EXPIRED"
        else:
            count = min(self._progress(elapsed), self.lines)
        return {"status": status, "errorCode": code, "objectCount": count, "completedAt": done_at}

    @property
    def rate(self) -> float:
        return self.timing.objects_per_second

    def _progress(self, elapsed: float) -> int:
        return max(0, int((elapsed - self.timing.start_latency) * self.rate))

    def active(self, now: float) -> bool:
        return self.state(now)["status"] in ACTIVE


def sign(secret: bytes, path: str, expires: int) -> str:
    return hmac.new(secret, f"{path}:{expires}".encode(), hashlib.sha256).hexdigest()


class ExportCache:
    """Exports kept on disk by what determines their content (shop, data, query), so that a benchmark's timed run
    serves files made before it instead of generating them (which takes a core of this machine)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0

    def key(self, *parts: object) -> str:
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]

    def take(self, key: str, op: BulkOperation, path: Path) -> bool:
        """Serves the cached export `key` as the operation's file; false when there is none."""
        meta = self.directory / f"{key}.json"
        if not meta.exists():
            self.misses += 1
            return False
        op.lines, op.roots, op.size = json.loads(meta.read_text())
        try:
            os.link(self.directory / f"{key}.jsonl", path)
        except OSError:
            shutil.copyfile(self.directory / f"{key}.jsonl", path)
        self.hits += 1
        return True

    def keep(self, key: str, op: BulkOperation) -> None:
        """Keeps a whole export (written without a fault) under `key`."""

        def copy(out: BinaryIO) -> None:
            with op.path.open("rb") as src:
                shutil.copyfileobj(src, out)

        self._store(key, op.number, copy, op)

    def _store(self, key: str, number: int, fill: Callable[[BinaryIO], None], tally: "Tally | BulkOperation") -> None:
        """Keeps what `fill` writes under `key`, then its counts (read from `tally` once it is written): a key with
        counts is whole."""
        staged = self.directory / f"{key}.{number}.tmp"
        with staged.open("wb") as out:
            fill(out)
        staged.replace(self.directory / f"{key}.jsonl")
        (self.directory / f"{key}.json").write_text(json.dumps([tally.lines, tally.roots, tally.size]))

    def compose(self, parts: list[tuple[str, "Export"]], op: BulkOperation) -> None:
        """Writes the operation's file as its days' parts (day_parts) in order, each served from the cache or made
        now and kept: an export of other days than the run before served from what it made. A hit when every part
        was kept before."""
        made = False
        with op.path.open("wb") as out:
            for key, part in parts:
                meta, data = self.directory / f"{key}.json", self.directory / f"{key}.jsonl"
                if not meta.exists():
                    made, tally = True, Tally()
                    self._store(key, op.number, functools.partial(write_lines, part, tally=tally), tally)
                lines, roots, size = json.loads(meta.read_text())
                with data.open("rb") as src:
                    shutil.copyfileobj(src, out)
                op.lines, op.roots, op.size = op.lines + lines, op.roots + roots, op.size + size
        self.misses += made
        self.hits += not made


@dataclass
class Tally:
    lines: int = 0
    roots: int = 0
    size: int = 0


def write_lines(export: "Export", out: BinaryIO, tally: "Tally | BulkOperation", malformed: bool = False) -> None:
    """Writes the export's lines to `out`, counting lines, roots and bytes into `tally` as it goes (malformed: the
    second line cut inside its JSON)."""
    for line, is_root in export.lines():
        data = line.encode()
        if malformed and tally.lines == 1:
            data = data[: max(1, len(data) // 2)] + b"\n"  # cut inside the JSON, newline kept
        out.write(data)
        tally.lines += 1
        tally.roots += is_root
        tally.size += len(data)
        if tally.lines % 10_000 == 0:
            time.sleep(0)  # let request threads run


def write_export(
    op: BulkOperation, export: "Export", directory: Path, malformed: bool,
    cache: ExportCache | None = None, key: str = "", parts: list[tuple[str, "Export"]] | None = None,
) -> None:  # fmt: skip
    """Writes the export file line by line (bounded memory), counting lines, roots and bytes; with a cache (and no
    fault that changes the file), serves a kept copy or keeps this one, or, given its days' parts, composes it."""
    op.path = directory / f"bulk-{op.number}.jsonl"
    cached = cache is not None and not malformed and op.fail_with is None
    if cached and not parts and cache.take(key, op, op.path):
        op.written = True
        return
    try:
        if cached and parts:
            cache.compose(parts, op)  # its parts are kept as they are made
        else:
            with op.path.open("wb") as out:
                write_lines(export, out, op, malformed)
    except Exception as exc:  # noqa: BLE001 - reported as the operation's failure
        op.error = str(exc)
        op.fail_with = "INTERNAL_SERVER_ERROR"
    if op.fail_with is not None:
        # A failed operation produced about half of its output: that is what partialDataUrl serves.
        op.partial_lines = op.lines // 2
        with op.path.open("rb") as src:
            op.partial_size = sum(len(src.readline()) for _ in range(op.partial_lines))
    elif cached and not parts:
        cache.keep(key, op)
    op.written = True
