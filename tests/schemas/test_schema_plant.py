"""Plant files: the shipped example loads; every broken file names the file, the path
inside it and what is wrong."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import twinfleet
from schemas import subjects
from schemas.common import SENSOR_ID_PATTERN, SensorKind
from schemas.plant import Plant, PlantFileError, load_plant, parse_plant

EXAMPLE = Path(twinfleet.__file__).parent / "plants" / "example.yaml"

PROPERTY = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=40,
)

M0 = "sites[0].lines[0].machines[0]"
M1 = "sites[0].lines[0].machines[1]"


def plant_doc() -> dict[str, Any]:
    """A small valid plant: two machine types, one site, two lines, three machines."""
    return {
        "name": "test plant",
        "machine_types": {
            "pump-75kw": {
                "kind": "pump",
                "rated": {"power_kw": 75, "rpm": 2970, "flow_m3h": 120},
                "sensors": [
                    {"name": "flow", "kind": "flow", "unit": "m3/h", "normal_low": 60},
                    {
                        "name": "bearing_temp",
                        "kind": "temperature",
                        "unit": "degC",
                        "normal_high": 80,
                        "critical_high": 95,
                        "sample_period_s": 10,
                    },
                ],
                "failure_modes": ["bearing_wear", "seal_leak"],
            },
            "motor-15kw": {
                "kind": "motor",
                "sensors": [{"name": "current", "kind": "current", "unit": "A"}],
            },
        },
        "sites": [
            {
                "id": "plant-a",
                "lines": [
                    {
                        "id": "line-1",
                        "machines": [
                            {"id": "P-101", "type": "pump-75kw"},
                            {"id": "P-102", "type": "pump-75kw"},
                        ],
                    },
                    {"id": "line-2", "machines": [{"id": "M-201", "type": "motor-15kw"}]},
                ],
            }
        ],
        "technicians": [
            {"id": "T-01", "name": "Ana Silva", "skills": ["bearings"], "site_id": "plant-a"}
        ],
    }


def write(tmp_path: Path, doc: Any, name: str = "plant.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc), encoding="utf-8")
    return path


def problems_of(path: Path) -> tuple[str, list[tuple[str, str]]]:
    """Load a file that must fail; return the error text and its (path, message) pairs."""
    with pytest.raises(PlantFileError) as info:
        load_plant(path)
    err = info.value
    assert err.source == str(path)
    text = str(err)
    for line in text.splitlines():
        assert line.startswith(f"{path}: "), line
    return text, err.problems


def assert_problem(path: Path, where: str, what: str) -> None:
    """The file, the path inside it and the reason all appear, on one line of the error."""
    text, problems = problems_of(path)
    assert any(p == where and re.search(what, m) for p, m in problems), problems
    assert any(
        line.startswith(f"{path}: {where}: ") and re.search(what, line)
        for line in text.splitlines()
    ), text


# --- the shipped example ---------------------------------------------------------------------


def test_the_shipped_example_loads() -> None:
    plant = load_plant(EXAMPLE)
    assert plant.machines, "the example declares no machines"
    ids = [m.id for m in plant.machines]
    assert len(ids) == len(set(ids))
    site_ids = {s.id for s in plant.sites}
    for machine in plant.machines:
        assert machine.type in plant.machine_types
        assert machine.site in site_ids
        for sid in machine.sensor_ids():
            assert re.fullmatch(SENSOR_ID_PATTERN, sid)
        assert subjects.telemetry(machine.site, machine.id).endswith(f".{machine.id}")
    for tech in plant.technicians:
        assert tech.site_id is None or tech.site_id in site_ids
    assert Plant.model_validate_json(plant.model_dump_json()) == plant


# --- good files --------------------------------------------------------------------------------


def test_a_valid_plant_expands_every_machine(tmp_path: Path) -> None:
    plant = load_plant(write(tmp_path, plant_doc()))
    assert [m.id for m in plant.machines] == ["P-101", "P-102", "M-201"]
    p101 = plant.machine("P-101")
    assert (p101.site, p101.line, p101.kind, p101.type) == (
        "plant-a",
        "line-1",
        "pump",
        "pump-75kw",
    )
    assert p101.sensor_ids() == ["P-101.flow", "P-101.bearing_temp"]
    assert p101.rated.power_kw == 75
    assert plant.machine("M-201").line == "line-2"
    assert plant.technicians[0].site_id == "plant-a"
    with pytest.raises(KeyError):
        plant.machine("P-999")


def test_sensor_and_rated_overrides_are_applied_to_one_machine_only(tmp_path: Path) -> None:
    doc = plant_doc()
    doc["sites"][0]["lines"][0]["machines"][0].update(
        rated={"power_kw": 90},
        sensors=[
            {"name": "bearing_temp", "normal_high": 85, "critical_high": 100},
            {"name": "vibration", "kind": "vibration", "unit": "mm/s", "critical_high": 11.2},
        ],
    )
    plant = load_plant(write(tmp_path, doc))
    p101, p102 = plant.machine("P-101"), plant.machine("P-102")
    temp = p101.sensor("bearing_temp")
    assert (temp.normal_high, temp.critical_high) == (85, 100)
    assert temp.sample_period_s == 10  # untouched fields come from the type
    assert temp.kind is SensorKind.TEMPERATURE
    assert p101.sensor_ids() == ["P-101.flow", "P-101.bearing_temp", "P-101.vibration"]
    assert p101.sensor("vibration").critical_high == 11.2
    assert p101.rated.power_kw == 90 and p101.rated.rpm == 2970
    # the type and the other machine of the type are unchanged
    assert (p102.sensor("bearing_temp").normal_high, p102.rated.power_kw) == (80, 75)
    assert plant.machine_types["pump-75kw"].sensors[1].normal_high == 80
    assert p102.sensor_ids() == ["P-102.flow", "P-102.bearing_temp"]


def test_yaml_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    """Overriding a merged key is not a duplicate key."""
    merged = """
machine_types:
  motor-15kw:
    kind: motor
    sensors:
      - &winding {name: winding_temp, kind: temperature, unit: degC, critical_high: 155}
      - <<: *winding
        name: housing_temp
        critical_high: 90
sites: [{id: a, lines: [{id: l1, machines: [{id: M-1, type: motor-15kw}]}]}]
"""
    plant = load_plant(write(tmp_path, merged, "merged.yaml"))
    housing = plant.machine("M-1").sensor("housing_temp")
    assert (housing.unit, housing.critical_high) == ("degC", 90)


@PROPERTY
@given(
    normal_high=st.floats(-1e6, 1e6, allow_nan=False),
    critical_high=st.floats(-1e6, 1e6, allow_nan=False),
)
def test_override_limits_are_accepted_iff_ordered(normal_high: float, critical_high: float) -> None:
    doc = plant_doc()
    doc["sites"][0]["lines"][0]["machines"][1]["sensors"] = [
        {"name": "bearing_temp", "normal_high": normal_high, "critical_high": critical_high}
    ]
    if normal_high <= critical_high:
        temp = parse_plant(doc, "p.yaml").machine("P-102").sensor("bearing_temp")
        assert (temp.normal_high, temp.critical_high) == (normal_high, critical_high)
    else:
        with pytest.raises(PlantFileError) as info:
            parse_plant(doc, "p.yaml")
        ((where, what),) = info.value.problems
        assert where == f"{M1}.sensors[0]"
        assert f"critical_high ({critical_high}) must be at or above normal_high" in what


# --- broken files ------------------------------------------------------------------------------


def test_unknown_machine_type(tmp_path: Path) -> None:
    doc = plant_doc()
    doc["sites"][0]["lines"][0]["machines"][1]["type"] = "pmp"
    path = write(tmp_path, doc)
    assert_problem(
        path, f"{M1}.type", re.escape("unknown machine type 'pmp' (known: motor-15kw, pump-75kw)")
    )


def test_duplicate_machine_id_across_lines(tmp_path: Path) -> None:
    doc = plant_doc()
    doc["sites"][0]["lines"][1]["machines"][0]["id"] = "P-101"
    assert_problem(
        write(tmp_path, doc),
        "sites[0].lines[1].machines[0].id",
        re.escape(f"duplicate machine id 'P-101' (first at {M0})"),
    )


@pytest.mark.parametrize(
    ("where", "edit"),
    [
        ("sites[1].id", lambda d: d["sites"].append(copy.deepcopy(d["sites"][0]) | {"lines": []})),
        (
            "sites[0].lines[1].id",
            lambda d: d["sites"][0]["lines"][1].update(id="line-1"),
        ),
        ("technicians[1].id", lambda d: d["technicians"].append(d["technicians"][0])),
    ],
)
def test_duplicate_site_line_and_technician_ids(tmp_path: Path, where: str, edit: Any) -> None:
    doc = plant_doc()
    edit(doc)
    assert_problem(write(tmp_path, doc), where, "duplicate (site|line|technician) id")


def test_normal_high_above_critical_high_in_a_type(tmp_path: Path) -> None:
    doc = plant_doc()
    doc["machine_types"]["pump-75kw"]["sensors"][1]["normal_high"] = 99
    assert_problem(
        write(tmp_path, doc),
        "machine_types.pump-75kw.sensors[1]",
        re.escape("critical_high (95.0) must be at or above normal_high (99.0)"),
    )


def test_normal_high_above_critical_high_in_an_override(tmp_path: Path) -> None:
    """The path points at the override as written, not at the merged sensor list."""
    doc = plant_doc()
    doc["sites"][0]["lines"][0]["machines"][0]["sensors"] = [
        {"name": "bearing_temp", "normal_high": 120}
    ]
    assert_problem(
        write(tmp_path, doc),
        f"{M0}.sensors[0]",
        re.escape("critical_high (95.0) must be at or above normal_high (120.0)"),
    )


def test_bad_override_value_is_reported_at_its_path(tmp_path: Path) -> None:
    doc = plant_doc()
    doc["sites"][0]["lines"][0]["machines"][1]["sensors"] = [
        {"name": "flow", "normal_low": 10},
        {"name": "bearing_temp", "critical_high": "hot"},
    ]
    assert_problem(
        write(tmp_path, doc), f"{M1}.sensors[1].critical_high", "Input should be a valid number"
    )


@pytest.mark.parametrize(
    ("override", "where", "what"),
    [
        ({"name": "flow", "colour": "red"}, ".sensors[0].colour", "Extra inputs"),
        ({"kind": "flow"}, ".sensors[0].name", "a sensor override needs a name"),
        ({"name": "noise", "kind": "sound", "unit": "dB"}, ".sensors[0].kind", "Input should be"),
        ({"name": "noise", "kind": "other"}, ".sensors[0].unit", "Field required"),
        ({"name": "bad name", "kind": "other", "unit": "x"}, ".sensors[0].name", "pattern"),
    ],
)
def test_bad_sensor_overrides(
    tmp_path: Path, override: dict[str, Any], where: str, what: str
) -> None:
    doc = plant_doc()
    doc["sites"][0]["lines"][0]["machines"][0]["sensors"] = [override]
    assert_problem(write(tmp_path, doc), M0 + where, what)


def test_a_sensor_overridden_twice(tmp_path: Path) -> None:
    doc = plant_doc()
    doc["sites"][0]["lines"][0]["machines"][0]["sensors"] = [
        {"name": "flow", "normal_low": 10},
        {"name": "flow", "normal_low": 20},
    ]
    assert_problem(
        write(tmp_path, doc),
        f"{M0}.sensors[1].name",
        re.escape(f"duplicate sensor override 'flow' (first at {M0}.sensors[0])"),
    )


def test_bad_rated_override(tmp_path: Path) -> None:
    doc = plant_doc()
    doc["sites"][0]["lines"][0]["machines"][0]["rated"] = {"power_kw": -5}
    assert_problem(write(tmp_path, doc), f"{M0}.rated.power_kw", "greater than 0")


def test_unknown_sensor_kind(tmp_path: Path) -> None:
    doc = plant_doc()
    doc["machine_types"]["motor-15kw"]["sensors"][0]["kind"] = "smell"
    assert_problem(
        write(tmp_path, doc),
        "machine_types.motor-15kw.sensors[0].kind",
        "Input should be 'vibration', 'temperature'",
    )


def test_unknown_machine_kind(tmp_path: Path) -> None:
    doc = plant_doc()
    doc["machine_types"]["motor-15kw"]["kind"] = "robot"
    assert_problem(write(tmp_path, doc), "machine_types.motor-15kw.kind", "Input should be")


@pytest.mark.parametrize(
    ("where", "edit"),
    [
        (f"{M1}.type", lambda d: d["sites"][0]["lines"][0]["machines"][1].pop("type")),
        ("sites[0].lines[1].id", lambda d: d["sites"][0]["lines"][1].pop("id")),
        (
            "machine_types.pump-75kw.sensors[0].unit",
            lambda d: d["machine_types"]["pump-75kw"]["sensors"][0].pop("unit"),
        ),
        (
            "machine_types.motor-15kw.sensors",
            lambda d: d["machine_types"]["motor-15kw"].pop("sensors"),
        ),
        ("sites", lambda d: d.pop("sites")),
        ("technicians[0].name", lambda d: d["technicians"][0].pop("name")),
    ],
)
def test_missing_required_field(tmp_path: Path, where: str, edit: Any) -> None:
    doc = plant_doc()
    edit(doc)
    assert_problem(write(tmp_path, doc), where, "Field required")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    doc = plant_doc()
    doc["defaults"] = {"unit": "degC"}
    assert_problem(write(tmp_path, doc), "defaults", "Extra inputs are not permitted")


def test_unknown_field_in_a_machine(tmp_path: Path) -> None:
    doc = plant_doc()
    doc["sites"][0]["lines"][0]["machines"][1]["colour"] = "blue"
    assert_problem(write(tmp_path, doc), f"{M1}.colour", "Extra inputs are not permitted")


@pytest.mark.parametrize("bad", ["P.101", "P 101", "P*", ">", ""])
def test_invalid_machine_id(tmp_path: Path, bad: str) -> None:
    doc = plant_doc()
    doc["sites"][0]["lines"][0]["machines"][1]["id"] = bad
    assert_problem(write(tmp_path, doc), f"{M1}.id", "should match pattern")


def test_bad_technician_site(tmp_path: Path) -> None:
    doc = plant_doc()
    doc["technicians"][0]["site_id"] = "nowhere"
    assert_problem(write(tmp_path, doc), "technicians[0].site_id", "unknown site 'nowhere'")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    doc = plant_doc()
    doc["sites"][0]["lines"][0]["machines"][0]["type"] = "pmp"
    doc["sites"][0]["lines"][1]["machines"][0]["id"] = "P-102"
    doc["technicians"][0]["site_id"] = "nowhere"
    _, problems = problems_of(write(tmp_path, doc))
    assert [where for where, _ in problems] == [
        f"{M0}.type",
        "sites[0].lines[1].machines[0].id",
        "technicians[0].site_id",
    ]


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    text = "name: x\nmachine_types:\n  pump: {kind: pump\nsites: []\n"
    path = write(tmp_path, text)
    text_, problems = problems_of(path)
    ((where, what),) = problems
    assert re.fullmatch(r"line \d+, column \d+", where)
    assert what.startswith("not valid YAML: ")
    assert f"{path}: {where}: not valid YAML" in text_


def test_yaml_tab_indentation_is_a_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nsites:\n\t- id: a\n")
    assert_problem(path, "line 3, column 1", "not valid YAML")


def test_a_key_written_twice_is_refused(tmp_path: Path) -> None:
    text = """
machine_types:
  motor-15kw: {kind: motor, sensors: [{name: current, kind: current, unit: A}]}
  motor-15kw: {kind: motor, sensors: [{name: speed, kind: speed, unit: rpm}]}
sites: [{id: a}]
"""
    assert_problem(
        write(tmp_path, text),
        "line 4, column 3",
        re.escape("not valid YAML: duplicate key 'motor-15kw' (first on line 3)"),
    )


@pytest.mark.parametrize(
    ("text", "found"),
    [("- id: a\n- id: b\n", "a list"), ("just text\n", "a str"), ("", "nothing")],
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, found: str) -> None:
    path = write(tmp_path, text)
    text_, problems = problems_of(path)
    assert problems == [("", f"the file must hold a mapping at the top level, not {found}")]
    assert text_ == f"{path}: the file must hold a mapping at the top level, not {found}"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    text, _ = problems_of(path)
    assert text == f"{path}: cannot read the file: No such file or directory"


def test_a_directory_is_not_a_plant_file(tmp_path: Path) -> None:
    text, _ = problems_of(tmp_path)
    assert text.startswith(f"{tmp_path}: cannot read the file: ")


def test_a_binary_file_is_not_a_plant_file(tmp_path: Path) -> None:
    path = tmp_path / "plant.yaml"
    path.write_bytes(b"name: x\n\xff\xfe\x00garbage")
    assert_problem(path, "byte 8", "not UTF-8")


def test_parse_plant_names_its_source() -> None:
    doc = plant_doc()
    doc["sites"][0]["lines"][0]["machines"][1]["type"] = "pmp"
    with pytest.raises(PlantFileError, match=re.escape(f"db://plants/7: {M1}.type: unknown")):
        parse_plant(doc, "db://plants/7")


def test_parse_plant_does_not_mutate_its_input() -> None:
    doc = plant_doc()
    doc["sites"][0]["lines"][0]["machines"][0]["sensors"] = [{"name": "flow", "normal_low": 5}]
    before = copy.deepcopy(doc)
    parse_plant(doc)
    assert doc == before
