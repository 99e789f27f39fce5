"""The OPC UA driver against the real simulated plant server (asyncua, free local ports)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from drivers.base import FieldValue
from drivers.opcua import OpcUaAuthError, OpcUaDriver, OpcUaSecurity
from drivers.opcua_sim import (
    CLIENT_APPLICATION_URI,
    SERVER_APPLICATION_URI,
    OpcUaPlantServer,
    make_certificate,
)
from schemas.common import Quality
from schemas.plant import MachineSpec, Plant, SensorSpec, load_plant

EXAMPLE = Path(__file__).parents[2] / "twinfleet" / "plants" / "example.yaml"


def small_plant(n: int = 2) -> Plant:
    plant = load_plant(EXAMPLE)
    return plant.model_copy(update={"machines": plant.machines[:n]})


async def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def with_driver(
    driver: OpcUaDriver, body: Callable[[list[FieldValue]], Awaitable[None]]
) -> list[FieldValue]:
    got: list[FieldValue] = []
    task = asyncio.create_task(driver.run(got.extend))
    try:
        await wait_for(lambda: driver.stats.connects >= 1 and len(got) > 0)
        await body(got)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return got


def last(got: list[FieldValue], machine: str, sensor: str) -> FieldValue:
    return [v for v in got if v.machine_id == machine and v.sensor == sensor][-1]


def test_values_units_qualities_and_source_times_arrive_as_set() -> None:
    plant = small_plant()
    m = plant.machines[0]

    async def scenario() -> None:
        async with OpcUaPlantServer(plant, tick_s=0.2) as server:
            driver = OpcUaDriver(server.endpoint, plant.machines, publishing_interval_ms=20)

            async def body(got: list[FieldValue]) -> None:
                server.pause()
                await asyncio.sleep(0.3)
                t0 = 1_700_000_000_000
                for i, (q, value) in enumerate(
                    [(Quality.GOOD, 1.5), (Quality.UNCERTAIN, 2.5), (Quality.BAD, 3.5)]
                ):
                    await server.set_value(m.id, "vibration", value, q, t0 + i * 1000)
                    await wait_for(
                        lambda i=i: last(got, m.id, "vibration").timestamp_ms == t0 + i * 1000
                    )
                    seen = last(got, m.id, "vibration")
                    assert seen.quality == q
                    if q is Quality.BAD:  # a Bad value is null on the wire
                        assert seen.value != seen.value
                    else:
                        assert seen.value == value
                await server.set_value(m.id, "rpm", 1465.0, timestamp_ms=t0 + 5000)
                await wait_for(lambda: last(got, m.id, "rpm").timestamp_ms == t0 + 5000)
                assert last(got, m.id, "rpm").value == 1465.0

            await with_driver(driver, body)
            assert driver.units[(m.id, "bearing_temp")] == "degC"
            assert driver.units[(m.id, "vibration")] == "mm/s"
            assert driver.stats.errors == 0

    asyncio.run(scenario())


def test_absolute_and_percent_deadbands_suppress_small_changes() -> None:
    plant = small_plant(1)
    m = plant.machines[0]
    # vibration: EURange 0..9 (critical_high), so 10 % is 0.9 mm/s.

    async def scenario() -> None:
        async with OpcUaPlantServer(plant, tick_s=0.2) as server:
            server.pause()
            absolute = OpcUaDriver(
                server.endpoint,
                plant.machines,
                publishing_interval_ms=20,
                deadband=("absolute", 0.5),
                trigger="StatusValue",
            )
            percent = OpcUaDriver(
                server.endpoint,
                plant.machines,
                publishing_interval_ms=20,
                deadband=("percent", 10.0),
                trigger="StatusValue",
            )
            got_abs: list[FieldValue] = []
            got_pct: list[FieldValue] = []
            tasks = [
                asyncio.create_task(absolute.run(got_abs.extend)),
                asyncio.create_task(percent.run(got_pct.extend)),
            ]
            try:
                await server.set_value(m.id, "vibration", 2.0)
                await wait_for(lambda: len(got_abs) > 0 and len(got_pct) > 0)
                await wait_for(
                    lambda: (
                        last(got_abs, m.id, "vibration").value == 2.0
                        and last(got_pct, m.id, "vibration").value == 2.0
                    )
                )
                await server.set_value(m.id, "vibration", 2.3)  # < 0.5 and < 0.9
                await asyncio.sleep(0.3)
                assert last(got_abs, m.id, "vibration").value == 2.0
                assert last(got_pct, m.id, "vibration").value == 2.0
                await server.set_value(m.id, "vibration", 2.9)  # 0.6 from 2.3: abs passes
                await wait_for(lambda: last(got_abs, m.id, "vibration").value == 2.9)
                await asyncio.sleep(0.2)
                assert last(got_pct, m.id, "vibration").value == 2.0
                await server.set_value(m.id, "vibration", 4.0)  # 1.1: both pass
                await wait_for(lambda: last(got_pct, m.id, "vibration").value == 4.0)
                await wait_for(lambda: last(got_abs, m.id, "vibration").value == 4.0)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())


def test_discovery_maps_sensors_and_counts_a_missing_one() -> None:
    plant = small_plant()
    m = plant.machines[1]
    ghost = SensorSpec(name="ghost", kind="temperature", unit="degC")
    wanted = m.model_copy(update={"sensors": [*m.sensors, ghost]})

    async def scenario() -> None:
        async with OpcUaPlantServer(plant, tick_s=0.2) as server:
            driver = OpcUaDriver(server.endpoint, [wanted])
            await driver.connect()
            try:
                found = await driver.find_variables()
            finally:
                await driver.disconnect()
            assert set(found) == {(m.id, s.name) for s in m.sensors}
            assert found[(m.id, "vibration")].to_string() == server.node_id(m.id, "vibration")
            assert driver.stats.per_reason == {"missing_variable": 1}
            assert f"machine {m.id} has no variable 'ghost'" in driver.stats.last_error

            # Without discovery the sensors' node ids are used as given.
            by_id = MachineSpec.model_validate(
                {
                    **m.model_dump(),
                    "operating_condition": None,  # its sensors are not among the two
                    "sensors": [
                        {
                            **s.model_dump(),
                            "address": {
                                "protocol": "opcua",
                                "node_id": server.node_id(m.id, s.name),
                            },
                        }
                        for s in m.sensors[:2]
                    ],
                }
            )
            direct = OpcUaDriver(server.endpoint, [by_id], discover=False)
            await direct.connect()
            try:
                assert len(await direct.find_variables()) == 2
            finally:
                await direct.disconnect()
            assert direct.stats.errors == 0

    asyncio.run(scenario())


def test_secured_session_works_and_a_wrong_password_is_refused(tmp_path: Path) -> None:
    plant = small_plant(1)
    m = plant.machines[0]

    async def scenario() -> None:
        server_cert, server_key = await make_certificate(
            tmp_path / "server.der",
            tmp_path / "server.pem",
            application_uri=SERVER_APPLICATION_URI,
            server=True,
        )
        client_cert, client_key = await make_certificate(
            tmp_path / "client.der",
            tmp_path / "client.pem",
            application_uri=CLIENT_APPLICATION_URI,
            server=False,
        )
        security = OpcUaSecurity(client_cert, client_key, server_certificate=server_cert)
        async with OpcUaPlantServer(
            plant,
            tick_s=0.2,
            certificate=server_cert,
            private_key=server_key,
            users={"operator": "s3cret"},
        ) as server:
            good = OpcUaDriver(
                server.endpoint,
                plant.machines,
                security=security,
                username="operator",
                password="s3cret",
                publishing_interval_ms=20,
            )

            async def body(got: list[FieldValue]) -> None:
                server.pause()
                await server.set_value(m.id, "current", 30.5, timestamp_ms=1_700_000_001_000)
                await wait_for(lambda: last(got, m.id, "current").value == 30.5)

            await with_driver(good, body)

            wrong = OpcUaDriver(
                server.endpoint,
                plant.machines,
                security=security,
                username="operator",
                password="guess",
            )
            with pytest.raises(
                OpcUaAuthError, match=r"refused user 'operator'.*BadUserAccessDenied"
            ):
                await wrong.connect()
            await wrong.disconnect()

            anonymous = OpcUaDriver(server.endpoint, plant.machines, security=security)
            with pytest.raises(OpcUaAuthError, match="refused an anonymous session"):
                await anonymous.connect()
            await anonymous.disconnect()

            # run() does not raise: it counts the refusal and retries.
            task = asyncio.create_task(wrong.run(lambda batch: None))
            await wait_for(lambda: wrong.stats.per_reason.get("auth", 0) >= 1)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert "BadUserAccessDenied" in wrong.stats.last_error

    asyncio.run(scenario())


def test_driver_reconnects_after_a_server_restart_and_backfills_the_gap() -> None:
    plant = small_plant(1)
    m = plant.machines[0]

    async def scenario() -> None:
        server = OpcUaPlantServer(plant, tick_s=0.2)
        await server.start()
        server.pause()
        driver = OpcUaDriver(server.endpoint, plant.machines, publishing_interval_ms=20)
        got: list[FieldValue] = []
        task = asyncio.create_task(driver.run(got.extend))
        restarted: OpcUaPlantServer | None = None
        try:
            await wait_for(lambda: driver.stats.connects == 1 and len(got) > 0)
            await server.set_value(m.id, "vibration", 1.0)
            await wait_for(lambda: last(got, m.id, "vibration").value == 1.0)

            await server.stop()
            await wait_for(lambda: driver.stats.disconnects == 1)
            restarted = OpcUaPlantServer(plant, port=server.port, tick_s=60)
            await restarted.start()
            restarted.pause()
            gap = [2.0, 3.0, 4.0]
            for value in gap:  # written before the driver is back
                await restarted.set_value(m.id, "vibration", value)
                await asyncio.sleep(0.01)

            await wait_for(lambda: driver.stats.connects == 2, timeout=15)
            await wait_for(lambda: driver.stats.backfilled >= len(gap))
            seen = [v for v in got if v.machine_id == m.id and v.sensor == "vibration"]
            values = [v.value for v in seen]
            for value in gap:
                assert values.count(value) == 1, (value, seen)  # backfilled, not doubled
            times = [v.timestamp_ms for v in seen]
            assert times == sorted(times)

            await restarted.set_value(m.id, "vibration", 9.0)
            await wait_for(lambda: last(got, m.id, "vibration").value == 9.0)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await server.stop()
            if restarted is not None:
                await restarted.stop()

    asyncio.run(scenario())
