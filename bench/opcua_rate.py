"""OPC UA figures: plant server start time, value changes/s it writes, and value changes/s
the driver receives through one subscription.

    .venv/bin/python bench/opcua_rate.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from pathlib import Path

from drivers.base import FieldValue
from drivers.opcua import OpcUaDriver
from drivers.opcua_sim import OpcUaPlantServer
from schemas.plant import Plant, load_plant

EXAMPLE = Path(__file__).parents[1] / "twinfleet" / "plants" / "example.yaml"


def scaled(plant: Plant, n: int) -> Plant:
    """``n`` machines: copies of the example's machines with new ids on the same lines."""
    machines = [
        plant.machines[i % len(plant.machines)].model_copy(
            update={"id": f"{plant.machines[i % len(plant.machines)].id}-{i:04d}"}
        )
        for i in range(n)
    ]
    return plant.model_copy(update={"machines": machines})


async def start_time(plant: Plant) -> float:
    server = OpcUaPlantServer(plant, tick_s=3600)
    await server.start()
    await server.stop()
    return server.start_seconds


async def rates(plant: Plant, seconds: float, tick_s: float) -> tuple[float, float, float]:
    """(sim writes/s alone, sim writes/s with a driver subscribed, driver values/s)."""
    async with OpcUaPlantServer(plant, tick_s=tick_s, speed=1.0) as server:
        await asyncio.sleep(1.0)
        w0, t0 = server.writes, time.monotonic()
        await asyncio.sleep(seconds)
        alone = (server.writes - w0) / (time.monotonic() - t0)

        count = 0

        def sink(batch: list[FieldValue]) -> None:
            nonlocal count
            count += len(batch)

        driver = OpcUaDriver(
            server.endpoint, plant.machines, publishing_interval_ms=100, queue_size=10
        )
        task = asyncio.create_task(driver.run(sink))
        while driver.stats.values == 0:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        w0, c0, t0 = server.writes, count, time.monotonic()
        await asyncio.sleep(seconds)
        dt = time.monotonic() - t0
        written, received = (server.writes - w0) / dt, (count - c0) / dt
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return alone, written, received


async def main(seconds: float) -> None:
    logging.basicConfig(level=logging.ERROR)
    example = load_plant(EXAMPLE)
    for n in (len(example.machines), 500):
        plant = example if n == len(example.machines) else scaled(example, n)
        sensors = sum(len(m.sensors) for m in plant.machines)
        print(f"start, {n} machines ({sensors} variables): {await start_time(plant):.2f} s")
    for n, tick in ((len(example.machines), 0.02), (500, 0.05)):
        plant = example if n == len(example.machines) else scaled(example, n)
        alone, written, received = await rates(plant, seconds, tick)
        print(
            f"{n} machines, tick {tick} s: server writes {alone:,.0f}/s alone, "
            f"{written:,.0f}/s with a driver; driver receives {received:,.0f}/s"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    asyncio.run(main(parser.parse_args().seconds))
