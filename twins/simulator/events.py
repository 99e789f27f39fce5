"""What happened in a simulated plant: failures, maintenance, and corrupted readings.

These records are the simulator's *ground truth*, kept for evaluating twins (did the twin
warn before the failure? did the detector flag the stuck sensor?). Twins never see them.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.common import FailureMode
from schemas.maintenance import WorkOrderType
from twins.simulator.faults import SensorFault


@dataclass(frozen=True, slots=True)
class FailureEvent:
    """A machine broke down: ``mode`` reached wear 1 at ``timestamp_ms``, after
    ``age_hours`` operating hours.

    >>> FailureEvent("P-201", FailureMode.SEAL_LEAK, 1_700_000_000_000, 812.5).mode.value
    'seal_leak'
    """

    machine_id: str
    mode: FailureMode
    timestamp_ms: int
    age_hours: float


@dataclass(frozen=True, slots=True)
class MaintenanceEvent:
    """Maintenance done on a machine: ``modes`` restored at ``timestamp_ms``.

    ``kind`` is ``corrective`` for a repair after a failure and ``preventive`` otherwise;
    ``wear_before`` is the wear of the maintained modes just before the job.

    >>> e = MaintenanceEvent("M-101", (FailureMode.BEARING_WEAR,), 1_700_000_000_000,
    ...                      WorkOrderType.PREVENTIVE, {FailureMode.BEARING_WEAR: 0.71})
    >>> e.kind.value, e.wear_before[FailureMode.BEARING_WEAR]
    ('preventive', 0.71)
    """

    machine_id: str
    modes: tuple[FailureMode, ...]
    timestamp_ms: int
    kind: WorkOrderType
    wear_before: dict[FailureMode, float]


@dataclass(frozen=True, slots=True)
class InjectedFault:
    """A reading the simulator corrupted on purpose (``reported_value`` is ``None`` for a
    dropout: the reading was never sent).

    >>> InjectedFault("M-101.vibration", 1_700_000_000_000, SensorFault.SPIKE, 2.1, 8.4).fault
    <SensorFault.SPIKE: 1>
    """

    sensor_id: str
    timestamp_ms: int
    fault: SensorFault
    true_value: float
    reported_value: float | None

    @property
    def machine_id(self) -> str:
        return self.sensor_id.split(".", 1)[0]
