"""The plant simulator: machines that wear out, fail and report their sensors.

Pure and seeded (numpy and scipy only, no I/O): the same inputs and seed give the same
outputs. One concept per module:

- :mod:`~twins.simulator.load`: :class:`LoadProfile`, a machine's load over the week;
- :mod:`~twins.simulator.state`: :class:`DegradationState`, wear per failure mode;
- :mod:`~twins.simulator.degradation`: :class:`DegradationModel`, gamma-process wear
  accelerated by load and heat (the parametrisation is documented there);
- :mod:`~twins.simulator.scenario`: :class:`Scenario` and :class:`MaintenanceAction`, the
  inputs of a what-if projection;
- :mod:`~twins.simulator.projection`: :class:`Projection`, many futures summarised;
- :mod:`~twins.simulator.signals`: :class:`SignalModel`, sensor values from load, ambient
  and wear;
- :mod:`~twins.simulator.faults`: :class:`SensorFaults`, spikes, drift, stuck sensors and
  dropouts, with their ground truth;
- :mod:`~twins.simulator.events`: failures, maintenance and injected faults (ground truth);
- :mod:`~twins.simulator.plant`: :class:`PlantSimulator`, a whole plant producing
  telemetry batches, failures and repairs;
- :mod:`~twins.simulator.lives`: :func:`run_to_failure`, run-to-failure histories for
  training remaining-useful-life models.
"""

from twins.simulator.degradation import (
    DEFAULT_FAILURE_MODES,
    DegradationModel,
    failure_modes_for,
)
from twins.simulator.events import FailureEvent, InjectedFault, MaintenanceEvent
from twins.simulator.faults import FaultState, SensorFault, SensorFaults
from twins.simulator.lives import Life, run_to_failure
from twins.simulator.load import LoadProfile
from twins.simulator.plant import PlantSimulator, profile_hours
from twins.simulator.projection import Projection
from twins.simulator.scenario import MaintenanceAction, Scenario
from twins.simulator.signals import KEY_SENSORS, KNOWN_SENSORS, SignalModel
from twins.simulator.state import DegradationState

__all__ = [
    "DEFAULT_FAILURE_MODES",
    "KEY_SENSORS",
    "KNOWN_SENSORS",
    "DegradationModel",
    "DegradationState",
    "FailureEvent",
    "FaultState",
    "InjectedFault",
    "Life",
    "LoadProfile",
    "MaintenanceAction",
    "MaintenanceEvent",
    "PlantSimulator",
    "Projection",
    "Scenario",
    "SensorFault",
    "SensorFaults",
    "SignalModel",
    "failure_modes_for",
    "profile_hours",
    "run_to_failure",
]
