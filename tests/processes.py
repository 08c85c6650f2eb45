"""The bulk-sync command in processes of its own, as people and platforms run it: its environment for a simulator,
a runner, and one-shot verbs."""

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.sim import TOKEN


def runner_env(dsn: str, server, **extra: str) -> dict[str, str]:
    """The runner's environment for every shop the simulator serves (each with the static token); shop settings of
    the calling environment are left out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOP_", "SHOPIFY_"))} | {"DATABASE_URL": dsn}
    for code in server.shopify.shops:
        env[f"SHOP_{code}_TOKEN"] = TOKEN
        env[f"SHOP_{code}_URL"] = server.shop_url(code)
    return {**env, **extra}


def start_runner(env: dict[str, str], *args: str, log: Path | None = None) -> subprocess.Popen:
    out = log.open("a") if log else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "run", *args], env=env, stdout=out, stderr=out, start_new_session=True
    )


def cli(
    *args: str, dsn: str | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """One verb of the command, run to its end: with `env`, or this environment and DATABASE_URL=`dsn`."""
    env = env if env is not None else {**os.environ, "DATABASE_URL": dsn}
    return subprocess.run(
        [sys.executable, "-m", "runner", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def wait_for(condition: Callable[[], object], what: str, seconds: float = 180, every: float = 0.1) -> None:
    """Waits until condition() is true, asking every `every` s; the deadline guards a hang only."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(every)
