"""The Modbus driver against the simulated plant server (a real pymodbus TCP server)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import twinfleet
from drivers.base import FieldValue
from drivers.modbus import (
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    ModbusDriver,
    ModbusMachine,
    Point,
    decode_registers,
    encode_value,
    plan_blocks,
)
from drivers.modbus_sim import ModbusPlantServer, serve_modbus
from schemas.common import Quality
from schemas.plant import (
    MachineSpec,
    ModbusAddress,
    OpcUaAddress,
    Plant,
    SensorSpec,
    SiteSpec,
    load_plant,
)
from twinfleet.services import free_port

TYPES = ["int16", "uint16", "int32", "uint32", "float32", "bool"]
ORDERS = ["ABCD", "CDAB", "BADC", "DCBA"]
SCALE, OFFSET = 0.5, -20.0
# Raw values that use every byte (so a wrong byte order shows), per type.
RAW = {
    "int16": -12345,
    "uint16": 54321,
    "int32": -123456789,
    "uint32": 3_000_000_001,
    "float32": 1234.5678,
    "bool": 1,
}


def sensor(name: str, address: ModbusAddress | OpcUaAddress | None) -> SensorSpec:
    return SensorSpec(name=name, kind="temperature", unit="degC", address=address)


def machine(machine_id: str, sensors: list[SensorSpec], type_: str = "box") -> MachineSpec:
    return MachineSpec(
        id=machine_id, type=type_, kind="pump", site="s1", line="l1", sensors=sensors
    )


def plant(*machines: MachineSpec) -> Plant:
    return Plant(
        name="test",
        sites=[SiteSpec(id="s1")],
        machine_types={},
        machines=list(machines),
        technicians=[],
    )


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=20))


def expected_value(data_type: str) -> float:
    if data_type == "bool":
        return 1.0
    return RAW[data_type] * SCALE + OFFSET


def now_ms() -> int:
    return int(time.time() * 1000)


# -- codec ------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("data_type", TYPES)
def test_codec_round_trip(data_type: str, order: str) -> None:
    scale, offset = (1.0, 0.0) if data_type == "bool" else (SCALE, OFFSET)
    a = ModbusAddress(address=0, data_type=data_type, byte_order=order, scale=scale, offset=offset)
    value = expected_value(data_type)
    registers = encode_value(value, a)
    assert all(0 <= r <= 0xFFFF for r in registers)
    assert decode_registers(registers, a) == pytest.approx(value, rel=1e-6)


@pytest.mark.parametrize(
    ("value", "data_type", "message"),
    [
        (40000, "int16", "value 40000 does not fit int16 at address 7 (raw 40000 = "),
        (-1, "uint16", "raw -1 = (value - offset) / scale is outside 0..65535"),
        (2**32, "uint32", "value 4294967296 does not fit uint32"),
        (-(2**31) - 1, "int32", "is outside -2147483648..2147483647"),
        (1e39, "float32", "value 1e+39 does not fit float32 at address 7"),
        (math.nan, "int32", "value nan does not fit int32 at address 7 (raw nan"),
        (2, "bool", "value 2 does not fit bool at address 7 (raw 2 "),
    ],
)
def test_encode_out_of_range_names_value_and_type(
    value: float, data_type: str, message: str
) -> None:
    a = ModbusAddress(address=7, data_type=data_type)
    with pytest.raises(ValueError, match="does not fit") as info:
        encode_value(value, a)
    assert message in str(info.value)


def test_encode_applies_inverse_scale_and_rounds() -> None:
    a = ModbusAddress(address=0, data_type="int16", scale=0.1, offset=100)
    assert encode_value(102.349, a) == [23]
    assert encode_value(99.9, a) == [0xFFFF]  # -1
    assert decode_registers([0xFFFF], a) == pytest.approx(99.9)


def test_decode_rejects_wrong_register_count_and_non_16_bit() -> None:
    a = ModbusAddress(address=3, data_type="float32")
    with pytest.raises(ValueError, match="float32 at address 3 takes 2 registers, got 3"):
        decode_registers([0, 0, 0], a)
    with pytest.raises(ValueError, match="register value 65536 is not 16-bit"):
        decode_registers([65536, 0], a)


# -- planning ---------------------------------------------------------------------------


def test_plan_splits_300_float32_into_reads_of_at_most_125_registers() -> None:
    points = [Point("M", f"s{i}", ModbusAddress(address=2 * i)) for i in range(300)]
    blocks = plan_blocks(points)
    assert all(b.count <= MAX_READ_REGISTERS for b in blocks)
    assert len(blocks) == math.ceil(600 / 124)  # 62 float32 (124 registers) per read
    assert sorted(p.sensor for b in blocks for p in b.points) == sorted(p.sensor for p in points)
    for b in blocks:  # no value is cut across two reads
        assert all(
            b.start <= p.address.address and p.address.address + 1 <= b.end for p in b.points
        )


def test_plan_merges_small_gaps_and_separates_tables_and_units() -> None:
    def pt(address: int, **kw: Any) -> Point:
        return Point("M", f"a{address}{kw}", ModbusAddress(address=address, **kw))

    # float32 at 0..1 and 10..11: a gap of 8 merges, a gap of 9 does not.
    assert [(b.start, b.count) for b in plan_blocks([pt(0), pt(10)])] == [(0, 12)]
    assert [(b.start, b.count) for b in plan_blocks([pt(0), pt(11)])] == [(0, 2), (11, 2)]
    assert len(plan_blocks([pt(0), pt(10)], max_gap=0)) == 2
    blocks = plan_blocks([pt(0), pt(2, register_type="input"), pt(4, unit_id=2)])
    assert [(b.unit_id, b.register_type) for b in blocks] == [
        (1, "holding"),
        (1, "input"),
        (2, "holding"),
    ]
    coils = [pt(i, register_type="coil", data_type="bool") for i in range(2500)]
    bit_blocks = plan_blocks(coils)
    assert [b.count for b in bit_blocks] == [MAX_READ_BITS, 500]


# -- against the server -----------------------------------------------------------------


def all_types_machine(machine_id: str = "M-1") -> MachineSpec:
    sensors = []
    for table in ("holding", "input"):
        address = 0
        for data_type in TYPES:
            for order in ORDERS:
                scale, offset = (1.0, 0.0) if data_type == "bool" else (SCALE, OFFSET)
                a = ModbusAddress(
                    register_type=table,
                    address=address,
                    data_type=data_type,
                    byte_order=order,
                    scale=scale,
                    offset=offset,
                )
                sensors.append(sensor(f"{table}_{data_type}_{order}", a))
                address += 2 if data_type in ("int32", "uint32", "float32") else 1
    for table in ("coil", "discrete"):
        for i, address in enumerate((3, 17, 18)):
            a = ModbusAddress(register_type=table, address=address, data_type="bool")
            sensors.append(sensor(f"{table}_{i}", a))
    sensors.append(sensor("opc", OpcUaAddress(node_id="ns=2;s=X")))  # ignored by the driver
    sensors.append(sensor("unaddressed", None))
    return machine(machine_id, sensors)


def test_every_type_and_byte_order_reads_back_what_the_server_holds() -> None:
    spec = all_types_machine()

    async def scenario() -> None:
        async with ModbusPlantServer(plant(spec), live=False) as server:
            for s in spec.sensors:
                if not isinstance(s.address, ModbusAddress):
                    continue
                if s.address.register_type in ("coil", "discrete"):
                    server.set_value(spec.id, s.name, 1.0 if s.name.endswith("_1") else 0.0)
                else:
                    server.set_value(spec.id, s.name, expected_value(s.address.data_type))
            driver = ModbusDriver([ModbusMachine(spec, "127.0.0.1", server.port)])
            before = now_ms()
            values = await driver.read_once()
            after = now_ms()
            driver.close()

        by_sensor = {v.sensor: v for v in values}
        modbus_sensors = [s for s in spec.sensors if isinstance(s.address, ModbusAddress)]
        assert set(by_sensor) == {s.name for s in modbus_sensors}
        for s in modbus_sensors:
            assert isinstance(s.address, ModbusAddress)
            v = by_sensor[s.name]
            assert (v.machine_id, v.quality) == (spec.id, Quality.GOOD)
            assert before <= v.timestamp_ms <= after
            if s.address.register_type in ("coil", "discrete"):
                assert v.value == (1.0 if s.name.endswith("_1") else 0.0), s.name
            elif s.address.data_type == "float32":
                assert v.value == pytest.approx(expected_value("float32"), rel=1e-6), s.name
            else:
                assert abs(v.value - expected_value(s.address.data_type)) <= SCALE / 2, s.name
        assert driver.stats.errors == 0
        assert driver.stats.values == len(values)

    run(scenario)


def test_live_values_follow_the_simulator() -> None:
    a = ModbusAddress(address=0, data_type="float32")
    spec = machine("P-1", [SensorSpec(name="vibration", kind="vibration", unit="mm/s", address=a)])

    async def scenario() -> None:
        async with ModbusPlantServer(plant(spec), tick_s=0.05, speed=60) as server:
            driver = ModbusDriver([ModbusMachine(spec, "127.0.0.1", server.port)])
            first = await driver.read_once()
            await asyncio.sleep(0.2)
            second = await driver.read_once()
            driver.close()
        assert len(first) == len(second) == 1
        assert first[0].value != second[0].value  # the simulator's noise moves it
        assert all(math.isfinite(v.value) and v.value >= 0 for v in first + second)

    run(scenario)


def test_two_machines_of_one_type_on_different_units_read_their_own_values() -> None:
    sensors = [sensor("temp", ModbusAddress(address=0, data_type="float32"))]
    m1, m2 = machine("P-1", sensors), machine("P-2", sensors)

    async def scenario() -> None:
        units = {"P-1": 5, "P-2": 9}
        async with ModbusPlantServer(plant(m1, m2), unit_ids=units, live=False) as server:
            assert server.unit_ids == units
            server.set_value("P-1", "temp", 11.5)
            server.set_value("P-2", "temp", 22.5)
            driver = ModbusDriver(
                [
                    ModbusMachine(m1, "127.0.0.1", server.port, unit_id=5),
                    ModbusMachine(m2, "127.0.0.1", server.port, unit_id=9),
                ]
            )
            values = await driver.read_once()
            driver.close()
        assert sorted((v.machine_id, v.value) for v in values) == [("P-1", 11.5), ("P-2", 22.5)]

    run(scenario)


def test_a_planned_read_asks_the_server_fewer_times_than_there_are_sensors() -> None:
    sensors = [sensor(f"s{i}", ModbusAddress(address=2 * i)) for i in range(300)]
    spec = machine("BIG", sensors)

    async def scenario() -> None:
        async with ModbusPlantServer(plant(spec), live=False) as server:
            for i in range(300):
                server.set_value("BIG", f"s{i}", i * 0.25)
            driver = ModbusDriver([ModbusMachine(spec, "127.0.0.1", server.port)], connections=3)
            values = await driver.read_once()
            driver.close()
            assert len(driver.blocks) == 5
            assert driver.requests == server.requests == len(driver.blocks) < 300
            assert driver.stats.connects == 3  # the blocks were spread over 3 connections
        assert sorted(v.value for v in values) == [i * 0.25 for i in range(300)]

    run(scenario)


def test_an_illegal_address_is_counted_and_the_other_blocks_still_read() -> None:
    good = [sensor("a", ModbusAddress(address=0)), sensor("b", ModbusAddress(address=2))]
    served = machine("P-1", good)
    ghost = sensor("ghost", ModbusAddress(address=1000))  # not on the server
    configured = machine("P-1", [*good, ghost])

    async def scenario() -> None:
        async with ModbusPlantServer(plant(served), live=False) as server:
            server.set_value("P-1", "a", 1.0)
            server.set_value("P-1", "b", 2.0)
            driver = ModbusDriver([ModbusMachine(configured, "127.0.0.1", server.port)])
            first = await driver.read_once()
            second = await driver.read_once()
            driver.close()
        for values in (first, second):
            assert sorted((v.sensor, v.value) for v in values) == [("a", 1.0), ("b", 2.0)]
        assert driver.stats.per_reason == {"exception_response": 2}
        assert driver.stats.disconnects == 0
        message = driver.stats.last_error
        assert "unit 1 holding registers 1000..1001" in message
        assert "exception response 2 (ILLEGAL_ADDRESS)" in message

    run(scenario)


def test_the_driver_reconnects_by_itself_after_the_server_restarts() -> None:
    spec = machine("P-1", [sensor("temp", ModbusAddress(address=0, data_type="float32"))])
    received: list[FieldValue] = []

    async def wait_for(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 8
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)

    async def scenario() -> None:
        server = ModbusPlantServer(plant(spec), live=False)
        await server.start()
        server.set_value("P-1", "temp", 1.0)
        driver = ModbusDriver(
            [ModbusMachine(spec, "127.0.0.1", server.port)],
            poll_interval_s=0.05,
            timeout_s=1.0,
            backoff_initial_s=0.05,
            backoff_max_s=0.2,
        )
        task = asyncio.create_task(driver.run(received.extend))
        try:
            await wait_for(lambda: any(v.value == 1.0 for v in received), "first values")
            await server.stop()
            await wait_for(lambda: driver.stats.disconnects >= 1, "the disconnect")
            await asyncio.sleep(0.3)  # a few failed connects while the server is down
            assert driver.stats.per_reason.get("connect", 0) >= 1
            server.set_value("P-1", "temp", 2.0)
            await server.start()
            await wait_for(lambda: any(v.value == 2.0 for v in received), "values again")
            assert not task.done()
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await server.stop()
        assert driver.stats.connects >= 2
        assert driver.stats.disconnects >= 1

    run(scenario)


def test_server_refuses_more_than_247_units_and_bad_unit_maps() -> None:
    sensors = [sensor("t", ModbusAddress(address=0))]
    many = plant(*(machine(f"M-{i}", sensors) for i in range(248)))
    with pytest.raises(
        ValueError, match="has 248 Modbus machines but one server addresses at most 247"
    ):
        ModbusPlantServer(many)
    two = plant(machine("A", sensors), machine("B", sensors))
    with pytest.raises(ValueError, match="unit ids are not unique"):
        ModbusPlantServer(two, unit_ids={"A": 3, "B": 3})
    with pytest.raises(ValueError, match="has no machine 'C'"):
        ModbusPlantServer(two, unit_ids={"C": 1})
    overlapping = machine(
        "O", [sensor("x", ModbusAddress(address=0)), sensor("y", ModbusAddress(address=1))]
    )
    with pytest.raises(ValueError, match="sensors 'x' and 'y' overlap at holding address 1"):
        ModbusPlantServer(plant(overlapping))
    server = ModbusPlantServer(two, live=False)
    with pytest.raises(KeyError, match="has no Modbus sensor 'nope'"):
        server.set_value("A", "nope", 1.0)


def test_driver_needs_modbus_sensors() -> None:
    spec = machine("M", [sensor("opc", OpcUaAddress(node_id="ns=2;s=X"))])
    with pytest.raises(ValueError, match="no sensor of the given machines has a Modbus address"):
        ModbusDriver([ModbusMachine(spec, "127.0.0.1", 502)])


def test_serve_modbus_serves_the_example_plant_until_cancelled() -> None:
    example = load_plant(Path(twinfleet.__file__).parent / "plants" / "example.yaml")
    pumps = [m for m in example.machines if m.type == "pump-75kw"][:2]
    units = {pumps[0].id: 7, pumps[1].id: 8}
    port = free_port()

    async def scenario() -> None:
        serving = serve_modbus(example, "127.0.0.1", port, seed=3, unit_ids=units, tick_s=0.1)
        task = asyncio.create_task(serving)
        driver = ModbusDriver(
            [ModbusMachine(m, "127.0.0.1", port, unit_id=units[m.id]) for m in pumps],
            backoff_initial_s=0.05,
        )
        assert driver.poll_interval_s == 1.0  # the fastest sample period of the pump type
        try:
            values: list[FieldValue] = []
            deadline = time.monotonic() + 5
            while not values and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                values = await driver.read_once()
        finally:
            driver.close()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        expected = {
            (m.id, s.name) for m in pumps for s in m.sensors if isinstance(s.address, ModbusAddress)
        }
        assert {(v.machine_id, v.sensor) for v in values} == expected
        assert all(math.isfinite(v.value) for v in values)
        assert driver.stats.errors == driver.stats.per_reason.get("connect", 0)

    run(scenario)
