"""A simulated OPC UA plant server: every machine of a plant as live OPC UA variables.

:class:`OpcUaPlantServer` runs a real asyncua server whose address space mirrors the plant
(``Objects/<site>/<line>/<machine>/<sensor>``, browse names = ids). Each sensor is an
``AnalogItemType`` Double variable with ``EngineeringUnits`` and ``EURange`` properties
(so clients can resolve units and percent deadbands) and the string node id
``ns=<idx>;s=<machine_id>.<sensor>``. A :class:`~twins.simulator.plant.PlantSimulator`
drives the values: every ``tick_s`` wall seconds it advances ``tick_s * speed`` simulated
seconds and writes each sensor's latest reading with its source timestamp and quality.
Every sensor variable is historized (in memory, the last ``history_count`` values) so
clients can fill a connection gap with HistoryRead.

The address space is built with one bulk AddNodes call rather than node by node: asyncua's
per-node helpers cost a service round trip each, and a parent holding thousands of
children makes every insert slower, so each machine gets its own object.

With a certificate, key and users the server offers only Basic256Sha256 SignAndEncrypt
and username/password identities (no anonymous sessions). :func:`make_certificate`
creates a self-signed pair for either side whose application URI matches what the server
(:data:`SERVER_APPLICATION_URI`) or the driver (:data:`CLIENT_APPLICATION_URI`) declares.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography.x509.oid import ExtendedKeyUsageOID

from drivers.opcua import CLIENT_APPLICATION_URI, NAMESPACE_URI, _nid
from schemas.common import Quality
from schemas.plant import MachineSpec, Plant, SensorSpec
from twinfleet.services import free_port
from twins.simulator.faults import SensorFaults
from twins.simulator.plant import PlantSimulator

__all__ = [
    "CLIENT_APPLICATION_URI",
    "NAMESPACE_URI",
    "SERVER_APPLICATION_URI",
    "OpcUaPlantServer",
    "eu_information",
    "eu_range",
    "make_certificate",
    "serve_opcua",
]

_log = logging.getLogger(__name__)


SERVER_APPLICATION_URI = "urn:twinfleet:opcua:plant-server"
_UNECE_URI = "http://www.opcfoundation.org/UA/units/un/cefact"

# UNECE Recommendation 20 codes (what OPC UA's EUInformation.UnitId encodes) of the units
# the plant files use; any other unit string keeps UnitId -1 ("unknown") but its name.
_UNECE_CODES = {
    "degC": "CEL",
    "K": "KEL",
    "A": "AMP",
    "V": "VLT",
    "kW": "KWT",
    "W": "WTT",
    "bar": "BAR",
    "Pa": "PAL",
    "kPa": "KPA",
    "m3/h": "MQH",
    "mm/s": "C16",
    "m/s": "MTS",
    "rpm": "RPM",
    "Hz": "HTZ",
    "%": "P1",
    "g": "GRM",
    "mm": "MMT",
}

_QUALITY_STATUS = {
    Quality.GOOD: ua.StatusCodes.Good,
    Quality.UNCERTAIN: ua.StatusCodes.Uncertain,
    Quality.BAD: ua.StatusCodes.Bad,
}


def eu_information(unit: str) -> ua.EUInformation:
    """The OPC UA ``EUInformation`` of a plant-file unit string.

    >>> eu = eu_information("degC")
    >>> eu.UnitId == (ord("C") << 16) | (ord("E") << 8) | ord("L"), eu.DisplayName.Text
    (True, 'degC')
    >>> eu_information("furlong/fortnight").UnitId
    -1
    """
    code = _UNECE_CODES.get(unit)
    unit_id = -1
    if code is not None:
        unit_id = 0
        for ch in code:
            unit_id = (unit_id << 8) | ord(ch)
    return ua.EUInformation(
        NamespaceUri=_UNECE_URI,
        UnitId=unit_id,
        DisplayName=ua.LocalizedText(unit),
        Description=ua.LocalizedText(unit),
    )


def eu_range(sensor: SensorSpec) -> ua.Range:
    """The ``EURange`` of a sensor: its critical limits, else its normal limits widened,
    else 0..100. Percent deadbands are relative to this span, so it must not be empty.

    >>> from schemas.plant import SensorSpec
    >>> r = eu_range(SensorSpec(name="t", kind="temperature", unit="degC",
    ...                         normal_high=60, critical_high=75))
    >>> (r.Low, r.High)
    (0.0, 75.0)
    """
    high = sensor.critical_high
    if high is None and sensor.normal_high is not None:
        high = sensor.normal_high * 1.5 if sensor.normal_high > 0 else sensor.normal_high + 100
    low = sensor.critical_low if sensor.critical_low is not None else sensor.normal_low
    if low is None:
        low = 0.0 if high is None or high > 0 else high - 100
    if high is None:
        high = low + 100.0
    if high <= low:
        high = low + 1.0
    return ua.Range(Low=float(low), High=float(high))


async def make_certificate(
    cert_path: str | Path,
    key_path: str | Path,
    *,
    application_uri: str,
    server: bool,
    host_name: str | None = None,
) -> tuple[Path, Path]:
    """Create a self-signed application certificate (DER) and private key (PEM).

    OPC UA peers check that the certificate's SubjectAltName URI equals the application
    URI the peer declares, so pass :data:`SERVER_APPLICATION_URI` for the server and
    :data:`CLIENT_APPLICATION_URI` (or the driver's ``application_uri``) for a client.
    Existing valid files are kept. Returns ``(cert_path, key_path)``.
    """
    cert_path, key_path = Path(cert_path), Path(key_path)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    use = [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
    await cert_gen.setup_self_signed_certificate(
        key_path,
        cert_path,
        application_uri,
        host_name or socket.gethostname(),
        use,
        {"organizationName": "twinfleet"},
    )
    return cert_path, key_path


class _PasswordUsers(UserManager):
    """asyncua user manager: only the configured username/password pairs get a session."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is None or self._users.get(username) != password:
            return None
        return User(role=UserRole.User, name=username)


@dataclass(slots=True)
class _Var:
    node_id: ua.NodeId
    last: float


class OpcUaPlantServer:
    """A live OPC UA server for a plant, its values driven by a seeded plant simulator.

    Parameters
    ----------
    plant
        The plant whose machines the server exposes.
    host, port
        Where to listen; port 0 takes a free port (chosen before the server starts).
    seed, start_ms, faults
        Passed to :class:`PlantSimulator` (start defaults to now, faults to none).
    tick_s, speed
        Every ``tick_s`` wall seconds the simulator advances ``tick_s * speed`` seconds.
    history_count
        Values kept per sensor for HistoryRead.
    certificate, private_key, users
        All three (paths and ``{username: password}``) enable security: only
        Basic256Sha256 SignAndEncrypt with username/password.
    """

    def __init__(
        self,
        plant: Plant,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        start_ms: int | None = None,
        faults: SensorFaults | None = None,
        tick_s: float = 1.0,
        speed: float = 1.0,
        history_count: int = 1000,
        certificate: str | Path | None = None,
        private_key: str | Path | None = None,
        users: Mapping[str, str] | None = None,
        application_uri: str = SERVER_APPLICATION_URI,
        namespace_uri: str = NAMESPACE_URI,
    ) -> None:
        if not isinstance(plant, Plant):
            raise ValueError(f"plant must be a schemas.plant.Plant, got {type(plant).__name__}")
        if not 0 <= port < 65536:
            raise ValueError(f"port must be 0..65535, got {port}")
        if not (math.isfinite(tick_s) and tick_s > 0):
            raise ValueError(f"tick_s must be a finite number > 0, got {tick_s!r}")
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a finite number > 0, got {speed!r}")
        if history_count < 1:
            raise ValueError(f"history_count must be at least 1, got {history_count}")
        secured = [certificate is not None, private_key is not None, bool(users)]
        if any(secured) and not all(secured):
            raise ValueError(
                "security needs certificate, private_key and users together "
                f"(got certificate={certificate!r}, private_key={private_key!r}, "
                f"users={'set' if users else 'none'})"
            )
        self.plant = plant
        self.host = host
        self.port = port or free_port()
        self.seed = seed
        self.start_ms = int(time.time() * 1000) if start_ms is None else start_ms
        self.faults = SensorFaults.none() if faults is None else faults
        self.tick_s = float(tick_s)
        self.speed = float(speed)
        self.history_count = int(history_count)
        self.certificate = Path(certificate) if certificate is not None else None
        self.private_key = Path(private_key) if private_key is not None else None
        self.users = dict(users or {})
        self.application_uri = application_uri
        self.namespace_uri = namespace_uri
        self.namespace_index = -1
        self.start_seconds = 0.0
        """How long the last :meth:`start` took (address space, history, listening)."""
        self.writes = 0
        """Value changes written since start."""
        self._server: Server | None = None
        self._sim: PlantSimulator | None = None
        self._vars: dict[tuple[str, str], _Var] = {}
        self._task: asyncio.Task[None] | None = None
        self._paused = False
        self._rate_window: list[tuple[float, int]] = []

    # -- what can be read -------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/twinfleet/"

    @property
    def secured(self) -> bool:
        return self.certificate is not None

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def rate(self) -> float:
        """Value changes written per second over the last few seconds."""
        window = self._rate_window
        if len(window) < 2:
            return 0.0
        (t0, n0), (t1, n1) = window[0], window[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def node_id(self, machine_id: str, sensor: str) -> str:
        """The string node id of a sensor, e.g. ``ns=2;s=P-101.flow``."""
        return self._var(machine_id, sensor).node_id.to_string()

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Build the address space, enable history, start listening and the live updates."""
        if self._server is not None:
            raise RuntimeError(f"the OPC UA plant server at {self.endpoint} is already running")
        began = time.perf_counter()
        server = Server(user_manager=_PasswordUsers(self.users) if self.secured else None)
        # No 1 Hz CurrentTime writer: it only costs a second when stopping.
        server.disable_clock()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"twinfleet plant {self.plant.name}")
        await server.set_application_uri(self.application_uri)
        if self.secured:
            assert self.certificate is not None and self.private_key is not None
            await server.load_certificate(str(self.certificate))
            await server.load_private_key(str(self.private_key))
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
            server.set_identity_tokens([ua.UserNameIdentityToken])
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self.namespace_index = await server.register_namespace(self.namespace_uri)
        self._sim = PlantSimulator(
            self.plant, seed=self.seed, start_ms=self.start_ms, faults=self.faults
        )
        await self._build_address_space(server)
        await server.historize_node_data_change(
            [server.get_node(v.node_id) for v in self._vars.values()],
            # No age limit: HistoryDict ages values by their *source* time, which for a
            # simulated or replayed clock would drop them at once; the count bounds memory.
            period=None,  # type: ignore[arg-type]
            count=self.history_count,
        )
        try:
            await server.start()
        except OSError as exc:
            await server.stop()
            raise OSError(
                exc.errno, f"cannot listen on {self.host}:{self.port} for OPC UA: {exc.strerror}"
            ) from None
        self._server = server
        self.writes = 0
        self._rate_window = [(time.monotonic(), 0)]
        self._task = asyncio.create_task(self._live(), name=f"opcua-sim:{self.port}")
        self.start_seconds = time.perf_counter() - began
        _log.info(
            "OPC UA plant server %s: %d machines, %d variables, started in %.2f s",
            self.endpoint,
            len(self.plant.machines),
            len(self._vars),
            self.start_seconds,
        )

    async def stop(self) -> None:
        """Stop the live updates and the server (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def __aenter__(self) -> OpcUaPlantServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- what can be done -------------------------------------------------------------

    def pause(self) -> None:
        """Stop writing simulator values (so a test can check exact values it set)."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    async def set_value(
        self,
        machine_id: str,
        sensor: str,
        value: float,
        quality: Quality = Quality.GOOD,
        timestamp_ms: int | None = None,
    ) -> None:
        """Write one value now, as the device would (source time defaults to now)."""
        var = self._var(machine_id, sensor)
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        await self._write(var, float(value), Quality(quality), ts)

    # -- inside -----------------------------------------------------------------------

    def _var(self, machine_id: str, sensor: str) -> _Var:
        try:
            return self._vars[(machine_id, sensor)]
        except KeyError:
            raise KeyError(
                f"the OPC UA plant server has no variable for sensor {sensor!r} of "
                f"machine {machine_id!r}"
            ) from None

    async def _write(self, var: _Var, value: float, quality: Quality, ts_ms: int) -> None:
        server = self._server
        if server is None:
            raise RuntimeError("the OPC UA plant server is not running (call start() first)")
        source = datetime.fromtimestamp(ts_ms / 1000, UTC)
        dv = ua.DataValue(
            Value=ua.Variant(value, ua.VariantType.Double),
            StatusCode=ua.StatusCode(_QUALITY_STATUS[quality]),  # type: ignore[arg-type]
            SourceTimestamp=source,  # type: ignore[arg-type]
            ServerTimestamp=datetime.now(UTC),  # type: ignore[arg-type]
        )
        await server.write_attribute_value(var.node_id, dv)
        var.last = value
        self.writes += 1

    async def _live(self) -> None:
        sim = self._sim
        assert sim is not None
        next_at = time.monotonic()
        while True:
            next_at += self.tick_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if self._paused:
                continue
            try:
                for batch in sim.advance(self.tick_s * self.speed):
                    r = batch.readings
                    for machine, sid, ts, value, q in zip(
                        r.machine_id, r.sensor_id, r.timestamp, r.value, r.quality, strict=True
                    ):
                        var = self._vars.get((machine, sid.partition(".")[2]))
                        if var is not None and not self._paused:
                            await self._write(var, value, Quality(q), int(ts))
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.exception("OPC UA plant server %s: a simulator tick failed", self.endpoint)
            now = time.monotonic()
            self._rate_window.append((now, self.writes))
            while len(self._rate_window) > 2 and now - self._rate_window[0][0] > 5.0:
                self._rate_window.pop(0)
            if next_at < now - 10 * self.tick_s:  # far behind: do not try to catch up
                next_at = now

    async def _build_address_space(self, server: Server) -> None:
        """One AddNodes call for every folder, machine, variable and property."""
        assert self._sim is not None
        ns = self.namespace_index
        items: list[ua.AddNodesItem] = []
        objects = _nid(ua.ObjectIds.ObjectsFolder)
        done: set[str] = set()
        first = {
            f"{b.readings.machine_id[i]}.{b.readings.sensor_id[i].partition('.')[2]}": v
            for b in self._sim.advance(0.001)
            for i, v in enumerate(b.readings.value)
        }
        for machine in self.plant.machines:
            site_key, line_key = f"site:{machine.site}", f"line:{machine.site}/{machine.line}"
            site_id = _nid(site_key, ns)
            line_id = _nid(line_key, ns)
            if site_key not in done:
                done.add(site_key)
                items.append(_object(site_id, objects, machine.site, ns, folder=True))
            if line_key not in done:
                done.add(line_key)
                items.append(_object(line_id, site_id, machine.line, ns, folder=True))
            machine_id = _nid(f"machine:{machine.id}", ns)
            items.append(_object(machine_id, line_id, machine.id, ns, folder=False))
            items.extend(self._sensor_items(machine, machine_id, first))
        results = await server.iserver.isession.add_nodes(items)
        for item, result in zip(items, results, strict=True):
            if not result.StatusCode.is_good():
                raise RuntimeError(
                    f"cannot create OPC UA node {item.RequestedNewNodeId.to_string()} "
                    f"({item.BrowseName.Name}): {result.StatusCode.name}"
                )

    def _sensor_items(
        self, machine: MachineSpec, parent: ua.NodeId, first: Mapping[str, float]
    ) -> list[ua.AddNodesItem]:
        ns = self.namespace_index
        items = []
        for sensor in machine.sensors:
            key = f"{machine.id}.{sensor.name}"
            node_id = _nid(key, ns)
            value = first.get(key, math.nan)
            self._vars[(machine.id, sensor.name)] = _Var(node_id, value)
            attrs = ua.VariableAttributes()
            attrs.DisplayName = ua.LocalizedText(sensor.name)
            attrs.Description = ua.LocalizedText(f"{sensor.kind.value} of {machine.id}")
            attrs.DataType = _nid(ua.ObjectIds.Double)
            attrs.Value = ua.Variant(value, ua.VariantType.Double)
            attrs.ValueRank = ua.ValueRank.Scalar
            attrs.ArrayDimensions = None  # type: ignore[assignment]
            attrs.WriteMask = 0
            attrs.UserWriteMask = 0
            attrs.Historizing = True
            access = ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.HistoryRead.mask
            attrs.AccessLevel = access
            attrs.UserAccessLevel = access
            attrs.MinimumSamplingInterval = 0.0
            items.append(
                _add_item(
                    node_id,
                    parent,
                    ua.QualifiedName(sensor.name, ns),
                    ua.NodeClass.Variable,
                    ua.ObjectIds.HasComponent,
                    ua.ObjectIds.AnalogItemType,
                    attrs,
                )
            )
            for name, prop_value, data_type in (
                ("EngineeringUnits", eu_information(sensor.unit), ua.ObjectIds.EUInformation),
                ("EURange", eu_range(sensor), ua.ObjectIds.Range),
            ):
                prop = ua.VariableAttributes()
                prop.DisplayName = ua.LocalizedText(name)
                prop.Description = ua.LocalizedText(name)
                prop.DataType = _nid(data_type)
                prop.Value = ua.Variant(prop_value, ua.VariantType.ExtensionObject)
                prop.ValueRank = ua.ValueRank.Scalar
                prop.ArrayDimensions = None  # type: ignore[assignment]
                prop.AccessLevel = ua.AccessLevel.CurrentRead.mask
                prop.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
                items.append(
                    _add_item(
                        _nid(f"{key}.{name}", ns),
                        node_id,
                        ua.QualifiedName(name, 0),
                        ua.NodeClass.Variable,
                        ua.ObjectIds.HasProperty,
                        ua.ObjectIds.PropertyType,
                        prop,
                    )
                )
        return items


def _object(
    node_id: ua.NodeId, parent: ua.NodeId, name: str, ns: int, *, folder: bool
) -> ua.AddNodesItem:
    attrs = ua.ObjectAttributes()
    attrs.DisplayName = ua.LocalizedText(name)
    attrs.Description = ua.LocalizedText(name)
    attrs.EventNotifier = 0
    return _add_item(
        node_id,
        parent,
        ua.QualifiedName(name, ns),
        ua.NodeClass.Object,
        ua.ObjectIds.Organizes if folder else ua.ObjectIds.HasComponent,
        ua.ObjectIds.FolderType if folder else ua.ObjectIds.BaseObjectType,
        attrs,
    )


def _add_item(
    node_id: ua.NodeId,
    parent: ua.NodeId,
    name: ua.QualifiedName,
    node_class: ua.NodeClass,
    reference: int,
    type_definition: int,
    attrs: Any,
) -> ua.AddNodesItem:
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = node_id
    item.BrowseName = name
    item.NodeClass = node_class
    item.ParentNodeId = parent
    item.ReferenceTypeId = _nid(reference)
    item.TypeDefinition = _nid(type_definition)
    item.NodeAttributes = attrs
    return item


async def serve_opcua(
    plant: Plant,
    host: str = "127.0.0.1",
    port: int = 4840,
    seed: int = 0,
    *,
    tick_s: float = 1.0,
    speed: float = 1.0,
    certificate: str | Path | None = None,
    private_key: str | Path | None = None,
    users: Mapping[str, str] | None = None,
    history_count: int = 1000,
) -> None:
    """Run a simulated OPC UA plant server until cancelled (``twinfleet sim opcua``)."""
    server = OpcUaPlantServer(
        plant,
        host=host,
        port=port,
        seed=seed,
        tick_s=tick_s,
        speed=speed,
        certificate=certificate,
        private_key=private_key,
        users=users,
        history_count=history_count,
    )
    await server.start()
    _log.info("serving %s (%.2f s to start)", server.endpoint, server.start_seconds)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
