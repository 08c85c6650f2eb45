"""Backoff bounds, as properties: grows with the attempt, capped, jittered."""

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

settings.register_profile("db", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _backoff(db: psycopg.Connection, attempt: int, rand: float | None = None) -> float:
    if rand is None:
        return db.execute("select extract(epoch from bulk_sync.backoff(%s))::float8", (attempt,)).fetchone()[0]
    return db.execute("select extract(epoch from bulk_sync.backoff(%s, %s))::float8", (attempt, rand)).fetchone()[0]


@settings(settings.get_profile("db"), max_examples=200)
@given(
    attempt=st.integers(min_value=1, max_value=200),
    base=st.integers(min_value=1, max_value=60),
    cap_factor=st.integers(min_value=1, max_value=500),
    rand=st.floats(min_value=0, max_value=1),
)
def test_backoff_is_within_half_and_whole_of_the_capped_exponential(
    db: psycopg.Connection, attempt: int, base: int, cap_factor: int, rand: float
) -> None:
    cap = min(base * cap_factor, 86400)
    db.execute("update bulk_sync.settings set backoff_base_seconds = %s, backoff_cap_seconds = %s", (base, cap))
    ceiling = min(cap, base * 2.0 ** (attempt - 1))
    value = _backoff(db, attempt, rand)
    assert ceiling / 2 - 1e-6 <= value <= ceiling + 1e-6
    assert value <= cap + 1e-6
    # monotone in the jitter draw, and the next attempt's range never starts below this one's
    assert _backoff(db, attempt, 1.0) >= value - 1e-6
    assert _backoff(db, attempt + 1, 0.0) >= _backoff(db, attempt, 0.0) - 1e-6


def test_backoff_grows_until_the_cap(db: psycopg.Connection) -> None:
    db.execute("update bulk_sync.settings set backoff_base_seconds = 10, backoff_cap_seconds = 1800")
    ceilings = [_backoff(db, n, 1.0) for n in range(1, 12)]
    assert ceilings == [10, 20, 40, 80, 160, 320, 640, 1280, 1800, 1800, 1800]


def test_backoff_is_jittered(db: psycopg.Connection) -> None:
    draws = {round(_backoff(db, 3), 3) for _ in range(50)}
    assert len(draws) > 40
    assert all(20 <= d <= 40 for d in draws)
