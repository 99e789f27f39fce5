"""What-if scenarios: how a machine will be run and maintained from now on.

A :class:`Scenario` is the input of :meth:`DegradationModel.project
<twins.simulator.degradation.DegradationModel.project>`: a load factor on the machine's
load profile, the ambient temperature, planned :class:`MaintenanceAction` s, components
replaced right away and fixed sensor values for signal simulations. Every field is checked
when the scenario is built; a bad one raises ``ValueError`` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from schemas.common import FailureMode
from twins.simulator._checks import failure_mode, finite


@dataclass(frozen=True, slots=True)
class MaintenanceAction:
    """A planned maintenance job: at ``at_hours`` after the scenario starts, bring the wear
    of ``component`` (or of every failure mode when ``None``: an overhaul) down to
    ``restore_to``.

    >>> MaintenanceAction(at_hours=336, component="bearing_wear")
    MaintenanceAction(at_hours=336.0, component=<FailureMode.BEARING_WEAR: 'bearing_wear'>,
                      restore_to=0.05)
    >>> MaintenanceAction(at_hours=-1, component=None)
    Traceback (most recent call last):
    ...
    ValueError: at_hours must be a finite number >= 0, got -1
    """

    at_hours: float
    component: FailureMode | None = None
    restore_to: float = 0.05

    def __post_init__(self) -> None:
        if not finite(self.at_hours) or self.at_hours < 0:
            raise ValueError(f"at_hours must be a finite number >= 0, got {self.at_hours!r}")
        object.__setattr__(self, "at_hours", float(self.at_hours))
        if self.component is not None:
            object.__setattr__(self, "component", failure_mode(self.component, "component"))
        if not finite(self.restore_to) or not 0.0 <= self.restore_to < 1.0:
            raise ValueError(f"restore_to must be in [0, 1), got {self.restore_to!r}")
        object.__setattr__(self, "restore_to", float(self.restore_to))


@dataclass(frozen=True, slots=True)
class Scenario:
    """How the machine is run and maintained over a projection.

    ``load_factor`` multiplies the machine's load profile (1.2 = 20 % more load);
    ``ambient_c`` is the surrounding air temperature; ``actions`` are planned maintenance
    jobs; ``replaced`` lists components replaced with new ones (wear 0) at the start;
    ``sensor_overrides`` pins sensors (by name) to fixed values in signal simulations.

    >>> s = Scenario(load_factor=1.2, actions=(MaintenanceAction(336, "bearing_wear"),))
    >>> s.load_factor, len(s.actions), s.replaced
    (1.2, 1, ())
    >>> Scenario(load_factor=0)
    Traceback (most recent call last):
    ...
    ValueError: load_factor must be a finite number > 0, got 0
    """

    load_factor: float = 1.0
    ambient_c: float = 25.0
    actions: tuple[MaintenanceAction, ...] = ()
    replaced: tuple[FailureMode, ...] = ()
    sensor_overrides: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not finite(self.load_factor) or self.load_factor <= 0:
            raise ValueError(f"load_factor must be a finite number > 0, got {self.load_factor!r}")
        object.__setattr__(self, "load_factor", float(self.load_factor))
        if not finite(self.ambient_c) or not -60.0 <= self.ambient_c <= 80.0:
            raise ValueError(
                f"ambient_c must be a temperature in [-60, 80] °C, got {self.ambient_c!r}"
            )
        object.__setattr__(self, "ambient_c", float(self.ambient_c))
        actions = tuple(self.actions)
        for i, action in enumerate(actions):
            if not isinstance(action, MaintenanceAction):
                raise ValueError(f"actions[{i}] must be a MaintenanceAction, got {action!r}")
        object.__setattr__(self, "actions", tuple(sorted(actions, key=lambda a: a.at_hours)))
        replaced = tuple(
            failure_mode(m, f"replaced[{i}]") for i, m in enumerate(tuple(self.replaced))
        )
        object.__setattr__(self, "replaced", replaced)
        overrides: dict[str, float] = {}
        for name, value in dict(self.sensor_overrides).items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"sensor_overrides keys must be sensor names, got {name!r}")
            if not finite(value):
                raise ValueError(
                    f"sensor_overrides[{name!r}] must be a finite number, got {value!r}"
                )
            overrides[name] = float(value)
        object.__setattr__(self, "sensor_overrides", overrides)
