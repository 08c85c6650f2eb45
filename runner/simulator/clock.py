"""The simulator's time: the wall clock, or a frozen one that moves only when told. Every lifetime, latency, progress
and cost bucket of the simulator reads it, so a test proves an expiry by moving time, not by waiting for it."""

import threading
import time


class Clock:
    """Seconds since the epoch, like time.time(); `frozen` stops it until `advance` moves it."""

    def __init__(self, frozen: bool = False) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0
        self._frozen_at = float(int(time.time())) if frozen else None  # whole seconds: sums of 2^-k stay exact

    def __call__(self) -> float:
        with self._lock:
            return self._frozen_at if self._frozen_at is not None else time.time() + self._offset

    def advance(self, seconds: float) -> float:
        """Moves the clock forward (never back); returns the new time."""
        if not seconds >= 0:
            raise ValueError(f"the clock moves forward only, not by {seconds!r} seconds")
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += seconds
            else:
                self._offset += seconds
        return self()
