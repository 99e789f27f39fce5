"""The plant description: sites, lines, machines, their sensors, and technicians.

A plant file (YAML) declares *machine types* once (kind, rated values, sensors) and lists
machines by type, with per-machine overrides. :func:`load_plant` validates the file and
expands every machine into a full :class:`MachineSpec`. Any error names the file, the
path inside it and what is wrong::

    plant.yaml: sites[0].lines[1].machines[3].type: unknown machine type 'pmp'
    (known: motor-15kw, pump-75kw)

>>> spec = SensorSpec(name="bearing_temp", kind="temperature", unit="degC",
...                   normal_high=80, critical_high=95, sample_period_s=10)
>>> spec.critical_high
95.0
>>> SensorSpec(name="t", kind="temperature", unit="degC", normal_high=99, critical_high=95)
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for SensorSpec
  Value error, critical_high (95.0) must be at or above normal_high (99.0) ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.alerts import Alerting, AlertRule, default_rules
from schemas.common import FailureMode, Identifier, MachineKind, SensorKind, sensor_id
from schemas.maintenance import MaintenancePolicy, Shift, Technician
from schemas.mqtt import MqttAddress, MqttSettings, SparkplugAddress, SparkplugRule, TopicRule

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OpcUaAddress(_Strict):
    protocol: Literal["opcua"] = "opcua"
    node_id: Annotated[str, Field(min_length=1)] = Field(description='e.g. "ns=2;s=P-101.flow"')


class ModbusAddress(_Strict):
    protocol: Literal["modbus"] = "modbus"
    unit_id: Annotated[int, Field(ge=0, le=247)] = 1
    register_type: Literal["holding", "input", "coil", "discrete"] = "holding"
    address: Annotated[int, Field(ge=0, le=65535)]
    data_type: Literal["int16", "uint16", "int32", "uint32", "float32", "bool"] = "float32"
    byte_order: Literal["ABCD", "CDAB", "BADC", "DCBA"] = "ABCD"
    scale: Finite = 1.0
    offset: Finite = 0.0


ProtocolAddress = Annotated[
    OpcUaAddress | ModbusAddress | MqttAddress | SparkplugAddress,
    Field(discriminator="protocol"),
]


class SensorSpec(_Strict):
    """One sensor of a machine: what it measures, its limits and how often it reports.

    Limits: values inside ``[normal_low, normal_high]`` are normal; beyond the critical
    limits the machine is in danger. ``max_rate_per_s`` bounds a plausible rate of change
    (faster is a spike). ``stuck_after`` is how many identical readings in a row count as a
    flatline (0 disables the check, for example for set-points).
    """

    name: Identifier
    kind: SensorKind
    unit: Annotated[str, Field(min_length=1, max_length=32)]
    normal_low: Finite | None = None
    normal_high: Finite | None = None
    critical_low: Finite | None = None
    critical_high: Finite | None = None
    max_rate_per_s: PositiveFloat | None = None
    stuck_after: Annotated[int, Field(ge=0)] = 30
    sample_period_s: PositiveFloat = 1.0
    rated: Finite | None = Field(default=None, description="nameplate value, if any")
    address: ProtocolAddress | None = None

    @model_validator(mode="after")
    def _limits_ordered(self) -> Self:
        pairs = [
            ("normal_low", "normal_high"),
            ("critical_low", "normal_low"),
            ("normal_high", "critical_high"),
            ("critical_low", "critical_high"),
        ]
        for lo_name, hi_name in pairs:
            lo, hi = getattr(self, lo_name), getattr(self, hi_name)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{hi_name} ({hi}) must be at or above {lo_name} ({lo})")
        return self


class RatedValues(_Strict):
    """Nameplate and reliability figures of a machine."""

    power_kw: PositiveFloat | None = None
    rpm: PositiveFloat | None = None
    current_a: PositiveFloat | None = None
    voltage_v: PositiveFloat | None = None
    power_factor: Annotated[float, Field(gt=0, le=1)] = 0.85
    flow_m3h: PositiveFloat | None = None
    pressure_bar: PositiveFloat | None = None
    mtbf_hours: PositiveFloat | None = None


class MaintenanceTask(_Strict):
    """What repairing one failure mode takes (the machine type's maintenance catalogue)."""

    failure_mode: FailureMode
    skills: list[Identifier] = Field(default_factory=list)
    parts: list[Identifier] = Field(default_factory=list)
    duration_hours: PositiveFloat = 4.0
    parts_cost: Annotated[float, Field(ge=0)] = 0.0


class OperatingConditionSpec(_Strict):
    """Which sensors (or set-points) say at what operating point a machine runs.

    The same machine reads differently at another load, speed or flow set-point. Its twin
    groups what these sensors read into *operating regimes* (idle and start-up are
    regimes too), judges every other sensor against what is normal in the regime it is
    in, and holds its learned detectors while the machine settles after a change of
    regime (a start-up or a load step is not an anomaly).

    ``regime_width`` is the width of a regime in units of each condition sensor's scale
    (its ``rated`` value, else its normal range, else its magnitude when first seen):
    readings within it belong to the same regime. ``settle_minutes`` is how long readings
    are transient after a regime change.

    >>> OperatingConditionSpec(sensors=["load_setpoint"]).settle_minutes
    90.0
    >>> OperatingConditionSpec(sensors=[])
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for OperatingConditionSpec
    sensors
      List should have at least 1 item after validation, not 0 ...
    """

    sensors: Annotated[list[Identifier], Field(min_length=1, max_length=8)]
    regime_width: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.1
    settle_minutes: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 90.0
    max_regimes: Annotated[int, Field(ge=1, le=32)] = 8


class MachineType(_Strict):
    """A class of asset declared once in the plant file and shared by its machines."""

    kind: MachineKind
    rated: RatedValues = RatedValues()
    sensors: Annotated[list[SensorSpec], Field(min_length=1)]
    failure_modes: list[FailureMode] = Field(default_factory=list)
    maintenance: list[MaintenanceTask] = Field(default_factory=list)
    policy: MaintenancePolicy = MaintenancePolicy()
    operating_condition: OperatingConditionSpec | None = None

    @model_validator(mode="after")
    def _unique_sensors(self) -> Self:
        _no_duplicates([s.name for s in self.sensors], "sensors", "name")
        _condition_sensors_known(self.operating_condition, [s.name for s in self.sensors])
        return self


class MachineEntry(_Strict):
    """A machine as written in the plant file: a type plus overrides."""

    id: Identifier
    name: str | None = None
    type: Identifier
    rated: dict[str, Any] = Field(default_factory=dict, description="overrides of the type")
    sensors: list[dict[str, Any]] = Field(
        default_factory=list,
        description="per-sensor overrides by name (or extra sensors with a full spec)",
    )
    critical: bool = False
    installed_hours: Annotated[float, Field(ge=0)] = 0.0


class LineSpec(_Strict):
    id: Identifier
    name: str | None = None
    maintenance_windows: list[Shift] = Field(
        default_factory=list,
        description="weekly windows (site time) when the line's machines may be stopped "
        "for planned work; empty: any time",
    )
    machines: list[MachineEntry] = Field(default_factory=list)


class SiteSpec(_Strict):
    id: Identifier
    name: str | None = None
    timezone: str = "UTC"
    lines: list[LineSpec] = Field(default_factory=list)


class MachineSpec(_Strict):
    """A machine with everything resolved: where it is, its type, rated values, sensors.

    >>> m = MachineSpec(id="M-1", type="motor-15kw", kind="motor", site="a", line="l1",
    ...     sensors=[SensorSpec(name="rpm", kind="speed", unit="rpm")])
    >>> m.sensor_ids()
    ['M-1.rpm']
    """

    id: Identifier
    name: str | None = None
    type: Identifier
    kind: MachineKind
    site: Identifier
    line: Identifier
    rated: RatedValues = RatedValues()
    sensors: Annotated[list[SensorSpec], Field(min_length=1)]
    failure_modes: list[FailureMode] = Field(default_factory=list)
    maintenance: list[MaintenanceTask] = Field(default_factory=list)
    policy: MaintenancePolicy = MaintenancePolicy()
    maintenance_windows: list[Shift] = Field(default_factory=list)
    critical: bool = False
    installed_hours: Annotated[float, Field(ge=0)] = 0.0
    operating_condition: OperatingConditionSpec | None = None

    @model_validator(mode="after")
    def _condition_known(self) -> Self:
        _condition_sensors_known(self.operating_condition, [s.name for s in self.sensors])
        return self

    def condition_indices(self) -> list[int]:
        """Column indices of the operating-condition sensors (empty without any)."""
        if self.operating_condition is None:
            return []
        names = [s.name for s in self.sensors]
        return [names.index(n) for n in self.operating_condition.sensors]

    def sensor_ids(self) -> list[str]:
        return [sensor_id(self.id, s.name) for s in self.sensors]

    def sensor(self, name: str) -> SensorSpec:
        for s in self.sensors:
            if s.name == name:
                return s
        raise KeyError(f"machine {self.id} has no sensor {name!r}")


class PlantFile(_Strict):
    """The plant file as written (before machine types are expanded)."""

    name: str = "plant"
    machine_types: dict[Identifier, MachineType]
    sites: Annotated[list[SiteSpec], Field(min_length=1)]
    technicians: list[Technician] = Field(default_factory=list)
    alert_rules: list[AlertRule] = Field(default_factory=default_rules)
    alerting: Alerting = Alerting()
    mqtt: MqttSettings = MqttSettings()


class Plant(BaseModel):
    """A validated plant: every machine expanded, ids unique."""

    model_config = ConfigDict(frozen=True)

    name: str
    sites: list[SiteSpec]
    machine_types: dict[str, MachineType]
    machines: list[MachineSpec]
    technicians: list[Technician]
    alert_rules: list[AlertRule] = Field(default_factory=default_rules)
    alerting: Alerting = Alerting()
    mqtt: MqttSettings = MqttSettings()

    def site(self, site_id: str) -> SiteSpec:
        for s in self.sites:
            if s.id == site_id:
                return s
        raise KeyError(f"no site {site_id!r} in plant {self.name!r}")

    def machine(self, machine_id: str) -> MachineSpec:
        for m in self.machines:
            if m.id == machine_id:
                return m
        raise KeyError(f"no machine {machine_id!r} in plant {self.name!r}")


class PlantFileError(ValueError):
    """A plant file failed validation; ``problems`` lists (path, message) pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [
            f"{source}: {path}: {msg}" if path else f"{source}: {msg}" for path, msg in problems
        ]
        super().__init__("\n".join(lines))


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _report_duplicates(
    problems: list[tuple[str, str]], where: str, what: str, ids: list[str]
) -> None:
    first: dict[str, int] = {}
    for i, value in enumerate(ids):
        if value in first:
            problems.append(
                (
                    f"{where}[{i}].id",
                    f"duplicate {what} id {value!r} (first at {where}[{first[value]}])",
                )
            )
        else:
            first[value] = i


def _condition_sensors_known(condition: OperatingConditionSpec | None, names: list[str]) -> None:
    if condition is None:
        return
    _no_duplicates(condition.sensors, "operating_condition.sensors", "name")
    unknown = [n for n in condition.sensors if n not in names]
    if unknown:
        raise ValueError(
            f"operating_condition.sensors: {unknown[0]!r} is not a sensor of this machine "
            f"(sensors: {', '.join(names)})"
        )


def _no_duplicates(values: list[str], where: str, what: str) -> None:
    seen: set[str] = set()
    for i, v in enumerate(values):
        if v in seen:
            raise ValueError(f"{where}[{i}].{what}: duplicate {what} {v!r}")
        seen.add(v)


def _expand_machine(
    entry: MachineEntry, mtype: MachineType, site: str, line: LineSpec, path: str
) -> MachineSpec:
    sensors = {s.name: s.model_dump() for s in mtype.sensors}
    # Where each merged sensor came from in the file, so that an error points there.
    origin = {
        s.name: f"machine_types.{entry.type}.sensors[{k}]" for k, s in enumerate(mtype.sensors)
    }
    overridden: dict[str, int] = {}
    for i, override in enumerate(entry.sensors):
        name = override.get("name")
        if not isinstance(name, str):
            raise _PathError(f"{path}.sensors[{i}].name", "a sensor override needs a name")
        if name in overridden:
            raise _PathError(
                f"{path}.sensors[{i}].name",
                f"duplicate sensor override {name!r} (first at {path}.sensors[{overridden[name]}])",
            )
        overridden[name] = i
        sensors[name] = {**sensors.get(name, {}), **override}
        origin[name] = f"{path}.sensors[{i}]"
    try:
        return MachineSpec.model_validate(
            {
                "id": entry.id,
                "name": entry.name,
                "type": entry.type,
                "kind": mtype.kind,
                "site": site,
                "line": line.id,
                "rated": {**mtype.rated.model_dump(), **entry.rated},
                "sensors": list(sensors.values()),
                "failure_modes": mtype.failure_modes,
                "maintenance": mtype.maintenance,
                "policy": mtype.policy,
                "maintenance_windows": line.maintenance_windows,
                "critical": entry.critical,
                "installed_hours": entry.installed_hours,
                "operating_condition": mtype.operating_condition,
            }
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        if len(loc) >= 2 and loc[0] == "sensors" and isinstance(loc[1], int):
            # loc[1] indexes the merged list; report the override (or type) it came from.
            where = origin[list(sensors)[loc[1]]]
            rest = _loc_to_path(loc[2:])
            raise _PathError(f"{where}.{rest}" if rest else where, err["msg"]) from None
        raise _PathError(f"{path}.{_loc_to_path(loc)}", err["msg"]) from None


class _PathError(Exception):
    def __init__(self, path: str, message: str):
        super().__init__(path, message)
        self.path, self.message = path, message


def parse_plant(data: Any, source: str = "<plant>") -> Plant:
    """Validate a plant description already parsed from YAML/JSON."""
    try:
        raw = PlantFile.model_validate(data)
    except ValidationError as exc:
        raise PlantFileError(
            source, [(_loc_to_path(tuple(e["loc"])), e["msg"]) for e in exc.errors()]
        ) from None
    problems: list[tuple[str, str]] = []
    machines: list[MachineSpec] = []
    seen_machines: dict[str, str] = {}
    for si, site in enumerate(raw.sites):
        for li, line in enumerate(site.lines):
            for mi, entry in enumerate(line.machines):
                path = f"sites[{si}].lines[{li}].machines[{mi}]"
                if entry.id in seen_machines:
                    first = seen_machines[entry.id]
                    problems.append(
                        (f"{path}.id", f"duplicate machine id {entry.id!r} (first at {first})")
                    )
                    continue
                seen_machines[entry.id] = path
                mtype = raw.machine_types.get(entry.type)
                if mtype is None:
                    known = ", ".join(sorted(raw.machine_types)) or "none"
                    problems.append(
                        (f"{path}.type", f"unknown machine type {entry.type!r} (known: {known})")
                    )
                    continue
                try:
                    machines.append(_expand_machine(entry, mtype, site.id, line, path))
                except _PathError as exc:
                    problems.append((exc.path, exc.message))
    _report_duplicates(problems, "sites", "site", [s.id for s in raw.sites])
    for si, site in enumerate(raw.sites):
        _report_duplicates(problems, f"sites[{si}].lines", "line", [li.id for li in site.lines])
    _report_duplicates(problems, "technicians", "technician", [t.id for t in raw.technicians])
    site_ids = {s.id for s in raw.sites}
    for i, tech in enumerate(raw.technicians):
        if tech.site_id is not None and tech.site_id not in site_ids:
            problems.append((f"technicians[{i}].site_id", f"unknown site {tech.site_id!r}"))
    _report_duplicates(problems, "alert_rules", "alert rule", [r.id for r in raw.alert_rules])
    for i, rule in enumerate(raw.alert_rules):
        for j, t in enumerate(rule.machine_types):
            if t not in raw.machine_types:
                problems.append((f"alert_rules[{i}].machine_types[{j}]", f"unknown type {t!r}"))
        for j, m in enumerate(rule.machines):
            if m not in seen_machines:
                problems.append((f"alert_rules[{i}].machines[{j}]", f"unknown machine {m!r}"))
        if rule.sensor is not None and not any(
            rule.applies_to(m.id, m.type) and rule.sensor in {s.name for s in m.sensors}
            for m in machines
        ):
            problems.append(
                (f"alert_rules[{i}].sensor", f"no machine it applies to has sensor {rule.sensor!r}")
            )
    ruled: list[tuple[str, list[SparkplugRule | TopicRule]]] = [
        ("sparkplug", list(raw.mqtt.sparkplug)),
        ("topics", list(raw.mqtt.topics)),
    ]
    for kind, rules in ruled:
        for i, r in enumerate(rules):
            for j, t in enumerate(r.machine_types):
                if t not in raw.machine_types:
                    problems.append((f"mqtt.{kind}[{i}].machine_types[{j}]", f"unknown type {t!r}"))
    if problems:
        raise PlantFileError(source, problems)
    return Plant(
        name=raw.name,
        sites=raw.sites,
        machine_types=dict(raw.machine_types),
        machines=machines,
        technicians=raw.technicians,
        alert_rules=raw.alert_rules,
        alerting=raw.alerting,
        mqtt=raw.mqtt,
    )


class _PlantLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping (PyYAML would
    silently keep the last one, dropping, say, a whole machine type)."""


def _construct_unique_mapping(loader: _PlantLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *defaults" may be overridden
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in first_line:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first on line {first_line[key] + 1})",
                    key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line
        except TypeError:  # an unhashable key: construct_mapping reports it
            pass
    return loader.construct_mapping(node, deep=True)


_PlantLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_unique_mapping,
)


def load_plant(path: str | Path) -> Plant:
    """Read and validate a plant file (YAML).

    A YAML error is reported at its line and column (``plant.yaml: line 4, column 7: not
    valid YAML: ...``); any other problem at its path inside the document.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise PlantFileError(str(path), [("", f"cannot read the file: {reason}")]) from None
    except UnicodeDecodeError as exc:
        raise PlantFileError(
            str(path), [(f"byte {exc.start}", "cannot read the file: it is not UTF-8 text")]
        ) from None
    try:
        data = yaml.load(text, Loader=_PlantLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = exc.problem or exc.context or "unreadable"
        raise PlantFileError(str(path), [(where, f"not valid YAML: {what}")]) from None
    except yaml.YAMLError as exc:
        raise PlantFileError(str(path), [("", f"not valid YAML: {exc}")]) from None
    if not isinstance(data, dict):
        found = "nothing" if data is None else f"a {type(data).__name__}"
        raise PlantFileError(
            str(path), [("", f"the file must hold a mapping at the top level, not {found}")]
        )
    return parse_plant(data, source=str(path))
