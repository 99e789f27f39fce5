"""The work order book (pure, no servers): numbering, creation by hand and by the policy,
keeping a predictive order up to date, the life cycle and its refusals, and selection.
Costs and dates are worked out by hand from the small plant below."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maintenance.errors import Conflict, Invalid, NotFound
from maintenance.orders import WorkOrderBook
from schemas.common import FailureMode, datetime_to_ms
from schemas.maintenance import (
    FailurePrediction,
    PartRequirement,
    Priority,
    WorkOrder,
    WorkOrderStatus,
    WorkOrderType,
)
from schemas.maintenance_api import UpdateWorkOrder, WorkOrderFilter, WorkOrderRequest
from schemas.plant import Plant, parse_plant
from schemas.rul import RulPrediction, SurvivalPoint

NOW = datetime(2026, 1, 5, 6, 20, tzinfo=UTC)
PREDICTED = NOW - timedelta(hours=2)
S = WorkOrderStatus


@cache
def plant(technicians: bool = True) -> Plant:
    """Two sites. North (P-1 "Feed pump", P-2 critical) has T-1 (mechanical, seals, 50/h)
    and T-2 (the same, 70/h); T-3 (mechanical, electrical, 90/h) works at any site; South
    (S-1) has T-4 (mechanical, seals, 1000/h)."""
    techs = [
        {
            "id": "T-1",
            "name": "Ann",
            "skills": ["mechanical", "seals"],
            "site_id": "north",
            "hourly_rate": 50,
        },
        {
            "id": "T-2",
            "name": "Bob",
            "skills": ["mechanical", "seals"],
            "site_id": "north",
            "hourly_rate": 70,
        },
        {"id": "T-3", "name": "Cy", "skills": ["mechanical", "electrical"], "hourly_rate": 90},
        {
            "id": "T-4",
            "name": "Di",
            "skills": ["mechanical", "seals"],
            "site_id": "south",
            "hourly_rate": 1000,
        },
    ]
    return parse_plant(
        {
            "name": "orders-test",
            "machine_types": {
                "pump": {
                    "kind": "pump",
                    "sensors": [{"name": "vibration", "kind": "vibration", "unit": "mm/s"}],
                    "maintenance": [
                        {
                            "failure_mode": "seal_leak",
                            "skills": ["mechanical", "seals"],
                            "parts": ["SEAL-1", "GASKET-2"],
                            "duration_hours": 6,
                            "parts_cost": 450,
                        },
                        {
                            "failure_mode": "bearing_wear",
                            "skills": ["mechanical"],
                            "parts": ["BRG-1"],
                            "duration_hours": 3,
                            "parts_cost": 120,
                        },
                    ],
                    "policy": {
                        "rul_median_below_hours": 200,
                        "failure_within_hours": 100,
                        "failure_probability_above": 0.3,
                    },
                }
            },
            "sites": [
                {
                    "id": "north",
                    "lines": [
                        {
                            "id": "L1",
                            "machines": [
                                {"id": "P-1", "type": "pump", "name": "Feed pump"},
                                {"id": "P-2", "type": "pump", "critical": True},
                            ],
                        }
                    ],
                },
                {
                    "id": "south",
                    "lines": [{"id": "L9", "machines": [{"id": "S-1", "type": "pump"}]}],
                },
            ],
            "technicians": techs if technicians else [],
        }
    )


def request(asset: str = "P-1", kind: str = "corrective", **fields: object) -> WorkOrderRequest:
    return WorkOrderRequest.model_validate(
        {"asset_id": asset, "type": kind, "title": "Fix it", **fields}
    )


def prediction(
    machine: str = "P-1",
    median: float = 150.0,
    lower: float = 90.0,
    mode: str | None = "seal_leak",
    p72: float = 0.2,
    p168: float = 0.68,
    at: datetime = PREDICTED,
) -> RulPrediction:
    """By default crosses P-1's policy both ways: median 150 h < 200 h, and P(failure
    within 100 h) = 0.2 + 0.48 * 28 / 96 = 0.34 > 0.3."""
    return RulPrediction(
        machine_id=machine,
        failure_mode=mode,
        median_hours=median,
        lower_hours=lower,
        upper_hours=max(300.0, median),
        survival_curve=[SurvivalPoint(hours=0, survival_probability=1.0)],
        failure_probability={24: 0.0, 72: p72, 168: p168, 336: max(p168, 0.9), 720: 1.0},
        model_version="v1",
        predicted_at=datetime_to_ms(at),
    )


def calm(machine: str = "P-1", mode: str | None = "seal_leak") -> RulPrediction:
    return prediction(machine, median=1000, lower=500, mode=mode, p72=0.0, p168=0.1)


def order(n: int, status: S = S.SCHEDULED, asset: str = "P-1", **fields: object) -> WorkOrder:
    return WorkOrder.model_validate(
        {
            "workorder_id": f"WO-2026-01-{n:04d}",
            "asset_id": asset,
            "type": "corrective",
            "title": f"order {n}",
            "status": status,
            "created_at": NOW,
            "completed_at": NOW if status is S.COMPLETED else None,
            "required_skills": ["mechanical", "seals"],
            **fields,
        }
    )


def change(workorder_id: str, **fields: object) -> UpdateWorkOrder:
    return UpdateWorkOrder.model_validate({"workorder_id": workorder_id, "actor": "ann", **fields})


# -- numbering -------------------------------------------------------------------------------


def test_ids_are_numbered_per_month_of_creation() -> None:
    book = WorkOrderBook(plant())
    jan, feb = NOW, datetime(2026, 2, 1, tzinfo=UTC)
    ids = [book.create(request(), t).workorder_id for t in (jan, jan, feb, jan, feb)]
    assert ids == [
        "WO-2026-01-0001",
        "WO-2026-01-0002",
        "WO-2026-02-0001",
        "WO-2026-01-0003",
        "WO-2026-02-0002",
    ]


def test_numbering_continues_after_the_highest_kept_order() -> None:
    book = WorkOrderBook(plant(), [order(7), order(3), order(41, S.CANCELLED)])
    assert book.next_id(NOW) == "WO-2026-01-0042"
    assert book.next_id(datetime(2025, 12, 31, 23, 59, tzinfo=UTC)) == "WO-2025-12-0001"


def test_numbers_beyond_four_digits_keep_counting() -> None:
    book = WorkOrderBook(plant(), [order(9999)])
    assert [book.next_id(NOW), book.next_id(NOW)] == ["WO-2026-01-10000", "WO-2026-01-10001"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([(2025, 12), (2026, 1), (2026, 2)]), max_size=30))
def test_each_month_counts_one_two_three(months: list[tuple[int, int]]) -> None:
    book = WorkOrderBook(plant())
    ids = [book.next_id(datetime(y, m, 15, tzinfo=UTC)) for y, m in months]
    assert len(set(ids)) == len(ids)
    for y, m in set(months):
        mine = [i for i in ids if i.startswith(f"WO-{y}-{m:02d}-")]
        assert [int(i.rsplit("-", 1)[1]) for i in mine] == list(range(1, len(mine) + 1))


# -- creation by hand ------------------------------------------------------------------------


def test_a_manual_order_without_a_failure_mode_is_a_two_hour_job() -> None:
    book = WorkOrderBook(plant())
    o = book.create(request(priority="high", description="leaks"), NOW)
    assert (o.workorder_id, o.asset_id, o.type, o.priority) == (
        "WO-2026-01-0001",
        "P-1",
        WorkOrderType.CORRECTIVE,
        Priority.HIGH,
    )
    assert (o.status, o.title, o.description, o.source) == (
        S.SCHEDULED,
        "Fix it",
        "leaks",
        "manual",
    )
    assert (o.estimated_duration_hours, o.required_skills, o.parts_required) == (2.0, [], [])
    assert (o.failure_mode, o.failure_prediction, o.due_by, o.not_before) == (None,) * 4
    assert (o.created_at, o.updated_at) == (NOW, NOW)
    # Labour at the mean rate of who can do it at north: T-1, T-2 and T-3 (50, 70, 90).
    assert (o.estimated_cost.labor, o.estimated_cost.parts) == (140.0, 0.0)
    assert book.get(o.workorder_id) == o


def test_a_manual_order_for_a_failure_mode_takes_the_catalogue_task() -> None:
    book = WorkOrderBook(plant())
    fp = FailurePrediction(probability=0.5, rul_hours=30, failure_mode=FailureMode.SEAL_LEAK)
    o = book.create(request(kind="predictive", failure_prediction=fp), NOW)
    assert o.failure_mode is FailureMode.SEAL_LEAK
    assert (o.estimated_duration_hours, o.required_skills) == (6.0, ["mechanical", "seals"])
    assert o.parts_required == [
        PartRequirement(part_number="SEAL-1"),
        PartRequirement(part_number="GASKET-2"),
    ]
    assert o.parts_reserved == o.parts_required
    # T-1 and T-2 have the skills at north: 6 h x (50 + 70) / 2 = 360
    assert (o.estimated_cost.labor, o.estimated_cost.parts) == (360.0, 450.0)
    assert o.due_by == NOW + timedelta(hours=30)  # a manual order: the predicted median


def test_what_the_request_says_wins_over_the_catalogue() -> None:
    book = WorkOrderBook(plant())
    fp = FailurePrediction(probability=0.5, rul_hours=30, failure_mode=FailureMode.BEARING_WEAR)
    later = NOW + timedelta(days=2)
    o = book.create(
        request(
            kind="predictive",
            failure_prediction=fp,
            required_skills=["electrical"],
            parts_required=[{"part_number": "X-9", "quantity": 2}],
            estimated_duration_hours=1.5,
            scheduled_date=later,
        ),
        NOW,
    )
    assert (o.required_skills, o.estimated_duration_hours, o.not_before) == (
        ["electrical"],
        1.5,
        later,
    )
    assert o.parts_required == [PartRequirement(part_number="X-9", quantity=2)]
    assert o.estimated_cost.labor == 135.0  # only T-3: 1.5 h x 90
    assert o.estimated_cost.parts == 120.0  # the catalogue's parts cost for bearing wear


def test_a_predictive_order_without_a_mode_is_an_inspection_sized_job() -> None:
    o = WorkOrderBook(plant()).create(request(kind="predictive"), NOW)
    assert (o.estimated_duration_hours, o.required_skills, o.parts_required) == (4.0, [], [])


def test_only_technicians_of_the_machines_site_count() -> None:
    book = WorkOrderBook(plant())
    fp = FailurePrediction(probability=0.5, rul_hours=30, failure_mode=FailureMode.SEAL_LEAK)
    o = book.create(request("S-1", kind="predictive", failure_prediction=fp), NOW)
    assert o.estimated_cost.labor == 6000.0  # T-4 alone: T-3 has no seals skill
    anywhere = book.create(request("S-1", required_skills=["electrical", "mechanical"]), NOW)
    assert anywhere.estimated_cost.labor == 180.0  # T-3, who works at any site: 2 h x 90
    with pytest.raises(Invalid) as e:
        book.create(request("S-1", required_skills=["welding"]), NOW)
    assert e.value.field == "required_skills"
    assert e.value.message == "no technician at site south has the skills welding"


def test_a_plant_without_technicians_takes_any_order_at_no_labour_cost() -> None:
    o = WorkOrderBook(plant(technicians=False)).create(request(required_skills=["welding"]), NOW)
    assert (o.required_skills, o.estimated_cost.labor) == (["welding"], 0.0)


def test_orders_may_wait_for_existing_orders_only() -> None:
    book = WorkOrderBook(plant())
    first = book.create(request(), NOW)
    second = book.create(request(after=[first.workorder_id]), NOW)
    assert second.after == [first.workorder_id]
    with pytest.raises(Invalid) as e:
        book.create(request(after=[first.workorder_id, "WO-2026-01-0099"]), NOW)
    assert (e.value.field, e.value.message) == (
        "after[1]",
        "work order 'WO-2026-01-0099' does not exist",
    )
    assert len(book.orders) == 2  # nothing kept, no number used
    assert book.next_id(NOW) == "WO-2026-01-0003"


def test_an_order_for_an_unknown_machine_is_refused() -> None:
    book = WorkOrderBook(plant())
    with pytest.raises(NotFound) as e:
        book.create(request("X-1"), NOW)
    assert (e.value.code, e.value.field, e.value.message) == (
        404,
        "asset_id",
        "asset 'X-1' does not exist",
    )
    assert book.orders == {}


def test_get_an_unknown_order() -> None:
    with pytest.raises(NotFound) as e:
        WorkOrderBook(plant()).get("WO-2026-01-0001")
    assert e.value.as_reply() == {
        "error": {
            "code": 404,
            "message": "work order 'WO-2026-01-0001' does not exist",
            "field": "workorder_id",
        }
    }


# -- creation by the policy --------------------------------------------------------------------


def test_a_prediction_crossing_the_policy_creates_one_predictive_order() -> None:
    book = WorkOrderBook(plant())
    result = book.consider(prediction(), NOW)
    assert result is not None
    o, created = result
    assert created and book.get(o.workorder_id) == o
    assert (o.type, o.source, o.asset_id) == (WorkOrderType.PREDICTIVE, "policy", "P-1")
    assert o.priority is Priority.HIGH  # lower bound 90 h: within 7 days, not 3
    assert o.due_by == PREDICTED + timedelta(hours=90)  # prediction time + lower bound
    assert o.title == "Repair seal leak on Feed pump"
    assert o.description == (
        "median RUL 150 h is below 200 h; P(failure within 100 h) = 0.34 is above 0.3 "
        "(model v1, predicted 2026-01-05T04:20+00:00; RUL 90-300 h at 90%)"
    )
    fp = o.failure_prediction
    assert fp is not None and fp.failure_mode is FailureMode.SEAL_LEAK
    assert fp.rul_hours == 150.0 and fp.probability == pytest.approx(0.34)
    assert (o.failure_mode, o.estimated_duration_hours) == (FailureMode.SEAL_LEAK, 6.0)
    assert (o.estimated_cost.labor, o.estimated_cost.parts) == (360.0, 450.0)
    assert book.open_predictive("P-1") == o
    # Once: a second crossing prediction updates it, it does not create another.
    again = book.consider(prediction(lower=60), NOW + timedelta(hours=1))
    assert again is not None and again[1] is False
    assert len(book.open_orders("P-1")) == 1


def test_a_prediction_that_does_not_cross_changes_nothing() -> None:
    book = WorkOrderBook(plant())
    assert book.consider(calm(), NOW) is None
    assert book.consider(prediction("X-1"), NOW) is None  # an unknown machine
    assert book.orders == {}


def test_a_critical_machine_gets_a_high_priority_even_far_from_failure() -> None:
    result = WorkOrderBook(plant()).consider(prediction("P-2", lower=150, median=150), NOW)
    assert result is not None and result[0].priority is Priority.HIGH
    result = WorkOrderBook(plant()).consider(prediction("P-1", lower=30), NOW)
    assert result is not None and result[0].priority is Priority.CRITICAL


def test_a_prediction_without_a_mode_repairs_the_generic_mode() -> None:
    result = WorkOrderBook(plant()).consider(prediction(mode=None), NOW)
    assert result is not None
    o = result[0]
    assert o.title == "Repair bearing wear on Feed pump"
    assert o.failure_mode is FailureMode.BEARING_WEAR
    assert (o.estimated_duration_hours, o.required_skills) == (3.0, ["mechanical"])


def test_later_predictions_keep_the_open_order_up_to_date_until_work_starts() -> None:
    book = WorkOrderBook(plant())
    created = book.consider(prediction(), NOW)
    assert created is not None
    wo = created[0].workorder_id
    t1, t2 = NOW + timedelta(hours=1), NOW + timedelta(hours=2)
    # Sooner: due earlier, more urgent.
    sooner = book.consider(prediction(lower=50, at=NOW), t1)
    assert sooner is not None and sooner[1] is False
    o = book.get(wo)
    assert (o.due_by, o.priority, o.updated_at) == (
        NOW + timedelta(hours=50),
        Priority.CRITICAL,
        t1,
    )
    assert o.failure_prediction is not None and o.failure_prediction.rul_hours == 150.0
    # Calmer: the due date follows, the priority is not lowered.
    assert book.consider(calm(), t2) is not None
    o = book.get(wo)
    assert (o.due_by, o.priority) == (PREDICTED + timedelta(hours=500), Priority.CRITICAL)
    assert o.failure_prediction is not None and o.failure_prediction.rul_hours == 1000.0
    # The same prediction again: nothing changed.
    assert book.consider(calm(), t2 + timedelta(hours=1)) is None
    # Another failure mode does not touch it.
    assert book.consider(prediction(mode="bearing_wear", lower=10), t2) is None
    # Once started, predictions leave it alone.
    book.update(change(wo, status="in_progress"), t2)
    assert book.consider(prediction(lower=5), t2 + timedelta(hours=1)) is None
    assert book.get(wo).due_by == PREDICTED + timedelta(hours=500)


def test_a_new_order_once_the_open_one_is_closed() -> None:
    book = WorkOrderBook(plant())
    first = book.consider(prediction(), NOW)
    assert first is not None
    book.update(change(first[0].workorder_id, status="completed"), NOW)
    assert book.open_predictive("P-1") is None
    second = book.consider(prediction(), NOW + timedelta(hours=1))
    assert second is not None and second[1] is True
    assert second[0].workorder_id == "WO-2026-01-0002"


# -- life cycle ------------------------------------------------------------------------------

ALLOWED = {
    (S.SCHEDULED, S.IN_PROGRESS),
    (S.SCHEDULED, S.COMPLETED),
    (S.SCHEDULED, S.CANCELLED),
    (S.IN_PROGRESS, S.COMPLETED),
    (S.IN_PROGRESS, S.CANCELLED),
}


@pytest.mark.parametrize("start", list(S))
@pytest.mark.parametrize("to", list(S))
def test_the_life_cycle(start: S, to: S) -> None:
    book = WorkOrderBook(plant(), [order(1, start)])
    later = NOW + timedelta(hours=3)
    if start is to:  # not a change of status
        o, completed = book.update(change("WO-2026-01-0001", status=to), later)
        assert (o.status, completed, o.updated_at) == (start, False, later)
    elif (start, to) in ALLOWED:
        o, completed = book.update(change("WO-2026-01-0001", status=to), later)
        assert o.status is to and book.get(o.workorder_id) == o
        assert completed == (to is S.COMPLETED)
        assert o.completed_at == (later if to is S.COMPLETED else None)
    else:
        with pytest.raises(Conflict) as e:
            book.update(change("WO-2026-01-0001", status=to), later)
        assert (e.value.code, e.value.field) == (409, "status")
        assert e.value.message == (
            f"work order WO-2026-01-0001 is {start.value}; it cannot become {to.value}"
        )
        assert book.get("WO-2026-01-0001").status is start


def test_completion_time_may_be_given() -> None:
    book = WorkOrderBook(plant(), [order(1, S.IN_PROGRESS)])
    done = NOW - timedelta(hours=1)
    o, completed = book.update(
        change("WO-2026-01-0001", status="completed", completed_at=done), NOW
    )
    assert completed and o.completed_at == done and o.updated_at == NOW


@pytest.mark.parametrize("status", [S.COMPLETED, S.CANCELLED])
@pytest.mark.parametrize(
    "fields",
    [
        {"priority": "high"},
        {"title": "New"},
        {"assigned_technician_id": "T-1"},
        {"estimated_duration_hours": 3},
    ],
    ids=["priority", "title", "technician", "duration"],
)
def test_a_closed_order_is_final(status: S, fields: dict[str, object]) -> None:
    book = WorkOrderBook(plant(), [order(1, status)])
    with pytest.raises(Conflict) as e:
        book.update(change("WO-2026-01-0001", **fields), NOW)
    assert e.value.message == f"work order WO-2026-01-0001 is {status.value}"
    assert e.value.field == "status"


def test_edits_of_an_open_order() -> None:
    book = WorkOrderBook(plant(), [order(1)])
    o, completed = book.update(
        change(
            "WO-2026-01-0001",
            priority="critical",
            title="Replace seal",
            description="urgent",
            estimated_duration_hours=5,
            assigned_technician_id="T-2",
        ),
        NOW,
    )
    assert not completed
    assert (o.priority, o.title, o.description, o.estimated_duration_hours) == (
        Priority.CRITICAL,
        "Replace seal",
        "urgent",
        5.0,
    )
    assert (o.assigned_technician_id, o.technician_pinned, o.status) == ("T-2", True, S.SCHEDULED)
    # Fields left out are unchanged.
    o, _ = book.update(change("WO-2026-01-0001", title="Again"), NOW)
    assert (o.priority, o.assigned_technician_id, o.description) == (
        Priority.CRITICAL,
        "T-2",
        "urgent",
    )


def test_an_assigned_technician_must_exist_and_have_the_skills() -> None:
    book = WorkOrderBook(plant(), [order(1, required_skills=["seals", "mechanical", "welding"])])
    with pytest.raises(NotFound) as e:
        book.update(change("WO-2026-01-0001", assigned_technician_id="T-9"), NOW)
    assert (e.value.field, e.value.message) == (
        "assigned_technician_id",
        "technician 'T-9' does not exist",
    )
    with pytest.raises(Invalid) as e2:
        book.update(change("WO-2026-01-0001", assigned_technician_id="T-3"), NOW)
    assert (e2.value.field, e2.value.message) == (
        "assigned_technician_id",
        "technician T-3 lacks the skills seals, welding",
    )
    assert book.get("WO-2026-01-0001").assigned_technician_id is None


def test_an_assigned_technician_must_work_at_the_machines_site() -> None:
    book = WorkOrderBook(plant(), [order(1, asset="P-1")])
    with pytest.raises(Invalid) as e:  # T-4 has the skills but works at south
        book.update(change("WO-2026-01-0001", assigned_technician_id="T-4"), NOW)
    assert e.value.field == "assigned_technician_id"
    assert "technician T-4 works at site south, not at P-1's site north" in str(e.value)


def test_updating_an_unknown_order() -> None:
    with pytest.raises(NotFound):
        WorkOrderBook(plant()).update(change("WO-2026-01-0001", title="x"), NOW)


# -- selection -------------------------------------------------------------------------------


def test_select_filters_and_orders_newest_id_first() -> None:
    book = WorkOrderBook(
        plant(),
        [
            order(1, asset="P-1"),
            order(2, S.COMPLETED, asset="P-2"),
            order(3, S.IN_PROGRESS, asset="P-1", assigned_technician_id="T-1"),
            order(4, S.CANCELLED, asset="P-1", type="predictive"),
            order(5, asset="P-2", type="predictive"),
        ],
    )

    def ids(**f: object) -> list[int]:
        chosen = book.select(WorkOrderFilter.model_validate(f))
        return [int(o.workorder_id[-4:]) for o in chosen]

    assert ids() == [5, 4, 3, 2, 1]
    assert ids(asset_id="P-1") == [4, 3, 1]
    assert ids(status=["scheduled", "in_progress"]) == [5, 3, 1]
    assert ids(type="predictive") == [5, 4]
    assert ids(technician_id="T-1") == [3]
    assert ids(asset_id="P-1", status=["cancelled"], type="predictive") == [4]
    assert ids(limit=2) == [5, 4]
    assert ids(asset_id="X-1") == []
    assert [o.workorder_id for o in book.open_orders()] == [
        "WO-2026-01-0001",
        "WO-2026-01-0003",
        "WO-2026-01-0005",
    ]
    assert [o.workorder_id for o in book.open_orders("P-2")] == ["WO-2026-01-0005"]
    open_predictive = book.open_predictive("P-2")
    assert open_predictive is not None and open_predictive.workorder_id == "WO-2026-01-0005"
    assert book.open_predictive("P-1") is None  # its predictive order is cancelled
