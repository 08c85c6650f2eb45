"""The chaos run as a test (marked `chaos`, not in the default run; `make chaos` runs three seeds)."""

import pytest

from bench.chaos import run


@pytest.mark.chaos
def test_chaos_run_loses_nothing_it_does_not_report() -> None:
    result = run(seed=7, days=4, orders_per_day=20)
    print(result)
    assert result["kills"] > 0 and result["postgres_restarts"] == 1
    assert sum(result["faults"].values()) > 10
    assert all(result["checks"].values()), result["checks"]
