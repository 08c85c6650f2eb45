"""The runner's own clocks, injected: the cost-budget wait before a Shopify call, and when each held lease is due a
heartbeat. Time is moved by hand; nothing here waits."""

from runner.shopify_client import ShopifyClient
from runner.simulator.clock import Clock
from runner.tokens import StaticToken
from runner.worker import HEARTBEAT_SECONDS, Heartbeats
from tests.sim import EDGES, TOKEN, start


def test_the_client_waits_for_the_budget_it_needs_and_is_never_throttled() -> None:
    clock = Clock(frozen=True)  # one time for Shopify and the runner: the runner's sleeps move it
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    server = start(bucket_size=25, restore_rate=1, clock=clock)
    client = ShopifyClient(server.shop_url("DE"), StaticToken(TOKEN), "2026-10", clock=clock, sleep=sleep)
    try:
        client.run_query(EDGES)  # 25 -> 15 points
        client.run_query(EDGES)  # 15 -> 5
        assert slept == []
        client.run_query(EDGES)  # needs 10, holds 5, restores 1 a second: waits exactly 5 s first
        assert slept == [5.0]
        clock.advance(3)  # three seconds pass on their own: 3 points back, 7 short of the next call
        client.run_query(EDGES)
        assert slept == [5.0, 7.0]
        stats = server.shopify.stats()["shops"]["DE"]
        assert (stats["operations_started"], stats["throttled"]) == (4, 0)
    finally:
        client.close()
        server.stop()


def test_each_lease_is_due_a_heartbeat_every_third_of_its_length() -> None:
    clock = Clock(frozen=True)
    beats = Heartbeats("unused", stop=None, clock=clock)  # type: ignore[arg-type]
    beats.hold(1, 7, lease_seconds=9)  # every 3 s
    beats.hold(2, 4, lease_seconds=600)  # every HEARTBEAT_SECONDS, not 200 s
    clock.advance(2.75)
    assert beats.due() == {}
    clock.advance(0.25)
    beats.copied(1, 7, 4096)  # download progress: recorded, the period unchanged
    assert beats.due() == {(1, 7): 4096}
    assert beats.due() == {}  # next due a period later
    clock.advance(3)
    assert beats.due() == {(1, 7): 4096}
    beats.drop(1, 7)
    beats.copied(1, 7, 8192)  # progress after the lease was dropped holds nothing
    clock.advance(HEARTBEAT_SECONDS - 6)
    assert beats.due() == {(2, 4): 0}
    clock.advance(HEARTBEAT_SECONDS - 0.25)
    assert beats.due() == {}
