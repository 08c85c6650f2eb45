"""Benchmarks: each prints figures (`python -m bench` runs them all); none is a timed assertion."""

import os
import signal
import sys
from pathlib import Path


def exit_on_sigterm() -> None:
    """Makes SIGTERM (a timeout, or make passing its own on) exit through every finally block, once, so that private
    clusters, simulators and runners are stopped, not left behind."""

    def leave(*_: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-up short
        sys.exit(143)

    signal.signal(signal.SIGTERM, leave)


def cpu_seconds(pid: int) -> float:
    """CPU time a process used so far (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
