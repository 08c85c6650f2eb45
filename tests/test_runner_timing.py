"""The runner's own clocks, injected: the cost-budget wait before a Shopify call, and when each held lease is due a
heartbeat. Time is moved by hand; nothing here waits."""

from runner.shopify_client import ShopifyClient
from runner.simulator.clock import Clock
from runner.worker import HEARTBEAT_SECONDS, Heartbeats
from tests.simulator import TOKEN, start

EDGES = "{ orders { edges { node { id } } } }"


class FakeTime:
    """A monotonic clock and a sleep that only moves it (and, if given, the simulator's clock with it)."""

    def __init__(self, shopify_clock: Clock | None = None) -> None:
        self.now = 1000.0
        self.slept: list[float] = []
        self._shopify = shopify_clock

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self._shopify is not None:
            self._shopify.advance(seconds)


def test_the_client_waits_for_the_budget_it_needs_and_is_never_throttled() -> None:
    shopify_clock = Clock(frozen=True)
    server = start(bucket_size=25, restore_rate=1, clock=shopify_clock)
    fake = FakeTime(shopify_clock)
    client = ShopifyClient(server.shop_url("DE"), TOKEN, "2026-10", clock=fake.clock, sleep=fake.sleep)
    try:
        client.run_query(EDGES)  # 25 -> 15 points
        client.run_query(EDGES)  # 15 -> 5
        assert fake.slept == []
        client.run_query(EDGES)  # needs 10, holds 5, restores 1 a second: waits exactly 5 s first
        assert fake.slept == [5.0]
        fake.now += 3  # three seconds pass on their own: 3 points back, 7 short of the next call
        shopify_clock.advance(3)
        client.run_query(EDGES)
        assert fake.slept == [5.0, 7.0]
        stats = server.shopify.stats()["shops"]["DE"]
        assert (stats["operations_started"], stats["throttled"]) == (4, 0)
    finally:
        client.close()
        server.stop()


def test_each_lease_is_due_a_heartbeat_every_third_of_its_length() -> None:
    fake = FakeTime()
    beats = Heartbeats("unused", stop=None, clock=fake.clock)  # type: ignore[arg-type]
    beats.hold(1, 7, 0, lease_seconds=9)  # every 3 s
    beats.hold(2, 4, 0, lease_seconds=600)  # every HEARTBEAT_SECONDS, not 200 s
    fake.now += 2.75
    assert beats.due() == {}
    fake.now += 0.25
    beats.hold(1, 7, 4096)  # download progress: recorded, the period unchanged
    assert beats.due() == {(1, 7): 4096}
    assert beats.due() == {}  # next due a period later
    fake.now += 3
    assert beats.due() == {(1, 7): 4096}
    beats.drop(1, 7)
    fake.now += HEARTBEAT_SECONDS - 6
    assert beats.due() == {(2, 4): 0}
    fake.now += HEARTBEAT_SECONDS - 0.25
    assert beats.due() == {}
