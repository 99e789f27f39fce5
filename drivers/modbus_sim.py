"""A simulated Modbus TCP plant: a real pymodbus server whose registers follow a
:class:`~twins.simulator.plant.PlantSimulator`.

Every served machine is one Modbus unit (slave) of the server; its registers are laid out
by its sensors' :class:`~schemas.plant.ModbusAddress` (the unit id written in the plant
file is ignored: the server assigns units, since the plant declares addresses per machine
type). Each table of a unit (coils, discrete inputs, holding and input registers) spans
its sensors' lowest to highest address without holes, so reads that merge neighbours
work; an address outside that span is answered with an *illegal data address* exception
response, as a real device would.

The server is built on pymodbus's ``SimDevice`` data model (``ModbusServerContext`` is
deprecated in pymodbus 3.16, to be removed in v4). The register image is kept here and
copied into the server's memory by a device *action* on every request, so values change
only between requests, never half-way through one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus import encode_value, register_count
from schemas.plant import MachineSpec, ModbusAddress, Plant
from twins.simulator.faults import SensorFaults
from twins.simulator.plant import PlantSimulator

__all__ = ["MAX_UNITS", "ModbusPlantServer", "serve_modbus"]

log = logging.getLogger(__name__)

MAX_UNITS = 247
"""Unit ids 1..247 are the addressable Modbus devices behind one server."""

_TABLES = ("coil", "discrete", "holding", "input")  # SimDevice's tuple order
_TABLE_OF_FUNCTION = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 4: "input"}
_TABLE_OF_FUNCTION.update({fc: "holding" for fc in (3, 6, 16, 22, 23)})
_BIT_TABLES = frozenset({"coil", "discrete"})
_EMPTY_BITS_AT = 65520  # where a unit without coils/discrete inputs keeps 16 dummy bits


@dataclass(slots=True)
class _Table:
    """The register image of one table of one unit.

    ``words`` are 16-bit registers from ``start``; for bit tables ``start`` is aligned
    down to a multiple of 16 and bit ``n`` is bit ``n % 16`` (LSB first) of word
    ``n // 16``, as pymodbus lays bits out.
    """

    kind: str
    start: int
    words: list[int] = field(default_factory=list)

    def write(self, address: int, registers: Sequence[int]) -> None:
        if self.kind in _BIT_TABLES:
            n = address - self.start
            word, bit = divmod(n, 16)
            if registers[0]:
                self.words[word] |= 1 << bit
            else:
                self.words[word] &= ~(1 << bit)
        else:
            i = address - self.start
            self.words[i : i + len(registers)] = list(registers)


@dataclass(slots=True)
class _Unit:
    unit_id: int
    machine: MachineSpec
    addresses: dict[str, ModbusAddress]
    tables: dict[str, _Table]


def _build_unit(unit_id: int, machine: MachineSpec) -> tuple[_Unit, SimDevice]:
    addresses = {s.name: s.address for s in machine.sensors if isinstance(s.address, ModbusAddress)}
    by_table: dict[str, list[tuple[str, ModbusAddress]]] = {t: [] for t in _TABLES}
    for name, a in addresses.items():
        by_table[a.register_type].append((name, a))
    tables: dict[str, _Table] = {}
    simdata: list[list[SimData]] = []
    for kind in _TABLES:
        entries = sorted(by_table[kind], key=lambda e: e[1].address)
        taken: dict[int, str] = {}
        for name, a in entries:
            for addr in range(a.address, a.address + register_count(a)):
                if addr in taken:
                    raise ValueError(
                        f"machine {machine.id}: sensors {taken[addr]!r} and {name!r} overlap "
                        f"at {kind} address {addr}"
                    )
                taken[addr] = name
        if kind in _BIT_TABLES:
            lo, hi = (min(taken), max(taken)) if taken else (_EMPTY_BITS_AT, 65535)
            start = lo - lo % 16
            n_words = (hi - start) // 16 + 1
            tables[kind] = _Table(kind, start, [0] * n_words)
            simdata.append(
                [SimData(start, values=[False] * (16 * n_words), datatype=DataType.BITS)]
            )
        elif taken:
            lo, hi = min(taken), max(taken)
            tables[kind] = _Table(kind, lo, [0] * (hi - lo + 1))
            simdata.append([SimData(lo, count=hi - lo + 1, values=0, datatype=DataType.REGISTERS)])
        else:  # one invalid register: every read of this table is an illegal address
            tables[kind] = _Table(kind, 0, [])
            simdata.append([SimData(0, datatype=DataType.INVALID)])
    unit = _Unit(unit_id, machine, addresses, tables)
    device = SimDevice(
        id=unit_id,
        simdata=(simdata[0], simdata[1], simdata[2], simdata[3]),
        action=None,  # set by the server, which owns the request counter
    )
    return unit, device


class ModbusPlantServer:
    """A Modbus TCP server for (some of) a plant's machines, values from a simulator.

    Parameters
    ----------
    plant
        The plant; machines with at least one Modbus-addressed sensor are served.
    host, port
        Where to listen; ``port=0`` picks a free port (see :attr:`port` after start).
    seed, start_ms, faults
        Passed to :class:`PlantSimulator` (``start_ms`` defaults to now; ``faults`` to
        perfect sensors).
    unit_ids
        Machine id to unit id; when given, exactly these machines are served. Default:
        units 1..N in plant order (at most :data:`MAX_UNITS`).
    tick_s, speed
        Every ``tick_s`` wall seconds the simulator advances ``tick_s * speed`` simulated
        seconds and the registers take its new readings.
    live
        Whether registers follow the simulator (tests turn it off to check exact values).
    """

    def __init__(
        self,
        plant: Plant,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        unit_ids: Mapping[str, int] | None = None,
        tick_s: float = 1.0,
        speed: float = 1.0,
        start_ms: int | None = None,
        faults: SensorFaults | None = None,
        live: bool = True,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, got {port}")
        if not tick_s > 0 or not speed > 0:
            raise ValueError(f"tick_s and speed must be > 0, got {tick_s} and {speed}")
        modbus_machines = [
            m
            for m in plant.machines
            if any(isinstance(s.address, ModbusAddress) for s in m.sensors)
        ]
        if unit_ids is None:
            if len(modbus_machines) > MAX_UNITS:
                raise ValueError(
                    f"plant {plant.name!r} has {len(modbus_machines)} Modbus machines but one "
                    f"server addresses at most {MAX_UNITS} units; pass unit_ids= to serve a "
                    "subset per server"
                )
            mapping = {m.id: i + 1 for i, m in enumerate(modbus_machines)}
        else:
            mapping = dict(unit_ids)
            if len(mapping) > MAX_UNITS:
                raise ValueError(
                    f"{len(mapping)} machines given but one server addresses at most "
                    f"{MAX_UNITS} units"
                )
            known = {m.id for m in modbus_machines}
            for machine_id, unit_id in mapping.items():
                if machine_id not in known:
                    raise ValueError(
                        f"unit_ids: plant {plant.name!r} has no machine {machine_id!r} "
                        "with Modbus-addressed sensors"
                    )
                if not 1 <= unit_id <= MAX_UNITS:
                    raise ValueError(f"unit_ids[{machine_id!r}]: unit id {unit_id} is not 1..247")
            if len(set(mapping.values())) != len(mapping):
                raise ValueError(f"unit_ids: unit ids are not unique: {mapping}")
        if not mapping:
            raise ValueError(f"plant {plant.name!r} has no machine with Modbus addresses")

        machines = [m for m in plant.machines if m.id in mapping]
        self.host = host
        self._port = port
        self.tick_s = float(tick_s)
        self.speed = float(speed)
        self.live = live
        self.requests = 0
        """Requests answered from the register image (illegal addresses not counted)."""
        self.encode_errors = 0
        """Simulated readings that did not fit their register type (left unchanged)."""
        self._units: dict[int, _Unit] = {}
        self._by_machine: dict[str, _Unit] = {}
        self._devices: list[SimDevice] = []
        for m in machines:
            unit, device = _build_unit(mapping[m.id], m)
            device.action = functools.partial(self._on_request, unit)
            self._units[unit.unit_id] = unit
            self._by_machine[m.id] = unit
            self._devices.append(device)
        sub_plant = Plant(
            name=plant.name,
            sites=plant.sites,
            machine_types=plant.machine_types,
            machines=machines,
            technicians=plant.technicians,
        )
        self.simulator = PlantSimulator(
            sub_plant,
            seed=seed,
            start_ms=int(time.time() * 1000) if start_ms is None else start_ms,
            faults=SensorFaults.none() if faults is None else faults,
        )
        self._server: ModbusTcpServer | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._reported: set[str] = set()
        self._update_from_simulator()

    @property
    def port(self) -> int:
        """The port listened on (the bound one once started with ``port=0``)."""
        return self._port

    @property
    def unit_ids(self) -> dict[str, int]:
        """Machine id to unit id."""
        return {machine_id: u.unit_id for machine_id, u in self._by_machine.items()}

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen and start the live updates. Restarting after :meth:`stop` reuses the
        port first bound (so clients can reconnect to the same address)."""
        if self._server is not None:
            raise RuntimeError("the Modbus plant server is already running")
        server = ModbusTcpServer(self._devices, address=(self.host, self._port))
        await server.serve_forever(background=True)
        sockets = getattr(server.transport, "sockets", None) or ()
        if self._port == 0:
            if not sockets:
                await server.shutdown()
                raise RuntimeError("cannot tell which port the Modbus server bound")
            self._port = int(sockets[0].getsockname()[1])
        self._server = server
        self._ticker = asyncio.create_task(self._tick(), name="modbus-plant-ticker")
        log.info("Modbus plant server on %s:%d, %d units", self.host, self._port, len(self._units))

    async def stop(self) -> None:
        """Stop listening and close every client connection."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    async def __aenter__(self) -> ModbusPlantServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def set_value(self, machine_id: str, sensor: str, value: float) -> None:
        """Write ``value`` (engineering units) into a sensor's registers now.

        Live updates would overwrite it at the next tick: set :attr:`live` to ``False``
        first to keep it."""
        unit = self._by_machine.get(machine_id)
        if unit is None:
            raise KeyError(f"machine {machine_id!r} is not served here")
        address = unit.addresses.get(sensor)
        if address is None:
            raise KeyError(f"machine {machine_id!r} has no Modbus sensor {sensor!r}")
        unit.tables[address.register_type].write(address.address, encode_value(value, address))

    # -- inside -------------------------------------------------------------------------

    async def _on_request(
        self,
        unit: _Unit,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Copy the unit's image into the server's memory before it answers."""
        table = _TABLE_OF_FUNCTION.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION  # the simulated plant is read-only
        self.requests += 1
        words = unit.tables[table].words
        current_registers[: len(words)] = words
        return None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at = max(next_at + self.tick_s, loop.time())
            await asyncio.sleep(next_at - loop.time())
            if self.live:
                self._update_from_simulator()

    def _update_from_simulator(self) -> None:
        for batch in self.simulator.advance(self.tick_s * self.speed):
            r = batch.readings
            for machine_id, sid, value in zip(r.machine_id, r.sensor_id, r.value, strict=True):
                unit = self._by_machine[machine_id]
                sensor = sid.removeprefix(machine_id + ".")
                address = unit.addresses.get(sensor)
                if address is None:
                    continue
                try:
                    registers = encode_value(value, address)
                except ValueError as exc:
                    self.encode_errors += 1
                    if sid not in self._reported:
                        self._reported.add(sid)
                        log.warning("%s: %s (register left unchanged)", sid, exc)
                    continue
                unit.tables[address.register_type].write(address.address, registers)


async def serve_modbus(
    plant: Plant,
    host: str = "0.0.0.0",
    port: int = 502,
    seed: int = 0,
    *,
    unit_ids: Mapping[str, int] | None = None,
    tick_s: float = 1.0,
    speed: float = 1.0,
    faults: SensorFaults | None = None,
) -> None:
    """Serve ``plant`` over Modbus TCP until cancelled (``twinfleet sim modbus``)."""
    server = ModbusPlantServer(
        plant,
        host=host,
        port=port,
        seed=seed,
        unit_ids=unit_ids,
        tick_s=tick_s,
        speed=speed,
        faults=faults,
    )
    await server.start()
    for machine_id, unit in server.unit_ids.items():
        log.info("unit %d: %s", unit, machine_id)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
