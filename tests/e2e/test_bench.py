"""A benchmark stopped with SIGTERM (a timeout, or make stopped) leaves nothing of its own running."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[2]


def _processes_of(marker: str) -> dict[int, str]:
    """pid -> command line of every process whose command line or environment holds `marker`."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            try:
                environ = (proc / "environ").read_bytes().decode(errors="replace")
            except PermissionError:  # another user's process (the server, when not root): its command line tells
                environ = ""
        except (FileNotFoundError, ProcessLookupError):
            continue
        if marker in cmdline or marker in environ:
            found[int(proc.name)] = cmdline
    return found


def test_a_bench_stopped_with_sigterm_leaves_nothing_running() -> None:
    # a short path: the private cluster's socket lives under it (pytest's tmp_path makes it too long for one)
    with tempfile.TemporaryDirectory(prefix="bench-sigterm-") as directory:
        _stop_a_bench(Path(directory))


def _stop_a_bench(tmp: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp)}
    command = [sys.executable, "-m", "bench.backfill", "--shops", "1", "--days", "30", "--orders-per-day", "200",
               "--scale", "1", "--skip-original"]  # fmt: skip
    bench = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:  # its private cluster, its simulated Shopify and its runner, all up
            running = " | ".join(_processes_of(str(tmp)).values())
            if "postgres" in running and "simulate" in running and "runner run" in running:
                break
            assert bench.poll() is None, bench.stderr.read().decode()
            assert time.monotonic() < deadline, f"the bench did not get going: {running}"
            time.sleep(0.2)
        os.killpg(bench.pid, signal.SIGTERM)  # as timeout(1) does: the whole process group
        assert bench.wait(90) != 0
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30  # the server's processes end just after pg_ctl returns
    while _processes_of(str(tmp)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_of(str(tmp)) == {}
    assert not any(tmp.iterdir()), "its temporary directories are removed"
