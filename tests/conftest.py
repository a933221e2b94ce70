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
