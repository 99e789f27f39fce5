"""A real nats-server (JetStream) per test and one local Ray for the module's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from twinfleet.services import NatsServer, free_port


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "nats", port=free_port()) as server:
        yield server


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        namespace="twinfleet-tests",
        configure_logging=False,
    )
    yield
    ray.shutdown()
