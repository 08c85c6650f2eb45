"""An export into bulk_sync.staging in two steps: `fetch` streams the export URL into a spool (memory up to
SPOOL_MEMORY, then a temporary file) with no database connection held, and `stage` copies the spooled lines with
COPY and reports the download in the same transaction, so the staged lines exist only together with a download the
job accepted. A connection is held only while the lines go into the database, not while they cross the network."""

import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

import httpx
import psycopg

from runner import sqlapi, tls

CHUNK = 1 << 16
SPOOL_MEMORY = 8 << 20  # an export up to this size stays in memory; a larger one is spooled to a file in TMPDIR


class DownloadError(Exception):
    """The download failed; `expired` means the export URL no longer works (a new export is needed)."""

    def __init__(self, reason: str, expired: bool = False) -> None:
        super().__init__(reason)
        self.expired = expired


class Abandoned(Exception):
    """The runner is stopping: the download was given up (nothing staged)."""


@dataclass
class Spool:
    """A downloaded export: its bytes, whole lines only, and how many."""

    file: IO[bytes]
    lines: int
    bytes: int

    def close(self) -> None:
        self.file.close()


@dataclass
class Result:
    lines: int
    bytes: int
    accepted: bool


def _text(raw: bytes) -> str:
    # PostgreSQL text holds neither NUL nor invalid UTF-8; such a line is kept (replaced) and quarantined later.
    return raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def fetch(url: str, stop: threading.Event, progress: Callable[[int], None], timeout: float = 60.0) -> Spool:
    """Downloads `url` into a spool; raises DownloadError, or Abandoned when `stop` is set meanwhile."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY, prefix="bulk-sync-export-")  # noqa: SIM115
    size = lines = 0
    last = b"\n"
    try:
        with httpx.stream("GET", url, timeout=httpx.Timeout(timeout, connect=10.0), verify=tls.context()) as response:
            if response.status_code in (400, 401, 403, 404, 410):
                raise DownloadError(f"HTTP {response.status_code} for the export URL", expired=True)
            if response.status_code != 200:
                raise DownloadError(f"HTTP {response.status_code} for the export URL")
            for chunk in response.iter_bytes(CHUNK):
                if stop.is_set():
                    raise Abandoned()
                spool.write(chunk)
                size += len(chunk)
                lines += chunk.count(b"\n")
                last = chunk[-1:]
                progress(size)
        if last != b"\n":
            raise DownloadError("the export does not end with a newline: it was cut off")
    except httpx.TimeoutException:
        spool.close()
        raise DownloadError(f"the export download timed out after {size} bytes") from None
    except httpx.TransportError as exc:
        spool.close()
        raise DownloadError(f"the export download failed after {size} bytes ({type(exc).__name__})") from None
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return Spool(spool, lines, size)


def stage(conn: psycopg.Connection, job_id: int, fence: int, spool: Spool, stop: threading.Event) -> Result:
    """Copies the spooled lines into staging and reports the download, in one transaction; nothing stays staged
    when the job moved on meanwhile (accepted False) or `stop` is set (Abandoned)."""
    try:
        with conn.transaction():
            with conn.cursor().copy("copy bulk_sync.staging (job_id, line_no, line) from stdin") as copy:
                for number, raw in enumerate(spool.file, 1):
                    copy.write_row((job_id, number, _text(raw[:-1])))
                    if number % 10_000 == 0 and stop.is_set():
                        raise Abandoned()
            if not sqlapi.report_download_finished(conn, job_id, fence, spool.lines, spool.bytes):
                raise _Stale()
    except _Stale:
        return Result(spool.lines, spool.bytes, False)
    return Result(spool.lines, spool.bytes, True)


class _Stale(Exception):
    """The job moved on: roll the staged lines back."""
