"""Fixtures of the simulator's tests: a one-shop simulator on a free port, and a client of it over real HTTP."""

import pytest

from tests.sim import Client, start


@pytest.fixture
def sim():
    server = start()
    yield server
    server.stop()


@pytest.fixture
def client(sim) -> Client:
    return Client(sim)
