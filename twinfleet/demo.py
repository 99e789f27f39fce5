"""The main job, for now: a simulated plant watched by its twins.

The plant simulator runs the example plant (52 machines) forward in time; a few machines
start with worn components. Every machine's readings go to its twin (hosted by a
:class:`~actors.host.MachineHost`); the twins' health, anomalies and remaining useful
life are printed as they evolve. When a machine fails the demo says whether, and how long
before, its twin flagged it. A machine is *flagged* when its twin predicts a probability
of failing within 7 days of 30 % or more, or its health stays below 60 for an hour.

The simulated gateway polls every sensor once per scan interval (``--step-minutes``), so
the demo sets each sensor's sampling period to that interval: the stale-sensor rule then
expects a reading per scan. The learned detectors warm up on a day (z-score baseline) and
three days (PCA) of scans, so that they learn shifts and load changes as normal.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from actors.host import MachineHost
from schemas.anomaly import AnomalyRecord, AnomalyType, Severity
from schemas.common import FailureMode, iso_utc
from schemas.plant import MachineSpec, Plant
from twinfleet.models import DEFAULT_LIVES, load_or_train
from twins.machine import MachineTwin, TwinConfig
from twins.simulator import PlantSimulator

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
FLAG_HEALTH = 60.0
FLAG_HEALTH_HOURS = 1.0
FLAG_P7D = 0.3


@dataclass(frozen=True)
class Failure:
    """A failure in the run and how long before it the twin flagged the machine."""

    machine: str
    mode: str
    timestamp_ms: int
    lead_hours: float | None


@dataclass(frozen=True)
class DemoOutcome:
    failures: list[Failure]
    flagged_not_failed: list[str]
    lines: list[str]


@dataclass
class Watch:
    """What the demo remembers per machine to judge the twins afterwards."""

    first_flag_ms: int | None = None
    flag_reason: str = ""
    unhealthy_since_ms: int | None = None
    anomalies: Counter[str] = field(default_factory=Counter)

    def flag(self, twin: MachineTwin, now_ms: int) -> str | None:
        """Why this machine is flagged now, if it is."""
        rul = twin.rul
        if rul is not None and rul.failure_probability.get(168, 0.0) >= FLAG_P7D:
            return f"P(fail 7d) {rul.failure_probability[168]:.0%}, {rul.failure_mode}"
        if twin.health_score >= FLAG_HEALTH:
            self.unhealthy_since_ms = None
            return None
        if self.unhealthy_since_ms is None:
            self.unhealthy_since_ms = now_ms
        if now_ms - self.unhealthy_since_ms >= FLAG_HEALTH_HOURS * 3_600_000:
            return f"health below {FLAG_HEALTH:.0f} for {FLAG_HEALTH_HOURS:g} h"
        return None


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
    sim = PlantSimulator(plant, seed=seed, start_ms=START_MS, initial_wear=initial)
    step_s = step_minutes * 60.0
    polled, config = polled_plant(plant, step_minutes)
    host = MachineHost(polled, models=models, config=config)
    watch = {m.id: Watch() for m in plant.machines}
    steps = int(days * 24 * 60 / step_minutes)
    report_every = max(int(report_hours * 60 / step_minutes), 1)
    failures_seen = 0
    repairs_seen = 0
    period: Counter[str] = Counter()
    latest_critical: dict[str, AnomalyRecord] = {}
    outcomes: list[Failure] = []
    readings = 0
    started = time.perf_counter()
    for step in range(1, steps + 1):
        for batch in sim.advance(step_s):
            readings += len(batch)
            outcome = host.apply(batch)
            for machine_id, result in outcome.results.items():
                for anomaly in result.anomalies:
                    watch[machine_id].anomalies[anomaly.type.value] += 1
                    period[anomaly.severity.value] += 1
                    if (
                        anomaly.severity is Severity.CRITICAL
                        and anomaly.type is not AnomalyType.SPIKE
                    ):
                        latest_critical[machine_id] = anomaly
        now_ms = sim.now_ms
        for machine_id, twin in host.twins.items():
            w = watch[machine_id]
            if w.first_flag_ms is None:
                reason = w.flag(twin, now_ms)
                if reason:
                    w.first_flag_ms, w.flag_reason = now_ms, reason
                    say(
                        f"   ! {iso_utc(now_ms)} twin flags {machine_id}: {reason}; "
                        f"{_rul_text(twin)}"
                    )
        for event in sim.failures[failures_seen:]:
            w = watch[event.machine_id]
            lead = (
                None
                if w.first_flag_ms is None
                else (event.timestamp_ms - w.first_flag_ms) / 3_600_000
            )
            outcomes.append(Failure(event.machine_id, event.mode.value, event.timestamp_ms, lead))
            verdict = (
                f"flagged {lead:.0f} h before ({w.flag_reason})"
                if lead is not None
                else "NOT flagged before"
            )
            say(
                f"   X {iso_utc(event.timestamp_ms)} {event.machine_id} "
                f"FAILED ({event.mode.value}); "
                f"its twin {verdict}"
            )
        failures_seen = len(sim.failures)
        for job in sim.maintenance[repairs_seen:]:
            for mode in job.modes:
                host.twins[job.machine_id].record_repair(mode.value, job.timestamp_ms)
            watch[job.machine_id] = Watch(anomalies=watch[job.machine_id].anomalies)
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
    flagged_ok = [o for o in outcomes if o.lead_hours is not None]
    failed = {o.machine for o in outcomes}
    flagged_not_failed = sorted(
        m for m, w in watch.items() if w.first_flag_ms is not None and m not in failed
    )
    say("\n== summary")
    say(
        f"   {readings:,} readings through {len(host.twins)} twins in {elapsed:.1f} s "
        f"({readings / max(elapsed, 1e-9):,.0f} readings/s including the simulator)"
    )
    say(f"   failures: {len(outcomes)}; flagged before failing: {len(flagged_ok)}")
    for o in outcomes:
        lead = o.lead_hours
        say(
            f"     {o.machine:8} {o.mode:20} "
            + (f"lead time {lead:.0f} h" if lead is not None else "no warning")
        )
    say(
        f"   flagged and not (yet) failed at the end: {len(flagged_not_failed)}"
        + (f" ({', '.join(flagged_not_failed)})" if flagged_not_failed else "")
    )
    anomaly_totals = sum((w.anomalies for w in watch.values()), Counter())
    say(
        "   anomalies by type: "
        + (", ".join(f"{k} {v}" for k, v in sorted(anomaly_totals.items())) or "none")
    )
    return DemoOutcome(outcomes, flagged_not_failed, lines)


def _anomaly_line(a: AnomalyRecord) -> str:
    where = a.sensor_id or a.machine_id
    return f"   ~ {iso_utc(a.timestamp)} {where}: {a.type.value} {a.severity.value} - {a.reason}"
