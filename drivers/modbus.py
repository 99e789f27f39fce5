"""Modbus TCP field driver: the register codec, read planning and the polling driver.

Modbus moves 16-bit registers and single bits, nothing else. What a register pair *means*
(a float, a signed integer, which word comes first) is a convention of each device, which
the plant file states per sensor in a :class:`~schemas.plant.ModbusAddress`. This module
turns values into registers and back (:func:`encode_value`, :func:`decode_registers`),
groups the sensors of a device into few large reads (:func:`plan_blocks`), and polls
devices with :class:`ModbusDriver`.

Byte orders name where the bytes of a big-endian value ``A B C D`` end up, register by
register (16-bit values only have ``A B``):

>>> addr = ModbusAddress(address=0, data_type="int32", byte_order="ABCD")
>>> for order in ("ABCD", "CDAB", "BADC", "DCBA"):
...     regs = encode_value(0x01020304, addr.model_copy(update={"byte_order": order}))
...     print(order, [f"{r:04x}" for r in regs])
ABCD ['0102', '0304']
CDAB ['0304', '0102']
BADC ['0201', '0403']
DCBA ['0403', '0201']
>>> decode_registers([0x0403, 0x0201], addr.model_copy(update={"byte_order": "DCBA"}))
16909060.0

Scale and offset turn the raw register value into engineering units
(``value = raw * scale + offset``), so a temperature in tenths of a degree reads back in
degrees:

>>> temp = ModbusAddress(address=4, data_type="int16", scale=0.1, offset=-40)
>>> encode_value(21.5, temp)
[615]
>>> decode_registers([615], temp)
21.5
>>> encode_value(4000, temp)
Traceback (most recent call last):
...
ValueError: value 4000 does not fit int16 at address 4 (raw 40400 = (value - offset) / scale \
is outside -32768..32767)
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from drivers.base import DriverStats, FieldValue, Sink
from schemas.common import Quality
from schemas.plant import MachineSpec, ModbusAddress

__all__ = [
    "MAX_READ_BITS",
    "MAX_READ_REGISTERS",
    "Block",
    "ModbusDriver",
    "ModbusMachine",
    "Point",
    "decode_registers",
    "encode_value",
    "plan_blocks",
    "register_count",
]

log = logging.getLogger(__name__)

MAX_READ_REGISTERS = 125
"""Most registers one read (function 3 or 4) may return, by the Modbus specification."""
MAX_READ_BITS = 2000
"""Most coils or discrete inputs one read (function 1 or 2) may return."""

# struct format, register count, inclusive raw range (None for float32).
_TYPES: dict[str, tuple[str, int, tuple[int, int] | None]] = {
    "int16": ("h", 1, (-(2**15), 2**15 - 1)),
    "uint16": ("H", 1, (0, 2**16 - 1)),
    "int32": ("i", 2, (-(2**31), 2**31 - 1)),
    "uint32": ("I", 2, (0, 2**32 - 1)),
    "float32": ("f", 2, None),
    "bool": ("?", 1, (0, 1)),
}
# Byte positions (of the big-endian value) in register order. Each is its own inverse.
_ORDER_32 = {"ABCD": (0, 1, 2, 3), "CDAB": (2, 3, 0, 1), "BADC": (1, 0, 3, 2), "DCBA": (3, 2, 1, 0)}
_ORDER_16 = {"ABCD": (0, 1), "CDAB": (0, 1), "BADC": (1, 0), "DCBA": (1, 0)}
_FLOAT32_MAX = 3.4028234663852886e38
_BIT_TYPES = frozenset({"coil", "discrete"})


# -- codec ------------------------------------------------------------------------------


def register_count(address: ModbusAddress) -> int:
    """Registers (or bits, for coils and discrete inputs) one value of ``address`` takes.

    >>> register_count(ModbusAddress(address=0, data_type="uint32"))
    2
    """
    if address.register_type in _BIT_TYPES:
        return 1
    return _TYPES[address.data_type][1]


def _where(address: ModbusAddress) -> str:
    return f"{address.data_type} at address {address.address}"


def encode_value(value: float, address: ModbusAddress) -> list[int]:
    """The registers (16-bit unsigned ints) a device would hold for ``value``.

    Applies the inverse of the address's scale and offset, ``raw = (value - offset) /
    scale``, rounded to the nearest integer for integer types. Coils and discrete inputs
    (and the ``bool`` type) give ``[0]`` or ``[1]``. Raises :class:`ValueError` naming the
    value and type when the raw value does not fit the type.

    >>> encode_value(1.0, ModbusAddress(address=0, register_type="coil", data_type="bool"))
    [1]
    >>> encode_value(-1, ModbusAddress(address=0, data_type="uint16"))
    Traceback (most recent call last):
    ...
    ValueError: value -1 does not fit uint16 at address 0 (raw -1 = (value - offset) / scale \
is outside 0..65535)
    """
    raw = (float(value) - address.offset) / address.scale
    is_bits = address.register_type in _BIT_TYPES or address.data_type == "bool"
    if is_bits or address.data_type != "float32":
        fmt, _, bounds = ("?", 1, (0, 1)) if is_bits else _TYPES[address.data_type]
        assert bounds is not None
        if not math.isfinite(raw):
            raise ValueError(
                f"value {value!r} does not fit {_where(address)} "
                f"(raw {raw!r} = (value - offset) / scale is not a finite number)"
            )
        raw_int = round(raw)
        lo, hi = bounds
        if not lo <= raw_int <= hi:
            raise ValueError(
                f"value {value!r} does not fit {_where(address)} (raw {raw_int} = "
                f"(value - offset) / scale is outside {lo}..{hi})"
            )
        if is_bits:
            return [raw_int]
        packed = struct.pack(">" + fmt, raw_int)
    else:
        if math.isfinite(raw) and abs(raw) > _FLOAT32_MAX:
            raise ValueError(
                f"value {value!r} does not fit {_where(address)} (raw {raw!r} = "
                f"(value - offset) / scale is beyond ±{_FLOAT32_MAX:.7g})"
            )
        packed = struct.pack(">f", raw)
    return _to_registers(packed, address.byte_order)


def _to_registers(packed: bytes, byte_order: str) -> list[int]:
    order = _ORDER_32[byte_order] if len(packed) == 4 else _ORDER_16[byte_order]
    ordered = bytes(packed[i] for i in order)
    return [int.from_bytes(ordered[i : i + 2], "big") for i in range(0, len(ordered), 2)]


def decode_registers(registers: Sequence[int], address: ModbusAddress) -> float:
    """The value in engineering units held by ``registers`` (``raw * scale + offset``).

    ``registers`` are the value's own registers (as many as :func:`register_count`), or
    its bit (0/1, ``True``/``False``) for coils and discrete inputs. Raises
    :class:`ValueError` when there are too few or they are not 16-bit values.

    >>> decode_registers([0x3FC0, 0x0000], ModbusAddress(address=0, data_type="float32"))
    1.5
    >>> decode_registers([0xFFFF], ModbusAddress(address=0, data_type="int16", scale=2))
    -2.0
    >>> decode_registers([1], ModbusAddress(address=0, data_type="int32"))
    Traceback (most recent call last):
    ...
    ValueError: int32 at address 0 takes 2 registers, got 1
    """
    count = register_count(address)
    if len(registers) != count:
        raise ValueError(f"{_where(address)} takes {count} registers, got {len(registers)}")
    for r in registers:
        if not 0 <= int(r) <= 0xFFFF:
            raise ValueError(f"{_where(address)}: register value {r!r} is not 16-bit")
    if address.register_type in _BIT_TYPES or address.data_type == "bool":
        raw = 1.0 if registers[0] else 0.0
    else:
        fmt = _TYPES[address.data_type][0]
        words = b"".join(int(r).to_bytes(2, "big") for r in registers)
        order = _ORDER_32[address.byte_order] if count == 2 else _ORDER_16[address.byte_order]
        raw = float(struct.unpack(">" + fmt, bytes(words[i] for i in order))[0])
    return raw * address.scale + address.offset


# -- read planning ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Point:
    """One sensor to read: whose it is and where (with the unit id it is read from)."""

    machine_id: str
    sensor: str
    address: ModbusAddress


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers (or bits) from ``start`` of one table of one
    unit, and the points it serves."""

    unit_id: int
    register_type: str
    start: int
    count: int
    points: tuple[Point, ...]

    @property
    def end(self) -> int:
        """Last address read (inclusive)."""
        return self.start + self.count - 1

    def describe(self) -> str:
        kind = "bits" if self.register_type in _BIT_TYPES else "registers"
        return f"unit {self.unit_id} {self.register_type} {kind} {self.start}..{self.end}"


def plan_blocks(
    points: Iterable[Point],
    *,
    max_gap: int = 8,
    max_registers: int = MAX_READ_REGISTERS,
    max_bits: int = MAX_READ_BITS,
) -> list[Block]:
    """Group points into as few reads as the protocol allows.

    Points of the same unit and register type are merged into one read when they are
    adjacent or at most ``max_gap`` unused addresses apart, up to ``max_registers``
    registers (``max_bits`` bits for coils and discrete inputs) per read. Fewer, larger
    reads are what makes Modbus polling fast (each request is a network round trip),
    but the gaps are read too, so a device that refuses reads of addresses it does not
    have needs ``max_gap=0``.

    >>> pts = [Point("P-1", f"s{i}", ModbusAddress(address=2 * i)) for i in range(100)]
    >>> [(b.start, b.count) for b in plan_blocks(pts)]
    [(0, 124), (124, 76)]
    """
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    groups: dict[tuple[int, str], list[Point]] = {}
    for p in points:
        groups.setdefault((p.address.unit_id, p.address.register_type), []).append(p)
    blocks: list[Block] = []
    for (unit, table), members in sorted(groups.items()):
        limit = max_bits if table in _BIT_TYPES else max_registers
        members.sort(key=lambda p: p.address.address)
        start = end = -1
        current: list[Point] = []
        for p in members:
            p_start = p.address.address
            p_end = p_start + register_count(p.address) - 1
            if current and p_start - end - 1 <= max_gap and max(end, p_end) - start < limit:
                end = max(end, p_end)
                current.append(p)
                continue
            if current:
                blocks.append(Block(unit, table, start, end - start + 1, tuple(current)))
            start, end, current = p_start, p_end, [p]
        if current:
            blocks.append(Block(unit, table, start, end - start + 1, tuple(current)))
    return blocks


# -- the driver -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModbusMachine:
    """Where one machine is read from: a device endpoint and the machine's unit id there.

    The plant declares addresses per machine *type*, so every machine of a type has the
    same unit id in its addresses; ``unit_id`` (when given) overrides it, which is how two
    machines of the same type behind one gateway are told apart.
    """

    machine: MachineSpec
    host: str
    port: int = 502
    unit_id: int | None = None

    def points(self) -> list[Point]:
        out = []
        for s in self.machine.sensors:
            if isinstance(s.address, ModbusAddress):
                address = s.address
                if self.unit_id is not None:
                    address = address.model_copy(update={"unit_id": self.unit_id})
                out.append(Point(self.machine.id, s.name, address))
        return out


class _Connection:
    """One TCP connection to a device, with its own reconnect backoff.

    pymodbus's own reconnect and retries are switched off: this class decides when to
    reconnect so that the backoff (and the counting of disconnects) is in one place.
    """

    def __init__(self, driver: ModbusDriver, host: str, port: int, index: int) -> None:
        self.driver = driver
        self.host = host
        self.port = port
        self.name = f"{host}:{port}#{index}"
        self.blocks: list[Block] = []
        self.client: AsyncModbusTcpClient | None = None
        self.backoff_s = driver.backoff_initial_s
        self.retry_at = 0.0  # time.monotonic() after which a connect may be tried

    async def ensure_connected(self) -> bool:
        if self.client is not None and self.client.connected:
            return True
        if self.client is not None:  # lost since the last read
            self.lost("connection closed by the device")
            return False
        if time.monotonic() < self.retry_at:
            return False
        client = AsyncModbusTcpClient(
            self.host,
            port=self.port,
            name=f"twinfleet-{self.name}",
            timeout=self.driver.timeout_s,
            retries=0,
            reconnect_delay=0,  # 0 disables pymodbus's automatic reconnection
        )
        try:
            ok = await client.connect()
        except (OSError, ModbusException) as exc:
            ok = False
            log.debug("connect to %s failed: %s", self.name, exc)
        if not ok:
            client.close()
            self.driver.stats.error("connect", f"cannot connect to Modbus device {self.name}")
            self._schedule_retry()
            return False
        self.client = client
        self.driver.stats.connects += 1
        log.info("connected to Modbus device %s", self.name)
        return True

    def lost(self, why: str) -> None:
        """The connection is gone (or no longer trusted): close it, count it, back off."""
        if self.client is not None:
            self.client.close()
            self.client = None
            self.driver.stats.disconnects += 1
            log.warning(
                "lost Modbus device %s (%s); retrying in %.1f s", self.name, why, self.backoff_s
            )
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        self.retry_at = time.monotonic() + self.backoff_s
        self.backoff_s = min(self.backoff_s * 2, self.driver.backoff_max_s)

    def succeeded(self) -> None:
        self.backoff_s = self.driver.backoff_initial_s

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    async def read_blocks(self, timestamp_ms: int, out: list[FieldValue]) -> None:
        for block in self.blocks:
            if not await self.ensure_connected():
                return
            assert self.client is not None
            try:
                response = await self._request(self.client, block)
            except ModbusException as exc:
                # A timeout leaves the stream in doubt (a late answer may still come), so
                # the connection is dropped either way and opened afresh.
                reason = "timeout" if self.client.connected else "connection"
                why = str(exc) or type(exc).__name__
                self.driver.stats.error(reason, f"{block.describe()} on {self.name}: {why}")
                self.lost(why)
                return
            except OSError as exc:
                self.lost(str(exc) or type(exc).__name__)
                return
            self.succeeded()
            out.extend(self.driver._decode(block, response, self.name, timestamp_ms))

    async def _request(self, client: AsyncModbusTcpClient, block: Block) -> ModbusPDU:
        self.driver.requests += 1
        start, count, unit = block.start, block.count, block.unit_id
        match block.register_type:
            case "holding":
                return await client.read_holding_registers(start, count=count, device_id=unit)
            case "input":
                return await client.read_input_registers(start, count=count, device_id=unit)
            case "coil":
                return await client.read_coils(start, count=count, device_id=unit)
            case _:
                return await client.read_discrete_inputs(start, count=count, device_id=unit)


class ModbusDriver:
    """Polls Modbus TCP devices and hands what it read to a sink.

    Parameters
    ----------
    machines
        Which machines to read and where (:class:`ModbusMachine`). Only sensors whose
        address is a :class:`~schemas.plant.ModbusAddress` are read.
    poll_interval_s
        Time between polls; default the smallest ``sample_period_s`` of the sensors read.
    connections
        TCP connections per device endpoint. A Modbus TCP connection carries one request
        at a time, so more connections let the reads of a large device run concurrently
        (blocks are dealt round-robin to them). Many devices accept only a few.
    timeout_s
        Connect and response timeout per request.
    backoff_initial_s, backoff_max_s
        Wait after a failed connect or lost connection, doubling up to the maximum and
        reset by the next successful read.
    max_gap
        Unused addresses a read may span to merge neighbours (see :func:`plan_blocks`).

    Modbus has no source timestamps: every value of a poll carries the poll's start time.
    """

    def __init__(
        self,
        machines: Sequence[ModbusMachine],
        *,
        poll_interval_s: float | None = None,
        connections: int = 1,
        timeout_s: float = 3.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_gap: int = 8,
    ) -> None:
        if connections < 1:
            raise ValueError(f"connections must be >= 1, got {connections}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if not 0 < backoff_initial_s <= backoff_max_s:
            raise ValueError(
                "backoff must satisfy 0 < backoff_initial_s <= backoff_max_s, got "
                f"{backoff_initial_s} and {backoff_max_s}"
            )
        self.machines = list(machines)
        seen: set[str] = set()
        for m in self.machines:
            if m.machine.id in seen:
                raise ValueError(f"machine {m.machine.id} is assigned twice")
            seen.add(m.machine.id)
        periods = [
            s.sample_period_s
            for m in self.machines
            for s in m.machine.sensors
            if isinstance(s.address, ModbusAddress)
        ]
        if not periods:
            raise ValueError("no sensor of the given machines has a Modbus address")
        if poll_interval_s is None:
            poll_interval_s = min(periods)
        if not poll_interval_s > 0:
            raise ValueError(f"poll_interval_s must be > 0, got {poll_interval_s}")
        self.poll_interval_s = float(poll_interval_s)
        self.timeout_s = float(timeout_s)
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = float(backoff_max_s)
        self.stats = DriverStats()
        self.requests = 0
        """Read requests sent (one per block per poll while connected)."""

        by_endpoint: dict[tuple[str, int], list[Point]] = {}
        for m in self.machines:
            by_endpoint.setdefault((m.host, m.port), []).extend(m.points())
        self.blocks: list[Block] = []
        self._connections: list[_Connection] = []
        for (host, port), points in by_endpoint.items():
            blocks = plan_blocks(points, max_gap=max_gap)
            self.blocks.extend(blocks)
            conns = [_Connection(self, host, port, i) for i in range(connections)]
            for i, block in enumerate(blocks):
                conns[i % connections].blocks.append(block)
            self._connections.extend(c for c in conns if c.blocks)

    def __repr__(self) -> str:
        return (
            f"ModbusDriver({len(self.machines)} machines, {len(self.blocks)} blocks, "
            f"every {self.poll_interval_s:g} s)"
        )

    async def read_once(self) -> list[FieldValue]:
        """Read every block once (connecting where needed) and return the values read.

        Blocks whose read failed are left out and counted in :attr:`stats`; this never
        raises for device or network trouble.
        """
        timestamp_ms = int(time.time() * 1000)
        per_conn: list[list[FieldValue]] = [[] for _ in self._connections]
        await asyncio.gather(
            *(
                c.read_blocks(timestamp_ms, out)
                for c, out in zip(self._connections, per_conn, strict=True)
            )
        )
        values = [v for out in per_conn for v in out]
        self.stats.values += len(values)
        return values

    async def run(self, sink: Sink) -> None:
        """Poll every ``poll_interval_s`` until cancelled, passing each poll's values to
        ``sink``. Lost connections are retried with backoff; nothing but cancellation ends
        this."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        try:
            while True:
                values = await self.read_once()
                if values:
                    try:
                        sink(values)
                    except Exception as exc:
                        self.stats.error("sink", f"the sink raised {type(exc).__name__}: {exc}")
                        log.exception("Modbus driver: the sink raised")
                next_at += self.poll_interval_s
                now = loop.time()
                if next_at < now:  # overran: skip the missed polls rather than burst
                    next_at = now
                await asyncio.sleep(next_at - now)
        finally:
            self.close()

    def close(self) -> None:
        """Close every connection (``run`` does this when cancelled)."""
        for c in self._connections:
            c.close()

    def _decode(
        self, block: Block, response: ModbusPDU, endpoint: str, timestamp_ms: int
    ) -> list[FieldValue]:
        where = f"{block.describe()} on {endpoint}"
        if response.isError():
            code = response.exception_code
            try:
                name = ExcCodes(code).name
            except ValueError:
                name = "unknown"
            self.stats.error("exception_response", f"{where}: exception response {code} ({name})")
            return []
        bits = block.register_type in _BIT_TYPES
        data: Sequence[int] = [int(b) for b in response.bits] if bits else list(response.registers)
        if len(data) < block.count:
            self.stats.error(
                "decode", f"{where}: got {len(data)} {'bits' if bits else 'registers'}"
            )
            return []
        out = []
        for p in block.points:
            offset = p.address.address - block.start
            try:
                value = decode_registers(
                    data[offset : offset + register_count(p.address)], p.address
                )
            except ValueError as exc:
                self.stats.error("decode", f"{where}: {p.machine_id}.{p.sensor}: {exc}")
                return []
            out.append(FieldValue(p.machine_id, p.sensor, value, timestamp_ms, Quality.GOOD))
        return out
