"""schemathesis over the API's own OpenAPI document (issue 18): every operation, with a
viewer's token and with an admin's, every check (no 5xx, status codes, content types,
response schemas and headers as documented, invalid input refused, valid input not
refused, authentication enforced), and no GET changes any state.

Against the API (``create_app`` over ``start_services``) under uvicorn on loopback, with
the real services behind it: a nats-server (JetStream), the maintenance service, and a
PostgreSQL database with the example plant registered (history, logins). The state a GET
must not change is read from those services themselves, not through the API: the
maintenance service's work orders, alerts and committed plan, the last sequence of every
JetStream stream (events, audit records, key-value buckets such as revocations) and the
content of every table of the database."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import checks

from api.app import Settings
from api.auth import Role
from schemas.anomaly import AnomalyRecord
from schemas.maintenance import WorkOrderType
from schemas.plant import Plant, load_plant
from tests.api.conftest import LiveApi
from tests.api.test_maintenance_api import (
    BEARING_JOB,
    MOTOR,
    PLANT_FILE,
    LiveService,
    critical_bearing_anomaly,
    publish_anomaly,
)
from tests.conftest import drop_database, new_database
from twinfleet.postgres import PostgresServer
from twinfleet.services import NatsServer, free_port

pytestmark = [pytest.mark.slow]

SECRET = "schemathesis-secret-" + "x" * 32
MAX_EXAMPLES = 50
"""Examples per operation in the fuzzing phase (the coverage and examples phases add their
own, a bounded set); the file runs in 75 to 100 s on 2 shared cores."""
SEED = 18


# -- the API and the services behind it --------------------------------------------------------
class Fleet:
    """The running API, the maintenance service behind it and a snapshot of all state."""

    def __init__(self, api: LiveApi, service: LiveService, database_url: str) -> None:
        self.api = api
        self.service = service
        self.db = psycopg.connect(database_url, autocommit=True)
        self.tables = [
            r[0]
            for r in self.db.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            )
        ]

    def token(self, role: Role) -> str:
        return self.api.authority.issue(f"{role.value}-user", role)

    async def _service_state(self) -> dict[str, Any]:
        service = self.service.service
        async with service._lock:
            orders = {k: o.model_dump_json() for k, o in service.orders.orders.items()}
            alerts = {k: a.model_dump_json() for k, a in service.alerts.alerts.items()}
            plan = None if service.plan is None else service.plan.model_dump_json()
        streams = await service._nc.jsm().streams_info()
        return {
            "orders": orders,
            "alerts": alerts,
            "plan": plan,
            "streams": {s.config.name: (s.state.messages, s.state.last_seq) for s in streams},
        }

    def state(self) -> dict[str, Any]:
        """The maintenance service's records and plan, every stream's last sequence, and a
        digest of every table."""
        state = self.service.run(self._service_state(), 30)
        digests = self.db.execute(
            " UNION ALL ".join(
                f"SELECT '{t}', count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY "
                f"x::text), '')) FROM {t} x"
                for t in self.tables
            )
        ).fetchall()
        state["tables"] = {name: (n, digest) for name, n, digest in digests}
        return state


@contextlib.contextmanager
def _database(postgres: PostgresServer, plant: Plant) -> Iterator[str]:
    url = new_database(postgres, plant)
    asyncio.run(_add_user(url))
    try:
        yield url
    finally:
        drop_database(postgres, url)


USER, PASSWORD = "ada", "a password of Ada's"


async def _add_user(url: str) -> None:
    from store.users import add_user

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await add_user(conn, USER, "viewer", PASSWORD)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Fleet]:
    plant = load_plant(PLANT_FILE)
    with (
        NatsServer(tmp_path_factory.mktemp("nats"), port=free_port()) as nats_server,
        _database(postgres, plant) as database_url,
        # no ticks during the run: the service changes nothing by itself
        LiveService(plant, nats_server.url, tick_s=3600.0, plan_time_limit_s=1.0) as service,
        LiveApi(
            Settings(
                nats_url=nats_server.url,
                secret=SECRET,
                database_url=database_url,
                rate_per_s=10_000.0,
                rate_burst=10_000.0,
            ),
            list(plant.machines),
        ) as api,
    ):
        fleet = Fleet(api, service, database_url)
        operator = fleet.token(Role.OPERATOR)
        status, made = api._request("POST", "/api/v1/maintenance/workorders", BEARING_JOB, operator)
        assert status == 201, made
        publish_anomaly(nats_server.url, _anomaly())
        deadline = time.monotonic() + 20
        while not (alerts := fleet.service.run(_alert_ids(service))):
            assert time.monotonic() < deadline, "the anomaly raised no alert"
            time.sleep(0.1)
        status, served = api._request("GET", "/openapi.json", None, None)
        assert status == 200 and served == DOCUMENT, "the API serves another document"
        sensor = plant.machines[0].sensors[0].name
        KNOWN.update(
            asset_id=[MOTOR, plant.machines[0].id],
            sensor_id=[f"{plant.machines[0].id}.{sensor}"],
            alert_id=alerts,
        )
        try:
            yield fleet
        finally:
            fleet.db.close()


async def _alert_ids(service: LiveService) -> list[str]:
    return sorted(service.service.alerts.alerts)


def _anomaly() -> AnomalyRecord:
    return critical_bearing_anomaly()


# -- the document and the schema ------------------------------------------------------------
def _document() -> dict[str, Any]:
    """The OpenAPI document of the app, built without servers (the fixture checks that the
    running API serves the same one): schemathesis makes one test per operation from it
    when the file is collected."""
    from api.app import Services, create_app
    from api.auth import Authority
    from api.limits import RateLimiter
    from api.view import FleetView

    settings = Settings(nats_url="nats://127.0.0.1:1", secret=SECRET)
    services = Services(
        settings=settings,
        view=FleetView([], settings.nats_url),
        authority=Authority(SECRET),
        limiter=RateLimiter(1.0, 1.0),
    )
    return create_app(services).openapi()


DOCUMENT = _document()
KNOWN: dict[str, list[str]] = {}
"""Ids of things that exist, by path parameter name (filled by the fixture)."""
schema = schemathesis.openapi.from_dict(
    DOCUMENT,
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
            "checks": {"enabled": True},
            "phases": {"stateful": {"enabled": False}},
            "request-timeout": 60,
        }
    ),
)


@schema.hook
def flatmap_path_parameters(ctx: Any, path_parameters: dict[str, Any]) -> Any:
    """Half the time the ids of things that exist, so routes answer more than 404."""
    known = {k: KNOWN[k] for k in path_parameters or {} if KNOWN.get(k)}
    if not known:
        return st.just(path_parameters)
    real = st.fixed_dictionaries({k: st.sampled_from(v) for k, v in known.items()})
    return st.one_of(st.just(path_parameters), real.map(lambda r: {**path_parameters, **r}))


@pytest.fixture(scope="module", params=[Role.VIEWER, Role.ADMIN], ids=lambda r: r.value)
def token(request: pytest.FixtureRequest, fleet: Fleet) -> str:
    return fleet.token(Role(request.param))


NO_ACTORS = "consistent reads need the actors (Ray)"
"""The one 503 this run expects: the API runs without Ray here."""
RANGE = (
    ("end", "must be after start"),
    ("end", "a range may span at most"),
    ("start", "is out of range"),
    ("end", "is out of range"),
)
BEYOND_THE_DOCUMENT: dict[str, tuple[tuple[str, str], ...]] = {
    "GET /api/v1/assets/{asset_id}/history": RANGE,
    "GET /api/v1/sensors/{sensor_id}/timeseries": RANGE,
    "GET /api/v1/maintenance/alerts/kpis": (
        *RANGE,
        ("start", "the period is at most"),
        ("start", "must be before end"),
    ),
    "POST /api/v1/maintenance/alerts/{alert_id}/shelve": (
        ("minutes", "(alerting.max_shelve_minutes)"),
    ),
}
"""Refusals (422, by field and message) of requests the document allows, for what a JSON
schema cannot say: ``end`` after ``start`` within 5 years (the alarm KPIs: within the 40
days the service keeps), times in the years 2 to 9998, and the plant's own limit on
shelving."""


@schema.parametrize()
def test_the_api_keeps_to_its_document(case: Any, fleet: Fleet, token: str) -> None:
    """Every check of schemathesis, with a viewer's token and an admin's; a GET (whatever
    its parameters) changes no state."""
    call = {"base_url": fleet.api.url, "headers": {"Authorization": f"Bearer {token}"}}
    get = case.method.upper() == "GET"
    before = fleet.state() if get else None
    response = case.call(**call)
    excluded = []
    error = _error(response)
    label = f"{case.method.upper()} {case.path}"
    if response.status_code == 503 and error.get("message") == NO_ACTORS:
        excluded.append(checks.not_a_server_error)
    if response.status_code == 413:  # a body over the limit is refused before it is read
        excluded.append(checks.negative_data_rejection)
    if response.status_code == 422 and any(
        error.get("field") == name and what in str(error.get("message"))
        for name, what in BEYOND_THE_DOCUMENT.get(label, ())
    ):
        excluded.append(checks.positive_data_acceptance)
    case.validate_response(
        response,
        excluded_checks=excluded,
        headers=call["headers"],
        transport_kwargs={"base_url": fleet.api.url, "headers": call["headers"]},
    )
    if before is not None:
        after = fleet.state()
        assert after == before, f"{label} changed state: {_diff(before, after)}"


def _error(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        if isinstance(b, dict) and isinstance(a, dict):
            out += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            out.append(key)
    return out


def test_the_state_check_sees_a_change(fleet: Fleet) -> None:
    """The snapshot the GETs are held to notices a change made through the API: in the
    maintenance service (a work order, the plan), the streams (its event, the audit
    record) and the database (a login's session)."""
    before = fleet.state()
    status, made = fleet.api._request(
        "POST", "/api/v1/maintenance/workorders", BEARING_JOB, fleet.token(Role.OPERATOR)
    )
    assert status == 201, made
    after = fleet.state()
    changed = _diff(before, after)
    assert any(c.startswith("orders.") for c in changed) and "plan" in changed, changed
    assert "streams.EVENTS" in changed, changed
    assert not any(c.startswith("tables.") for c in changed), changed

    status, session = fleet.api._request(
        "POST", "/api/v1/session", {"username": USER, "password": PASSWORD}, None
    )
    assert status == 200, session
    changed = _diff(after, fleet.state())
    assert changed == ["streams.EVENTS", "tables.sessions"], changed


def test_string_parameters_name_their_values() -> None:
    """The document says which values a string parameter takes (issue 18: ``aggregation``
    and ``format`` were bare strings)."""
    params = {
        (path, p["name"]): p.get("schema", {})
        for path, ops in DOCUMENT["paths"].items()
        for op in ops.values()
        for p in op.get("parameters", [])
    }
    timeseries, workorders = (
        "/api/v1/sensors/{sensor_id}/timeseries",
        "/api/v1/maintenance/workorders",
    )
    assert set(params[(timeseries, "aggregation")]["enum"]) == {"raw", "1m", "1h", "auto"}
    assert params[(workorders, "format")]["enum"] == ["json", "csv"]
    assert params[(workorders, "type")]["enum"] == [t.value for t in WorkOrderType]
    assert params[(timeseries, "start")]["format"] == "date-time"
    assert "pattern" in params[(workorders, "asset_id")]
    assert "pattern" in params[(workorders, "status")]["items"]
    csv = DOCUMENT["paths"][workorders]["get"]["responses"]["200"]["content"]
    assert set(csv) == {"application/json", "text/csv"}
