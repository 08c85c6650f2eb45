"""`python -m bench` (make bench): every benchmark in turn, then one table of their figures and ratios."""

import importlib
import sys
import time

from bench import exit_on_sigterm
from bench.table import print_table


def main() -> None:
    rows = []
    for name in ("dispatch", "import", "backfill", "runner_memory"):
        module = importlib.import_module(f"bench.{name}")
        started = time.monotonic()
        print(f"-- bench/{name} ...", file=sys.stderr, flush=True)
        rows += [(f"{name}: {figure}", value) for figure, value in module.figures([])]
        print(f"-- bench/{name} took {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    print()
    print_table(rows)


if __name__ == "__main__":
    exit_on_sigterm()
    main()
