from __future__ import annotations

import pytest
from harness import RunningServer, make_config


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path / "data")


@pytest.fixture
def server(config):
    srv = RunningServer(config).start()
    try:
        yield srv
    finally:
        srv.stop()


def start_server(tmp_path, **sections) -> RunningServer:
    return RunningServer(make_config(tmp_path / "data", **sections)).start()


@pytest.fixture(scope="session")
def dns_world():
    """The standard dnsmasq world of tests/dnsworld.py, shared by the whole run."""
    from dnsworld import DNSMASQ, DnsWorld

    if DNSMASQ is None:
        pytest.skip("dnsmasq is not installed")
    world = DnsWorld().start()
    try:
        yield world
    finally:
        world.close()
