"""Streaming an export URL into bulk_sync.staging with COPY, in bounded memory, and reporting it in the same
transaction, so the staged lines exist only together with a download the job accepted."""

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import psycopg

from runner import sqlapi, tls

CHUNK = 1 << 16


class DownloadError(Exception):
    """The download failed; `expired` means the export URL no longer works (a new export is needed)."""

    def __init__(self, reason: str, expired: bool = False) -> None:
        super().__init__(reason)
        self.expired = expired


class Abandoned(Exception):
    """The runner is stopping: the download was given up (nothing staged)."""


@dataclass
class Result:
    lines: int
    bytes: int
    accepted: bool


def _lines(chunks: Iterator[bytes], counter: list[int]) -> Iterator[str]:
    """Splits a byte stream into lines (without the newline), holding at most one partial line."""
    rest = b""
    for chunk in chunks:
        counter[0] += len(chunk)
        rest += chunk
        *complete, rest = rest.split(b"\n")
        for raw in complete:
            yield _text(raw)
    if rest:
        raise DownloadError("the export does not end with a newline: it was cut off")


def _text(raw: bytes) -> str:
    # PostgreSQL text holds neither NUL nor invalid UTF-8; such a line is kept (replaced) and quarantined later.
    return raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def download(
    conn: psycopg.Connection,
    job_id: int,
    fence: int,
    url: str,
    stop: threading.Event,
    progress: Callable[[int], None],
    timeout: float = 60.0,
) -> Result:
    """Downloads `url` into staging for `job_id` and reports it; raises DownloadError or Abandoned."""
    counter = [0]
    lines = 0
    try:
        with (
            conn.transaction(),
            httpx.stream("GET", url, timeout=httpx.Timeout(timeout, connect=10.0), verify=tls.context()) as response,
        ):
            if response.status_code in (400, 401, 403, 404, 410):
                raise DownloadError(f"HTTP {response.status_code} for the export URL", expired=True)
            if response.status_code != 200:
                raise DownloadError(f"HTTP {response.status_code} for the export URL")
            with conn.cursor().copy("copy bulk_sync.staging (job_id, line_no, line) from stdin") as copy:
                for line in _lines(response.iter_bytes(CHUNK), counter):
                    lines += 1
                    copy.write_row((job_id, lines, line))
                    if lines % 10_000 == 0:
                        if stop.is_set():
                            raise Abandoned()
                        progress(counter[0])
            if not sqlapi.report_download_finished(conn, job_id, fence, lines, counter[0]):
                raise _Stale()
            return Result(lines, counter[0], True)
    except _Stale:
        return Result(lines, counter[0], False)
    except httpx.TimeoutException:
        raise DownloadError(f"the export download timed out after {counter[0]} bytes") from None
    except httpx.TransportError as exc:
        raise DownloadError(f"the export download failed after {counter[0]} bytes ({type(exc).__name__})") from None


class _Stale(Exception):
    """The job moved on: roll the staged lines back."""
