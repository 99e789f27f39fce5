"""The main job, for now: a simulated plant watched by its twins.

The plant simulator runs the example plant (52 machines) forward in time; a few machines
start with worn components. Every machine's readings go to its twin (hosted by a
:class:`~actors.host.MachineHost`); the twins' health, anomalies and remaining useful
life are printed as they evolve. A machine is *warned* when its twin predicts a probability
of failing within 7 days of 30 % or more, or a prediction crosses its type's maintenance
policy, or a condition sensor (vibration, temperature) is confirmed beyond its critical
limit (either would create a predictive work order). When a machine fails the demo says
whether, and how long before, it was warned; repairs done in the simulated plant are told
to the twins. The twins' anomalies and predictions go through the plant's alert rules on
simulated time (the maintenance service's alert book), and the demo ends with the alarm
KPIs and the warning lead times per failure (:mod:`maintenance.lead_times`).

The simulated gateway polls every sensor once per scan interval (``--step-minutes``), so
the demo sets each sensor's sampling period to that interval: the stale-sensor rule then
expects a reading per scan; and "no data" alert rules wait at least three intervals
(:func:`polled_alerting`; ``twinfleet up`` does the same). The learned detectors warm up
on a day (z-score baseline) and three days (PCA) of scans, so that they learn shifts and
load changes as normal.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from actors.host import MachineHost
from maintenance.alerts import AlertBook
from maintenance.kpis import alarm_kpis
from maintenance.lead_times import FailureVerdict, LeadTimeReport, LeadTimes
from maintenance.policy import condition_crossed, policy_crossed
from schemas.alerts import Alert, RuleKind
from schemas.anomaly import AnomalyRecord, Severity
from schemas.common import FailureMode, iso_utc
from schemas.maintenance_api import AlarmKpis
from schemas.plant import MachineSpec, Plant
from schemas.rul import RulPrediction
from schemas.twin import TwinChanged
from twinfleet.models import DEFAULT_LIVES, load_or_train
from twins.machine import MachineTwin, TwinConfig
from twins.simulator import PlantSimulator

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class DemoOutcome:
    warnings: LeadTimeReport
    alarms: AlarmKpis
    lines: list[str]
    alerts: list[Alert]

    @property
    def failures(self) -> list[FailureVerdict]:
        return self.warnings.failures


WORN_START = {"pump": 0.72, "compressor": 0.74, "motor": 0.86, "conveyor": 0.86}
"""Starting wear of the worn machines, by kind: enough to fail within a few weeks."""


def worn_start(plant: Plant, count: int) -> dict[str, dict[FailureMode, float]]:
    """Give ``count`` machines, spread over the plant and its machine kinds, one worn
    component each (the failure modes taken in turn)."""
    machines = [m for m in plant.machines if m.failure_modes]
    by_kind: dict[str, list[MachineSpec]] = {}
    for m in machines:
        by_kind.setdefault(m.kind.value, []).append(m)
    chosen: list[MachineSpec] = []
    rank = 0
    while len(chosen) < min(count, len(machines)):
        for group in by_kind.values():
            pick = group[(rank * 5 + 2) % len(group)]
            if len(chosen) < count and pick not in chosen:
                chosen.append(pick)
        rank += 1
    return {
        m.id: {m.failure_modes[i % len(m.failure_modes)]: WORN_START.get(m.kind.value, 0.75)}
        for i, m in enumerate(chosen)
    }


def _rul_text(twin: MachineTwin) -> str:
    rul = twin.rul
    if rul is None:
        return "RUL -"
    return (
        f"RUL {rul.median_hours:6.0f} h [{rul.lower_hours:5.0f}-{rul.upper_hours:6.0f}] "
        f"P7d {rul.failure_probability.get(168, 0.0):4.0%} {rul.failure_mode or ''}"
    )


def report(host: MachineHost, now_ms: int, top: int) -> list[str]:
    out: list[str] = []
    twins = list(host.twins.values())
    statuses = Counter(t.status().value for t in twins)
    fleet = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    out.append(f"\n== {iso_utc(now_ms)}  fleet: {fleet}")
    ranked = sorted(
        twins,
        key=lambda t: (
            -(t.rul.failure_probability.get(168, 0.0) if t.rul else 0.0),
            t.health_score,
        ),
    )
    out.append(f"   {'machine':8} {'type':16} {'status':8} {'health':>6}  remaining useful life")
    for twin in ranked[:top]:
        out.append(
            f"   {twin.machine_id:8} {twin.spec.type:16} {twin.status().value:8} "
            f"{twin.health_score:6.1f}  {_rul_text(twin)}"
        )
    return out


def polled_plant(plant: Plant, step_minutes: float) -> tuple[list[MachineSpec], TwinConfig]:
    """The plant's machines as a gateway polling every sensor each ``step_minutes`` (so
    the stale rule expects one reading per scan), and twin settings whose learned
    detectors fit on days of operation (shifts, weekends), not minutes."""
    step_s = step_minutes * 60.0
    polled = [
        m.model_copy(
            update={
                "sensors": [s.model_copy(update={"sample_period_s": step_s}) for s in m.sensors]
            }
        )
        for m in plant.machines
    ]
    per_day = int(24 * 60 / step_minutes)
    config = TwinConfig(zscore_warmup=max(per_day, 30), pca_fit_scans=max(3 * per_day, 200))
    return polled, config


NO_DATA_SCANS = 3
"""A gateway polling every scan interval is silent for a whole interval between scans: a
"no data" rule waits at least this many intervals."""


def polled_alerting(plant: Plant, step_minutes: float) -> Plant:
    """The plant with its "no data" rules waiting at least :data:`NO_DATA_SCANS` scan
    intervals (the example's 10 minutes suit sensors sampled every second, not a gateway
    polling every 10 minutes)."""
    least = NO_DATA_SCANS * step_minutes
    rules = [
        r.model_copy(update={"minutes": max(r.minutes, least)})
        if r.kind is RuleKind.NO_DATA and r.minutes is not None
        else r
        for r in plant.alert_rules
    ]
    return plant.model_copy(update={"alert_rules": rules})


def run(
    plant: Plant,
    data_dir: Path,
    *,
    days: float,
    step_minutes: float,
    report_hours: float,
    seed: int,
    worn: int,
    top: int,
    lives: int = DEFAULT_LIVES,
    echo: bool = True,
    start_ms: int = START_MS,
) -> DemoOutcome:
    lines: list[str] = []

    def say(text: str) -> None:
        lines.append(text)
        if echo:
            print(text, flush=True)

    say(
        f"twinfleet demo: plant {plant.name!r}, {len(plant.machines)} machines, "
        f"{days:g} days at {step_minutes:g}-minute scans (seed {seed})"
    )
    say("RUL models (survival, one per machine type):")
    models = load_or_train(plant, data_dir, seed=seed, lives=lives, log=say)
    initial = worn_start(plant, worn)
    say(
        "machines starting with a worn component: "
        + ", ".join(
            f"{m} ({', '.join(f'{k.value} {v:.0%}' for k, v in w.items())})"
            for m, w in initial.items()
        )
    )
    sim = PlantSimulator(plant, seed=seed, start_ms=start_ms, initial_wear=initial)
    step_s = step_minutes * 60.0
    polled, config = polled_plant(plant, step_minutes)
    host = MachineHost(polled, models=models, config=config)
    specs = {m.id: m for m in plant.machines}
    warnings = LeadTimes(start_ms=start_ms)
    book = AlertBook(polled_alerting(plant, step_minutes))
    anomalies: Counter[str] = Counter()
    steps = int(days * 24 * 60 / step_minutes)
    report_every = max(int(report_hours * 60 / step_minutes), 1)
    failures_seen = repairs_seen = 0
    period: Counter[str] = Counter()
    latest_critical: dict[str, AnomalyRecord] = {}
    readings = 0
    started = time.perf_counter()
    for step in range(1, steps + 1):
        for batch in sim.advance(step_s):
            readings += len(batch)
            outcome = host.apply(batch)
            for machine_id, result in outcome.results.items():
                for anomaly in result.anomalies:
                    anomalies[anomaly.type.value] += 1
                    period[anomaly.severity.value] += 1
                    book.on_anomaly(anomaly, _at(anomaly.timestamp))
                    why = condition_crossed(specs[machine_id], anomaly)
                    if why:  # what the maintenance service makes a condition-based order
                        warnings.work_order(machine_id, anomaly.timestamp, why)
                        say(f"   ! {iso_utc(anomaly.timestamp)} {machine_id} warned: {why}")
                    if anomaly.severity is Severity.CRITICAL:
                        latest_critical[machine_id] = anomaly
                if result.rul is not None:
                    _warned(warnings, specs[machine_id], result.rul, say)
                    book.on_rul(result.rul, _at(result.rul.predicted_at))
                twin = host.twins[machine_id]
                changed = TwinChanged(  # what a host actor publishes (twin_event)
                    machine_id=machine_id,
                    version=result.version,
                    last_update=twin.last_update_ms,
                    sensors=twin.readings(result.changed_index),
                    in_alarm=twin.in_alarm(),
                )
                book.on_twin(changed, _at(sim.now_ms))
        now = _at(sim.now_ms)
        book.check_no_data(now)
        book.unshelve_due(now)
        book.clear_quiet(now)
        book.escalate_due(now)
        for event in sim.failures[failures_seen:]:
            warnings.failure(event.machine_id, event.mode.value, event.timestamp_ms)
            say(
                f"   X {iso_utc(event.timestamp_ms)} {event.machine_id} FAILED ({event.mode.value})"
            )
        failures_seen = len(sim.failures)
        for job in sim.maintenance[repairs_seen:]:
            for mode in job.modes:
                host.twins[job.machine_id].record_repair(mode.value, job.timestamp_ms)
            warnings.repair(job.machine_id, job.timestamp_ms)
            say(
                f"   + {iso_utc(job.timestamp_ms)} {job.machine_id} {job.kind.value} maintenance: "
                f"{', '.join(m.value for m in job.modes)} restored"
            )
        repairs_seen = len(sim.maintenance)
        if step % report_every == 0 or step == steps:
            for line in report(host, sim.now_ms, top):
                say(line)
            say(
                "   anomalies since the last report: "
                + (", ".join(f"{n} {sev}" for sev, n in sorted(period.items())) or "none")
            )
            for anomaly in list(latest_critical.values())[:top]:
                say(_anomaly_line(anomaly))
            period.clear()
            latest_critical.clear()
    elapsed = time.perf_counter() - started
    say("\n== summary")
    say(
        f"   {readings:,} readings through {len(host.twins)} twins in {elapsed:.1f} s "
        f"({readings / max(elapsed, 1e-9):,.0f} readings/s including the simulator)"
    )
    say(
        "   anomalies by type: "
        + (", ".join(f"{k} {v}" for k, v in sorted(anomalies.items())) or "none")
    )
    verdicts = warnings.report(sim.now_ms)
    for line in verdicts.lines():
        say("   " + line)
    kpis = alarm_kpis(
        book.alerts.values(), {m.id: m.site for m in plant.machines}, _at(start_ms), now
    )
    for line in kpis.lines():
        say("   " + line)
    alerts = sorted(book.alerts.values(), key=lambda a: a.first_raised_at)
    critical = [a for a in alerts if a.severity is Severity.CRITICAL]
    if critical:
        say(f"   critical alerts ({len(critical)}):")
        for a in critical:
            when = f"{a.first_raised_at:%Y-%m-%d %H:%M}"
            say(f"     {when} {a.machine_id:7} {a.rule_id}: {a.message}")
    return DemoOutcome(verdicts, kpis, lines, alerts)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _warned(
    log: LeadTimes, spec: MachineSpec, rul: RulPrediction, say: Callable[[str], None]
) -> None:
    """Note a prediction in the warning log (and say when it starts a warning)."""
    before = len(log.episodes)
    log.prediction(
        rul.machine_id, rul.predicted_at, rul.failure_probability.get(168, 0.0), rul.failure_mode
    )
    why = policy_crossed(spec, rul)
    if why:
        log.work_order(rul.machine_id, rul.predicted_at, why)
    if len(log.episodes) > before:
        say(f"   ! {iso_utc(rul.predicted_at)} {rul.machine_id} warned: {log.episodes[-1].reason}")


def _anomaly_line(a: AnomalyRecord) -> str:
    where = a.sensor_id or a.machine_id
    return f"   ~ {iso_utc(a.timestamp)} {where}: {a.type.value} {a.severity.value} - {a.reason}"
