"""Maintenance boundaries of the API (issue 18, findings 4 and 9): reading the plan never
changes it, replanning is an operator's mutation, and the CSV export cannot carry a
spreadsheet formula. Against the real maintenance service and the API on a nats-server."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import pytest

from api.auth import Role
from maintenance.cmms import COLUMNS, to_csv
from schemas.maintenance import WorkOrder
from schemas.plant import Plant, load_plant
from tests.api.test_maintenance_api import BEARING_JOB, PLANT_FILE, LiveApi, LiveService
from twinfleet.services import NatsServer

pytestmark = [pytest.mark.slow]

FORMULAS = ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]


@pytest.fixture
def live(nats_server: NatsServer) -> Iterator[LiveApi]:
    plant: Plant = load_plant(PLANT_FILE)
    api = LiveApi(plant, nats_server.url)
    with LiveService(plant, nats_server.url), api:
        yield api


def _state(live: LiveApi) -> tuple[Any, Any]:
    """Every work order and every alert, as the service holds them."""
    status, orders = live.get("/api/v1/maintenance/workorders")
    assert status == 200, orders
    status, alerts = live.get("/api/v1/maintenance/alerts")
    assert status == 200, alerts
    return orders["workorders"], alerts["alerts"]


def test_reading_the_schedule_changes_nothing(live: LiveApi) -> None:
    """A viewer asking for a plan over one hour (REST and GraphQL) got the orders
    unscheduled and 'cannot be scheduled' alerts raised; now it gets a preview and the
    orders, their dates and the alerts stay as they were."""
    job = {**BEARING_JOB, "failure_prediction": {"probability": 0.5, "rul_hours": 100}}
    status, made, _ = live.call("POST", "/api/v1/maintenance/workorders", job, Role.OPERATOR)
    assert status == 201, made
    assert made["scheduled_date"] is not None and made["due_by"] is not None, made
    before = _state(live)

    status, plan = live.get("/api/v1/maintenance/schedule", horizon_hours=1)
    assert status == 200, plan
    assert plan["horizon_hours"] == 1
    assert [u["workorder_id"] for u in plan["unscheduled"]] == [made["workorder_id"]]
    answer = live.graphql(
        "{ schedule(horizonHours: 2) { horizonHours unscheduled { workorderId } } }"
    )
    assert "errors" not in answer, answer
    assert answer["data"]["schedule"]["horizonHours"] == 2
    assert _state(live) == before, "reading the schedule changed the work orders or alerts"

    # the current plan is still the committed one
    status, plan = live.get("/api/v1/maintenance/schedule")
    assert status == 200
    assert [w["workorder_id"] for w in plan["scheduled"]] == [made["workorder_id"]]

    # replanning is an operator's mutation, over REST and GraphQL
    status, refused, _ = live.call(
        "POST", "/api/v1/maintenance/replan", {"horizon_hours": 1}, Role.VIEWER
    )
    assert status == 403, refused
    answer = live.graphql("mutation { replan(horizonHours: 1) { horizonHours } }")
    assert answer["errors"][0]["extensions"]["code"] == "forbidden", answer
    assert _state(live) == before
    status, replanned, _ = live.call(
        "POST", "/api/v1/maintenance/replan", {"horizon_hours": 168}, Role.OPERATOR
    )
    assert status == 200, replanned
    assert [w["workorder_id"] for w in replanned["scheduled"]] == [made["workorder_id"]]


def _cells(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_export_neutralises_formulas(live: LiveApi) -> None:
    """A title that a spreadsheet would run as a formula is exported with a leading
    apostrophe (OWASP, CSV injection); the JSON keeps the text as it was given."""
    for title in FORMULAS:
        status, made, _ = live.call(
            "POST", "/api/v1/maintenance/workorders", {**BEARING_JOB, "title": title}, Role.OPERATOR
        )
        assert status == 201, made
        assert made["title"] == title
    status, text, _ = live.call("GET", "/api/v1/maintenance/workorders?format=csv")
    assert status == 200, text
    titles = sorted(row["title"] for row in _cells(text))
    assert titles == sorted("'" + t for t in FORMULAS), titles
    for row in _cells(text):
        for column, value in row.items():
            assert not value or value[0] not in "=+-@\t\r", (column, value)


def test_csv_cells_of_every_column_are_neutralised() -> None:
    """Every text cell, not only the title: a formula in any of them is quoted; numbers
    (a negative cost) stay numbers."""
    from datetime import UTC, datetime

    order = WorkOrder(
        workorder_id="WO-2026-11-0001",
        asset_id="P-201",
        type="corrective",
        title="@cmd",
        unplaced_reason="+reason",
        created_at=datetime(2026, 11, 29, tzinfo=UTC),
    )
    (row,) = _cells(to_csv([order]))
    assert set(row) == set(COLUMNS)
    assert row["title"] == "'@cmd"
    assert row["unplaced_reason"] == "'+reason"


def test_a_boolean_is_no_number_in_the_maintenance_bodies() -> None:
    """JSON's ``true`` is not 1 hour or 1 minute (pydantic's lax mode took it for one; the
    schemathesis fuzz found ``{"horizon_hours": true}`` planned)."""
    from pydantic import ValidationError

    from api.app import ReplanBody, ShelveBody

    assert ReplanBody.model_validate({"horizon_hours": 24}).horizon_hours == 24.0
    assert ShelveBody.model_validate({"minutes": 30, "reason": "sensor swap"}).minutes == 30.0
    with pytest.raises(ValidationError, match="horizon_hours"):
        ReplanBody.model_validate({"horizon_hours": True})
    with pytest.raises(ValidationError, match="minutes"):
        ShelveBody.model_validate({"minutes": True, "reason": "sensor swap"})


def test_a_boolean_is_no_number_in_a_work_order_request() -> None:
    from pydantic import ValidationError

    from schemas.maintenance_api import WorkOrderRequest

    base = {"asset_id": "M-101", "type": "corrective", "title": "Replace the fan"}
    for field, bad in (
        ("estimated_duration_hours", True),
        ("parts_required", [{"part_number": "F-1", "quantity": True}]),
        ("failure_prediction", {"probability": True, "rul_hours": 10}),
    ):
        with pytest.raises(ValidationError, match=field):
            WorkOrderRequest.model_validate({**base, field: bad})
    ok = WorkOrderRequest.model_validate({**base, "estimated_duration_hours": 2})
    assert ok.estimated_duration_hours == 2.0
