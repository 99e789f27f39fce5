"""The maintenance service against a real nats-server (JetStream): predictions and
anomalies in, alerts and scheduled work orders out, with an injectable clock."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from actors.bus import MAINTENANCE, ensure_jetstream
from actors.maintenance import MaintenanceService
from schemas import subjects
from schemas.alerts import Alert, AlertStatus
from schemas.anomaly import AnomalyRecord
from schemas.common import datetime_to_ms
from schemas.maintenance import WorkOrder
from schemas.plant import Plant, load_plant
from schemas.rul import FAILURE_HORIZONS_H, RulPrediction, SurvivalPoint
from twinfleet.cli import _example_plant_path
from twinfleet.services import NatsServer

# A Monday, 05:00 UTC: the north plant's day shift (06:00-14:00) starts in an hour.
T0 = datetime(2026, 11, 30, 5, 0, tzinfo=UTC)


class Clock:
    def __init__(self, t: datetime = T0):
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def plant() -> Plant:
    """The example plant, its limit alarms returning to normal after 60 quiet minutes
    (the example waits 12 h: a worn machine crosses its limits every day) so that these
    tests see a return to normal within the hour they watch."""
    example = load_plant(_example_plant_path())
    rules = [
        r.model_copy(update={"clear_after_minutes": 60}) if r.id == "limits" else r
        for r in example.alert_rules
    ]
    return example.model_copy(update={"alert_rules": rules})


def prediction(machine: str, at: datetime, median: float, lower: float) -> RulPrediction:
    """A Weibull-shaped survival curve with the given median and 5th percentile."""
    import math

    k = math.log(math.log(2) / -math.log(0.95)) / math.log(median / lower)
    scale = median / math.log(2) ** (1 / k)
    hours = [0, 12, 24, 48, 72, 120, 168, 240, 336, 500, 720, 1000]
    curve = [
        SurvivalPoint(hours=h, survival_probability=math.exp(-((h / scale) ** k))) for h in hours
    ]
    probs = {h: 1 - math.exp(-((h / scale) ** k)) for h in FAILURE_HORIZONS_H}
    upper = scale * (-math.log(0.05)) ** (1 / k)
    return RulPrediction(
        machine_id=machine,
        failure_mode="bearing_wear",
        median_hours=median,
        lower_hours=lower,
        upper_hours=upper,
        survival_curve=curve,
        failure_probability=probs,
        model_version="test-v1",
        predicted_at=datetime_to_ms(at),
    )


def anomaly(machine: str, sensor: str, at: datetime, severity: str = "critical") -> AnomalyRecord:
    return AnomalyRecord(
        machine_id=machine,
        sensor_id=f"{machine}.{sensor}",
        timestamp=datetime_to_ms(at),
        type="threshold",
        severity=severity,
        score=0.97,
        value=101.0,
        reason="above critical limit 75",
        detector="threshold",
    )


async def publish(url: str, items: list[tuple[str, bytes]]) -> None:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_jetstream(js)
    for subject, data in items:
        await js.publish(subject, data)
    await nc.drain()


async def until(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def request(url: str, operation: str, body: dict[str, Any]) -> dict[str, Any]:
    import nats

    nc = await nats.connect(url)
    try:
        msg = await nc.request(subjects.maintenance(operation), json.dumps(body).encode(), 20)
        return dict(json.loads(msg.data))
    finally:
        await nc.drain()


def run(
    server: NatsServer, body: Callable[[MaintenanceService, Clock], Awaitable[None]], **kw: Any
) -> None:
    async def main() -> None:
        clock = Clock()
        svc = await MaintenanceService(
            plant(), server.url, clock=clock, tick_s=3600, plan_time_limit_s=2, **kw
        ).start()
        try:
            await body(svc, clock)
        finally:
            await svc.stop()

    asyncio.run(main())


def test_a_degrading_machine_gets_exactly_one_predictive_order_scheduled_in_time(
    nats_server: NatsServer,
) -> None:
    """P-201 (a pump) degrades: each hourly prediction is worse. The first that crosses
    the policy (median below 168 h or P(fail in 7 days) above 0.3) creates one order; the
    later ones do not. The plan puts it before the RUL lower bound, with a north-plant
    technician who has the catalogue's skills, inside their shift."""
    medians = [900, 700, 520, 380, 260, 200, 170, 150]
    preds = [
        prediction("P-201", T0 - timedelta(hours=len(medians) - i), m, m * 0.45)
        for i, m in enumerate(medians)
    ]

    async def body(svc: MaintenanceService, clock: Clock) -> None:
        import nats

        nc = await nats.connect(nats_server.url)
        seen = await nc.subscribe(subjects.WORKORDER_ALL)
        await publish(
            nats_server.url,
            [(subjects.rul(p.machine_id), p.model_dump_json().encode()) for p in preds],
        )
        await until(lambda: svc.counters["rul_events"] == len(preds), "the predictions")
        orders = [o for o in svc.orders.orders.values() if o.asset_id == "P-201"]
        assert len(orders) == 1
        order = orders[0]
        assert order.type.value == "predictive" and order.source == "policy"
        assert order.failure_mode is not None and order.failure_mode.value == "bearing_wear"
        assert set(order.required_skills) == {"mechanical", "bearings"}
        assert [p.part_number for p in order.parts_required] == ["BRG-6312-C3", "BRG-NU312"]
        assert order.estimated_duration_hours == 6
        # Created by the first prediction that crossed the policy: median 260 h gives
        # P(fail within 168 h) above 0.3 with this curve, 380 h does not.
        crossing = next(
            p for p in preds if p.median_hours < 168 or p.failure_probability[168] > 0.3
        )
        latest = preds[-1]

        def due(p: RulPrediction) -> datetime:
            return datetime.fromtimestamp(p.predicted_at / 1000, UTC) + timedelta(
                hours=p.lower_hours
            )

        # Its latest safe finish follows the newest prediction.
        assert order.due_by == due(latest)
        assert order.failure_prediction is not None
        assert order.failure_prediction.rul_hours == latest.median_hours
        await svc.tick()  # the re-plan the new order asked for
        order = svc.orders.get(order.workorder_id)
        assert order.scheduled_date is not None and order.scheduled_end is not None
        assert order.due_by is not None and order.scheduled_end <= order.due_by
        tech = svc.orders.technicians[order.assigned_technician_id or ""]
        assert {"mechanical", "bearings"} <= set(tech.skills) and tech.site_id == "plant-north"
        assert order.unplaced_reason is None
        # Inside the technician's shift (north plant is UTC): T-01 06-14, T-03 22-06.
        assert order.scheduled_end - order.scheduled_date == timedelta(hours=6)
        start_h = order.scheduled_date.hour + order.scheduled_date.minute / 60
        if tech.id == "T-01":
            assert start_h >= 6 and start_h + 6 <= 14
        # Published on JetStream: created by the first crossing prediction, brought up to
        # date by each later one, then scheduled; and kept in the bucket.
        later = preds[preds.index(crossing) + 1 :]
        msgs = [
            WorkOrder.model_validate_json((await seen.next_msg(5)).data)
            for _ in range(2 + len(later))
        ]
        assert {m.workorder_id for m in msgs} == {order.workorder_id}
        assert [m.due_by for m in msgs[:-1]] == [due(p) for p in [crossing, *later]]
        assert msgs[-1] == order and [m.revision for m in msgs] == list(range(1, len(msgs) + 1))
        kv = await nc.jetstream().key_value(MAINTENANCE)
        stored = WorkOrder.model_validate_json((await kv.get(f"wo.{order.workorder_id}")).value)
        assert stored == order
        # The API sees the same over request/reply.
        reply = await request(nats_server.url, "workorders.list", {"asset_id": "P-201"})
        assert [o["workorder_id"] for o in reply["ok"]] == [order.workorder_id]
        # Alerts raised by the same predictions point at the order and were counted once.
        alerts = [a for a in svc.alerts.alerts.values() if a.machine_id == "P-201"]
        assert {a.rule_id for a in alerts} == {"rul-low", "failure-7d"}
        assert all(a.workorder_id == order.workorder_id for a in alerts if a.count == 1)
        await nc.drain()

    run(nats_server, body)


def test_repeats_of_a_condition_make_one_alert_with_a_count_and_survive_a_restart(
    nats_server: NatsServer,
) -> None:
    async def body(svc: MaintenanceService, clock: Clock) -> None:
        items = [
            (
                subjects.anomaly("P-202"),
                anomaly("P-202", "bearing_temp", T0 + timedelta(seconds=i))
                .model_dump_json()
                .encode(),
            )
            for i in range(5)
        ]
        items.append(
            (
                subjects.anomaly("P-202"),
                anomaly("P-202", "vibration", T0).model_dump_json().encode(),
            )
        )
        items.append(  # below the rule's minimum severity (medium): no alert
            (
                subjects.anomaly("P-202"),
                anomaly("P-202", "flow", T0, "low").model_dump_json().encode(),
            )
        )
        await publish(nats_server.url, items)
        await until(lambda: svc.counters["anomaly_events"] == 7, "the anomalies")
        alerts = sorted(svc.alerts.alerts.values(), key=lambda a: a.subject)
        assert [(a.subject, a.count) for a in alerts] == [
            ("bearing_temp", 5),
            ("vibration", 1),
        ]
        assert svc.counters["alerts_raised"] == 2 and svc.counters["alerts_repeated"] == 4
        # A condition sensor beyond its critical limit: one condition-based order (not one
        # per repeat, nor one more for the second sensor), and the alerts point at it.
        orders = [o for o in svc.orders.orders.values() if o.asset_id == "P-202"]
        assert [(o.type.value, o.source) for o in orders] == [("predictive", "condition")]
        assert {a.workorder_id for a in alerts} == {orders[0].workorder_id}
        hot = alerts[0]
        # Resolved: the next occurrence is a new alert.
        reply = await request(
            nats_server.url, "alerts.resolve", {"alert_id": hot.alert_id, "actor": "ana"}
        )
        assert reply["ok"]["status"] == "resolved"
        again = await request(
            nats_server.url, "alerts.resolve", {"alert_id": hot.alert_id, "actor": "ana"}
        )
        assert again["error"]["code"] == 409
        clock.t += timedelta(minutes=1)
        await publish(nats_server.url, [items[0]])
        await until(lambda: svc.counters["anomaly_events"] == 8, "the repeat")
        open_ = [
            a
            for a in svc.alerts.alerts.values()
            if a.subject == "bearing_temp" and a.status is AlertStatus.OPEN
        ]
        assert len(open_) == 1 and open_[0].count == 1 and open_[0].alert_id != hot.alert_id

    run(nats_server, body)

    async def restarted(svc: MaintenanceService, clock: Clock) -> None:
        # Reloaded from the bucket; the consumed events are not applied again. A barrier:
        # one new event (below the rules' severity: no alert) after the consumed ones; once
        # it is counted, a consumed event applied again would have been counted before it.
        barrier = anomaly("P-202", "flow", T0 + timedelta(minutes=10), "low")
        await publish(
            nats_server.url,
            [(subjects.anomaly("P-202"), barrier.model_dump_json().encode())],
        )
        await until(lambda: svc.counters["anomaly_events"] >= 1, "the barrier event")
        assert svc.counters["anomaly_events"] == 1
        counts = sorted((a.subject, a.status.value, a.count) for a in svc.alerts.alerts.values())
        assert counts == [
            ("bearing_temp", "open", 1),
            ("bearing_temp", "resolved", 5),
            ("vibration", "open", 1),
        ]

    run(nats_server, restarted)


def test_an_unacknowledged_critical_alert_escalates_on_time(nats_server: NatsServer) -> None:
    """Escalation after the plant's 30 minutes, then every 30 minutes; acknowledging it
    stops it. No sleeping: the clock is moved by hand and the service ticked."""

    async def body(svc: MaintenanceService, clock: Clock) -> None:
        import nats

        nc = await nats.connect(nats_server.url)
        notes = await nc.subscribe(subjects.NOTIFY_ALERT)
        await publish(
            nats_server.url,
            [
                (
                    subjects.anomaly("C-301"),
                    anomaly("C-301", "vibration", T0).model_dump_json().encode(),
                ),
                (
                    subjects.anomaly("C-302"),
                    anomaly("C-302", "vibration", T0).model_dump_json().encode(),
                ),
            ],
        )
        await until(lambda: svc.counters["anomaly_events"] == 2, "the anomalies")
        raised = [json.loads((await notes.next_msg(5)).data) for _ in range(2)]
        assert [n["event"] for n in raised] == ["raised", "raised"]
        c302 = next(a for a in svc.alerts.alerts.values() if a.machine_id == "C-302")
        await request(
            nats_server.url, "alerts.acknowledge", {"alert_id": c302.alert_id, "actor": "ben"}
        )
        await notes.next_msg(5)  # acknowledged
        clock.t = T0 + timedelta(minutes=29, seconds=59)
        await svc.tick()
        assert all(a.escalation_level == 0 for a in svc.alerts.alerts.values())
        clock.t = T0 + timedelta(minutes=30)
        await svc.tick()
        note = json.loads((await notes.next_msg(5)).data)
        assert note["event"] == "escalated"
        escalated = Alert.model_validate(note["alert"])
        assert escalated.machine_id == "C-301" and escalated.escalation_level == 1
        assert escalated.escalated_at == clock.t
        await svc.tick()  # not twice for the same period
        # The condition repeats at 50 min (so it has not returned to normal at 61).
        clock.t = T0 + timedelta(minutes=50)
        again = anomaly("C-301", "vibration", clock.t)
        await publish(
            nats_server.url, [(subjects.anomaly("C-301"), again.model_dump_json().encode())]
        )
        await until(lambda: svc.counters["anomaly_events"] == 3, "the repeat")
        clock.t = T0 + timedelta(minutes=61)
        await svc.tick()
        # C-301 escalates again; C-302 (acknowledged, so never escalated), quiet for 60
        # minutes, returned to normal (the limit rule, as plant() sets it).
        notes_61 = [json.loads((await notes.next_msg(5)).data) for _ in range(2)]
        by_machine = {n["alert"]["machine_id"]: n for n in notes_61}
        assert by_machine["C-301"]["event"] == "escalated"
        assert Alert.model_validate(by_machine["C-301"]["alert"]).escalation_level == 2
        assert by_machine["C-302"]["event"] == "resolved"
        assert by_machine["C-302"]["alert"]["resolved_by"] == "system"
        with pytest.raises(nats.errors.TimeoutError):
            await notes.next_msg(0.5)
        clock.t = T0 + timedelta(minutes=110)
        await svc.tick()
        note = json.loads((await notes.next_msg(5)).data)
        assert (note["event"], note["alert"]["machine_id"]) == ("resolved", "C-301")
        await nc.drain()

    run(nats_server, body)


def test_an_infeasible_plan_says_which_orders_and_why(nats_server: NatsServer) -> None:
    async def body(svc: MaintenanceService, clock: Clock) -> None:
        async def create(**request: Any) -> str:
            reply = await request_(
                nats_server.url, "workorders.create", {"actor": "ana", "request": request}
            )
            return str(reply["ok"]["work_order"]["workorder_id"])

        request_ = request
        # Not on a whole minute: shifts keep their full length in the plan all the same.
        clock.t = T0 + timedelta(seconds=13, microseconds=123_456)
        # The assembly line may be stopped only at night and at weekends; the only
        # electrician at the north plant works 14:00-22:00 on weekdays.
        rewind = await create(
            asset_id="M-101",
            type="corrective",
            title="Rewind",
            required_skills=["electrical"],
            estimated_duration_hours=16,
        )
        test_run = await create(
            asset_id="M-101", type="inspection", title="Test run", after=[rewind]
        )
        # 16 h on C-301 (utilities, no windows): two 8 h visits of the electrician.
        compressor = await create(
            asset_id="C-301",
            type="corrective",
            title="Rewind compressor motor",
            required_skills=["electrical"],
            estimated_duration_hours=16,
        )
        # Due in 30 minutes: nobody qualified is on shift before then (T0 is 05:00).
        urgent = prediction("P-203", T0, median=3, lower=0.5)
        await publish(nats_server.url, [(subjects.rul("P-203"), urgent.model_dump_json().encode())])
        await until(lambda: svc.counters["rul_events"] == 1, "the prediction")
        plan = (await request(nats_server.url, "replan", {"actor": "ana"}))["ok"]
        reasons = {u["workorder_id"]: u["reason"] for u in plan["unscheduled"]}
        assert "no shift of a qualified technician inside a production window" in reasons[rewind]
        assert reasons[test_run] == f"waits for {rewind}, which could not be placed"
        visits = [s for s in plan["scheduled"] if s["workorder_id"] == compressor]
        assert [(v["technician_id"], v["start"][11:16], v["end"][11:16]) for v in visits] == [
            ("T-02", "14:00", "22:00"),
            ("T-02", "14:00", "22:00"),
        ]
        assert visits[0]["start"] < visits[1]["start"]
        order = svc.orders.get(compressor)
        assert order.scheduled_end is not None and order.scheduled_date is not None
        assert order.scheduled_end - order.scheduled_date > timedelta(hours=16)
        p203 = next(o for o in svc.orders.orders.values() if o.asset_id == "P-203")
        assert "latest safe finish" in reasons[p203.workorder_id], reasons
        assert svc.orders.get(p203.workorder_id).unplaced_reason == reasons[p203.workorder_id]
        # The predictive one cannot be done safely: an alert for the planner says so (high:
        # the failure inside its lead time is the critical alert, not its consequence).
        schedule_alerts = [a for a in svc.alerts.alerts.values() if a.rule_id == "schedule"]
        assert [a.workorder_id for a in schedule_alerts] == [p203.workorder_id]
        assert schedule_alerts[0].severity.value == "high"
        # Bad requests are refused with the field named, and counted.
        bad = await request(
            nats_server.url,
            "workorders.create",
            {"actor": "ana", "request": {"asset_id": "M-101", "type": "repair", "title": "x"}},
        )
        assert bad["error"]["code"] == 422 and bad["error"]["field"] == "request.type"
        unknown = await request(
            nats_server.url,
            "workorders.create",
            {"actor": "ana", "request": {"asset_id": "M-999", "type": "corrective", "title": "x"}},
        )
        assert unknown["error"]["code"] == 404
        nobody = await request(
            nats_server.url,
            "workorders.create",
            {
                "actor": "ana",
                "request": {
                    "asset_id": "M-101",
                    "type": "corrective",
                    "title": "x",
                    "required_skills": ["welding"],
                },
            },
        )
        assert nobody["error"]["code"] == 422 and nobody["error"]["field"] == "required_skills"
        assert svc.counters["requests_refused"] == 3

    run(nats_server, body)


def test_a_completed_order_is_told_to_the_twin_once_and_closes_its_alerts(
    nats_server: NatsServer,
) -> None:
    told: list[tuple[str, str | None, int]] = []
    failures = [1]

    async def repairs(machine: str, mode: str | None, at_ms: int) -> None:
        if failures[0]:
            failures[0] -= 1
            raise ConnectionError("host restarting")
        told.append((machine, mode, at_ms))

    async def body(svc: MaintenanceService, clock: Clock) -> None:
        p = prediction("P-204", T0, median=150, lower=70)
        await publish(nats_server.url, [(subjects.rul("P-204"), p.model_dump_json().encode())])
        await until(lambda: svc.counters["rul_events"] == 1, "the prediction")
        order = next(o for o in svc.orders.orders.values() if o.asset_id == "P-204")
        base = {"workorder_id": order.workorder_id, "actor": "dana"}
        started = await request(
            nats_server.url, "workorders.update", {**base, "status": "in_progress"}
        )
        assert started["ok"]["status"] == "in_progress"
        clock.t = T0 + timedelta(hours=5)
        done = await request(nats_server.url, "workorders.update", {**base, "status": "completed"})
        assert done["ok"]["status"] == "completed"
        assert told == []  # the host was restarting: kept, and retried at the next tick
        again = await request(
            nats_server.url, "workorders.update", {**base, "status": "in_progress"}
        )
        assert again["error"]["code"] == 409
        alerts = [a for a in svc.alerts.alerts.values() if a.machine_id == "P-204"]
        assert alerts and all(a.status is AlertStatus.RESOLVED for a in alerts)

    run(nats_server, body, repairs=repairs)

    async def restarted(svc: MaintenanceService, clock: Clock) -> None:
        # The service stopped before it could tell the twin: the new one does, once.
        clock.t = T0 + timedelta(hours=6)
        await svc.tick()
        assert told == [("P-204", "bearing_wear", datetime_to_ms(T0 + timedelta(hours=5)))]
        await svc.tick()
        assert len(told) == 1
        # Closed records are forgotten by the service after 40 days (PostgreSQL keeps them).
        assert len(svc.orders.orders) == 1 and len(svc.alerts.alerts) == 2
        clock.t = T0 + timedelta(days=40, hours=4)
        await svc.tick()
        assert len(svc.orders.orders) == 1
        clock.t = T0 + timedelta(days=40, hours=6)
        await svc.tick()
        assert svc.orders.orders == {} and svc.alerts.alerts == {}
        assert svc._kv is not None  # left: the latest prediction and the consumed sequence
        assert sorted(await svc._kv.keys()) == ["rul.P-204", "seq.rul"]

    run(nats_server, restarted, repairs=repairs)


def test_threshold_and_no_data_rules_follow_the_twin_updates(nats_server: NatsServer) -> None:
    from actors.host import MachineHost
    from actors.host_actor import twin_event
    from schemas.telemetry import TelemetryBatch

    host = MachineHost([plant().machine("P-201")])

    def state(version: int, seal_temp: float, at: datetime) -> bytes:
        """What P-201's host actor publishes after applying a seal temperature."""
        batch = TelemetryBatch.model_validate(
            {
                "gateway_id": "gw-1",
                "site_id": "plant-north",
                "batch_id": f"b-{version}",
                "sent_at": datetime_to_ms(at),
                "readings": {
                    "machine_id": ["P-201"],
                    "sensor_id": ["P-201.seal_temp"],
                    "timestamp": [datetime_to_ms(at)],
                    "value": [seal_temp],
                },
            },
            context={"now_ms": datetime_to_ms(T0)},
        )
        twin = host.twins["P-201"]
        return twin_event("P-201", version, twin.apply(batch), twin)

    async def body(svc: MaintenanceService, clock: Clock) -> None:
        import nats

        nc = await nats.connect(nats_server.url)
        # Readings from an hour ago arriving now: data time is not arrival time.
        for version, temp in ((1, 70.0), (2, 85.0), (3, 86.0)):
            await nc.publish(
                subjects.twin("P-201"),
                state(version, temp, T0 - timedelta(hours=1, minutes=-version)),
            )
        await nc.publish(subjects.twin("P-201"), b"{not json")
        await nc.flush()
        await until(lambda: svc.counters["twin_rejected"] == 1, "the twin updates")
        hot = [a for a in svc.alerts.alerts.values() if a.rule_id == "hot-seal"]
        assert [(a.count, a.value, a.severity.value) for a in hot] == [(2, 86.0, "high")]
        await svc.tick()
        assert not [a for a in svc.alerts.alerts.values() if a.rule_id == "no-data"]
        clock.t = T0 + timedelta(minutes=10, seconds=1)
        await svc.tick()
        (silent,) = [a for a in svc.alerts.alerts.values() if a.rule_id == "no-data"]
        assert silent.machine_id == "P-201" and silent.status is AlertStatus.OPEN
        await nc.publish(subjects.twin("P-201"), state(4, 70.0, T0))
        await nc.flush()
        await until(lambda: svc.alerts.get(silent.alert_id).status.closed, "data returned")
        assert svc.alerts.get(silent.alert_id).resolved_by == "system"
        await nc.close()

    run(nats_server, body)


# -- plant time, false positives, shelving and KPIs over request/reply -----------------------
def run_on_plant_time(
    server: NatsServer,
    body: Callable[[MaintenanceService, Clock], Awaitable[None]],
    wall: Clock,
    **kw: Any,
) -> None:
    """Like :func:`run`, on the plant clock over the test's wall clock ``wall``."""
    from maintenance.alerts import PlantClock

    async def main() -> None:
        svc = await MaintenanceService(
            plant(), server.url, clock=PlantClock(wall), tick_s=3600, plan_time_limit_s=2, **kw
        ).start()
        try:
            await body(svc, wall)
        finally:
            await svc.stop()

    asyncio.run(main())


def test_in_a_replay_alerts_live_on_the_datas_time_and_a_restart_keeps_it(
    nats_server: NatsServer,
) -> None:
    """Two weeks of past data replayed while the wall clock stands still: the alert is
    raised, escalated and counted at the data's time, and the offset survives a restart."""
    past = T0 - timedelta(days=14)

    async def body(svc: MaintenanceService, wall: Clock) -> None:
        assert svc.clock() == T0  # nothing observed yet: the wall clock
        await publish(
            nats_server.url,
            [
                (
                    subjects.anomaly("C-301"),
                    anomaly("C-301", "vibration", past).model_dump_json().encode(),
                )
            ],
        )
        await until(lambda: svc.counters["anomaly_events"] == 1, "the anomaly")
        (alert,) = svc.alerts.alerts.values()
        assert alert.first_raised_at == past and svc.clock() == past
        await svc.tick()  # the wall clock is 14 days on: nothing escalates, nothing clears
        assert svc.alerts.get(alert.alert_id).escalation_level == 0
        later = past + timedelta(minutes=40)
        await publish(
            nats_server.url,
            [
                (
                    subjects.anomaly("C-301"),
                    anomaly("C-301", "vibration", later).model_dump_json().encode(),
                )
            ],
        )
        await until(lambda: svc.counters["anomaly_events"] == 2, "the repeat")
        await svc.tick()  # 40 minutes of plant time: one escalation period (30 min)
        escalated = svc.alerts.get(alert.alert_id)
        assert (escalated.escalation_level, escalated.escalated_at) == (1, later)
        status = await svc.status()
        assert status["plant_time"] == later.isoformat()
        assert status["plant_clock_offset_s"] == (later - T0).total_seconds()
        kpis = status["alarm_kpis"]
        assert kpis["raised"] == 1 and kpis["start"] == "2026-11-16T05:00:00.000Z"
        assert kpis["by_severity"][0] == {"severity": "critical", "raised": 1, "share": 1.0}
        assert any("1 alerts raised" in line for line in status["alarm_kpis_text"])
        assert any("failure-7d" in a for a in status["rule_advice"]) == (
            any(r.advice() for r in svc.plant.alert_rules)
        )

    run_on_plant_time(nats_server, body, Clock())

    async def restarted(svc: MaintenanceService, wall: Clock) -> None:
        # 50 minutes of wall time later, before any event: the stored offset holds
        assert svc.clock() == past + timedelta(minutes=90)
        await svc.tick()
        (alert,) = svc.alerts.alerts.values()
        assert alert.escalation_level == 3  # 90 plant minutes since it was raised
        assert alert.status is AlertStatus.OPEN  # quiet for 50 minutes, not the rule's 60

    run_on_plant_time(nats_server, restarted, Clock(T0 + timedelta(minutes=50)))


def test_a_false_positive_anomaly_is_told_to_the_twin_once_even_across_a_restart(
    nats_server: NatsServer,
) -> None:
    told: list[tuple[str, str | None, int]] = []
    failures = [1]

    async def false_positives(machine: str, sensor: str | None, at_ms: int) -> None:
        if machine == "P-203":
            raise ValueError(f"machine {machine} has no sensor {sensor!r}")  # a refusal
        if failures[0]:
            failures[0] -= 1
            raise ConnectionError("host restarting")
        told.append((machine, sensor, at_ms))

    machine_level = AnomalyRecord(
        machine_id="P-202",
        timestamp=datetime_to_ms(T0),
        type="multivariate",
        severity="critical",
        score=0.99,
        reason="sensors no longer move together",
        detector="pca",
    )

    async def body(svc: MaintenanceService, clock: Clock) -> None:
        await publish(
            nats_server.url,
            [
                (
                    subjects.anomaly("P-201"),
                    anomaly("P-201", "vibration", T0).model_dump_json().encode(),
                ),
                (subjects.anomaly("P-202"), machine_level.model_dump_json().encode()),
                (
                    subjects.anomaly("P-203"),
                    anomaly("P-203", "flow", T0).model_dump_json().encode(),
                ),
                (
                    subjects.rul("P-204"),
                    prediction("P-204", T0, 150, 70).model_dump_json().encode(),
                ),
            ],
        )
        await until(
            lambda: svc.counters["anomaly_events"] == 3 and svc.counters["rul_events"] == 1,
            "the events",
        )

        def alert_of(machine: str, kind: str = "anomaly") -> Alert:
            return next(
                a for a in svc.alerts.alerts.values() if a.machine_id == machine and a.kind == kind
            )

        # the machine-level condition is statistical: it waits out the rule's on-delay
        clock.t = T0 + timedelta(minutes=10)
        repeat = machine_level.model_copy(update={"timestamp": datetime_to_ms(clock.t)})
        await publish(
            nats_server.url, [(subjects.anomaly("P-202"), repeat.model_dump_json().encode())]
        )
        await until(lambda: svc.counters["anomaly_events"] == 4, "the repeat")
        assert alert_of("P-202").subject == "machine"
        vib = alert_of("P-201")
        clock.t = T0 + timedelta(minutes=12)
        reply = await request(
            nats_server.url,
            "alerts.resolve",
            {
                "alert_id": vib.alert_id,
                "actor": "ana",
                "note": "loose cable",
                "false_positive": True,
            },
        )
        assert reply["ok"]["status"] == "false_positive"
        assert told == [] and svc.counters["false_positives_retried"] == 1  # host restarting
        # a prediction's alert marked false positive is recorded, not told to a twin
        rul = alert_of("P-204", "rul_below")
        await request(
            nats_server.url,
            "alerts.resolve",
            {"alert_id": rul.alert_id, "actor": "ana", "false_positive": True},
        )
        assert svc.counters["false_positives_recorded_only"] == 1
        # a refusal is not asked again
        await request(
            nats_server.url,
            "alerts.resolve",
            {"alert_id": alert_of("P-203").alert_id, "actor": "ana", "false_positive": True},
        )
        assert svc.counters["false_positives_refused"] == 1
        assert "has no sensor 'flow'" in (svc.last_feedback_refusal or "")

    run(nats_server, body, false_positives=false_positives)

    async def restarted(svc: MaintenanceService, clock: Clock) -> None:
        await svc.tick()  # the stored feedback: told now, once
        at_ms = datetime_to_ms(T0 + timedelta(minutes=12))
        assert told == [("P-201", "vibration", at_ms)]
        await svc.tick()
        assert len(told) == 1 and svc.counters["false_positives_refused"] == 0
        p202 = next(a for a in svc.alerts.alerts.values() if a.machine_id == "P-202")
        reply = await request(
            nats_server.url,
            "alerts.resolve",
            {"alert_id": p202.alert_id, "actor": "ana", "false_positive": True},
        )
        assert reply["ok"]["subject"] == "machine"
        assert told[-1] == ("P-202", None, datetime_to_ms(T0))  # a machine-level condition
        assert svc._kv is not None
        assert not [k for k in await svc._kv.keys() if k.startswith("fp.")]

    run(nats_server, restarted, false_positives=false_positives)


def test_shelving_and_kpis_over_request_reply(nats_server: NatsServer) -> None:
    async def body(svc: MaintenanceService, clock: Clock) -> None:
        import nats

        nc = await nats.connect(nats_server.url)
        notes = await nc.subscribe(subjects.NOTIFY_ALERT)
        await publish(
            nats_server.url,
            [
                (
                    subjects.anomaly("C-301"),
                    anomaly("C-301", "vibration", T0).model_dump_json().encode(),
                )
            ],
        )
        await until(lambda: svc.counters["anomaly_events"] == 1, "the anomaly")
        assert json.loads((await notes.next_msg(5)).data)["event"] == "raised"
        (alert,) = svc.alerts.alerts.values()
        base = {"alert_id": alert.alert_id, "actor": "ana"}
        too_long = await request(
            nats_server.url, "alerts.shelve", {**base, "minutes": 1441, "reason": "x"}
        )
        assert too_long["error"]["code"] == 422 and too_long["error"]["field"] == "minutes"
        no_reason = await request(nats_server.url, "alerts.shelve", {**base, "minutes": 60})
        assert no_reason["error"]["field"] == "reason"
        shelved = await request(
            nats_server.url, "alerts.shelve", {**base, "minutes": 60, "reason": "recalibration"}
        )
        assert shelved["ok"]["shelved_until"] == "2026-11-30T06:00:00.000Z"
        assert json.loads((await notes.next_msg(5)).data)["event"] == "shelved"
        clock.t = T0 + timedelta(minutes=45)
        await svc.tick()
        with pytest.raises(nats.errors.TimeoutError):  # no escalation, no notification
            await notes.next_msg(0.5)
        back = await request(nats_server.url, "alerts.unshelve", base)
        assert back["ok"]["shelved_until"] is None
        assert json.loads((await notes.next_msg(5)).data)["event"] == "unshelved"
        again = await request(nats_server.url, "alerts.unshelve", base)
        assert again["error"]["code"] == 409
        kpis = await request(nats_server.url, "alerts.kpis", {})
        assert kpis["ok"]["raised"] == 1 and kpis["ok"]["end"] == "2026-11-30T05:45:00.000Z"
        bad = await request(
            nats_server.url,
            "alerts.kpis",
            {"start": "2026-11-30T06:00:00Z", "end": "2026-11-30T05:00:00Z"},
        )
        assert bad["error"]["code"] == 422
        long = await request(nats_server.url, "alerts.kpis", {"start": "2026-01-01T00:00:00Z"})
        assert long["error"]["field"] == "start" and "40 days" in long["error"]["message"]
        await nc.drain()

    run(nats_server, body)
