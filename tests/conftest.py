"""Shared fixtures: a real nats-server (JetStream) per test, one local Ray per session,
one real PostgreSQL 15 per session with a fresh, migrated database per test, and a small
fitted RUL model for a machine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from schemas.plant import MachineSpec, Plant
from twinfleet.postgres import PostgresServer
from twinfleet.services import NatsServer, free_port
from twins.survival import SurvivalRulModel
from twins.training import rul_feature_names


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "nats", port=free_port()) as server:
        yield server


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with PostgresServer(tmp_path_factory.mktemp("pg"), port=free_port()) as server:
        yield server


def new_database(postgres: PostgresServer, plant: Plant | None = None) -> str:
    """The URL of a new database on ``postgres`` with the schema migrated (and ``plant``'s
    assets and sensors registered); :func:`drop_database` removes it."""
    import uuid

    import psycopg

    from store.migrations import migrate
    from store.registry import register_plant

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_admin_url(postgres), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = postgres.url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(url) as conn:
        migrate(conn)
        if plant is not None:
            register_plant(conn, plant)
    return url


def drop_database(postgres: PostgresServer, url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(_admin_url(postgres), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _admin_url(postgres: PostgresServer) -> str:
    return postgres.url.rsplit("/", 1)[0] + "/postgres"


@pytest.fixture
def database(postgres: PostgresServer) -> Iterator[str]:
    """The URL of a new database with the schema migrated; dropped afterwards."""
    url = new_database(postgres)
    yield url
    drop_database(postgres, url)


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


def fit_toy_model(spec: MachineSpec, penalizer: float = 0.1) -> bytes:
    """A RUL model fitted on random features (enough to make predictions, not good ones),
    with lives failing by each of the type's failure modes in turn."""
    rng = np.random.default_rng(0)
    names = rul_feature_names(spec)
    x = rng.normal(size=(200, len(names)))
    frame = pd.DataFrame(x, columns=names)
    frame["entry"] = rng.uniform(0, 100, 200)
    frame["duration"] = frame["entry"] + 1000 * np.exp(0.2 * x[:, 0]) * rng.weibull(2, 200)
    frame["event"] = True
    # every failure mode of the type fails some lives, so predictions share between modes
    modes = [m.value for m in spec.failure_modes] or ["bearing_wear"]
    frame["mode"] = [modes[i % len(modes)] for i in range(len(frame))]
    return SurvivalRulModel(names, penalizer=penalizer).fit(frame).to_bytes()


@pytest.fixture(scope="session")
def toy_model() -> Callable[[MachineSpec, float], bytes]:
    return fit_toy_model


SERVER_FIXTURES = frozenset(
    {
        "nats_server",
        "postgres",
        "database",
        "local_ray",
        "hub",
        "stack",
        "registered",
        "api",
        "live",
        "replicas",
        "plantside",
        "browsers",
    }
)
"""Fixtures that start a real server (nats-server, PostgreSQL, Ray, an edge hub, the API,
a browser)."""

SERVER_MODULES = (
    "tests/drivers/",
    "tests/edge/test_mqtt.py",
    "tests/edge/test_credentials.py",
    "tests/maintenance/test_notify.py",
    "tests/security/test_bus_inbox.py",
    "tests/security/test_opcua_boundaries.py",
    "tests/store/test_crash.py",
    "tests/twinfleet/test_up.py",
)
"""Modules whose tests start real servers themselves (protocol servers, nats-server, a
webhook receiver, the main job)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that starts a server (by its fixtures or its module) as
    ``integration``; the fast tier is ``-m "not integration and not slow"``."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SERVER_FIXTURES or item.nodeid.startswith(SERVER_MODULES):
            item.add_marker(pytest.mark.integration)
