"""`python -m bench [--quick]` (make bench, make bench-quick): every benchmark in turn, then one table of their figures.
The full run takes 25 to 30 minutes on 2 cores; --quick runs each on less data (about 5 minutes) for a first look."""

import argparse
import importlib
import sys
import time

from bench import exit_on_sigterm
from bench.table import print_table

# Each benchmark with the arguments of the full run and of the quick one.
RUNS = {
    "dispatch": ([], ["--jobs", "500", "--cycles", "1000"]),
    "import": ([], ["--repeat", "2", "--days", "3", "--products", "8000"]),
    "backfill": (["--days", "30"], ["--days", "8", "--orders-per-day", "500", "--scale", "8"]),
    "scale": ([], ["--shops", "200"]),
    "runner_memory": ([], ["--days", "6"]),
    "connections": ([], ["--rounds", "1", "--days", "4"]),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every benchmark on less data")
    parser.add_argument("--only", action="append", choices=list(RUNS), help="run only these (repeatable)")
    args = parser.parse_args(argv)
    rows = []
    for name, (full, quick) in RUNS.items():
        if args.only and name not in args.only:
            continue
        module = importlib.import_module(f"bench.{name}")
        started = time.monotonic()
        print(f"-- bench/{name} ...", file=sys.stderr, flush=True)
        rows += [(f"{name}: {figure}", value) for figure, value in module.figures(quick if args.quick else full)]
        print(f"-- bench/{name} took {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    print()
    print_table(rows)


if __name__ == "__main__":
    exit_on_sigterm()
    main()
