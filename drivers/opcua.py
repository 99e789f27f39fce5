"""OPC UA field driver: subscribes to a server's sensor variables and feeds the gateway.

:class:`OpcUaDriver` connects (optionally with Basic256Sha256 SignAndEncrypt and a
username/password), finds each machine's variables, and creates one subscription with a
monitored item per sensor (sampling interval, queue size, ``DataChangeFilter`` trigger and
deadband). Data changes reach the sink as :class:`~drivers.base.FieldValue` lists, one list
per publish response, because the gateway is sized for ~10K changes/s and a call per value
would cost more than the values.

Finding variables: with ``discover=True`` (the default) the driver translates the browse
path ``Objects/<site>/<line>/<machine>`` (browse names in the plant namespace, found by its
URI) and maps the machine's variables by browse name to its sensor names. With
``discover=False`` it uses each sensor's :class:`~schemas.plant.OpcUaAddress` node id (so
the endpoint serves one machine). A sensor the server lacks, or a variable the plant does
not know, is counted (``stats.per_reason``) with a message naming machine and sensor; it is
never fatal.

Percent deadbands are relative to each variable's ``EURange``. asyncua servers accept but
ignore ``DeadbandType.Percent``, so by default the driver reads ``EURange`` and asks for the
equivalent absolute deadband (``percent_on_server=True`` sends Percent as is).

:meth:`OpcUaDriver.run` never gives up on connection problems: a lost connection is
counted, retried with backoff (0.5 s doubling to 30 s), re-subscribed, and the gap filled
from the server's history (HistoryRead) when it keeps one. A refused login or rejected
security is an :class:`OpcUaAuthError` from :meth:`OpcUaDriver.connect`; ``run`` logs it,
counts it and keeps retrying (the server's configuration may be fixed meanwhile).

Security boundaries (issue 18): a password is only sent over a secured channel (a driver
given one without ``security`` is refused when it is made); a secured channel trusts the
server's certificate only by an explicit decision (``OpcUaSecurity.server_certificate``
pinned, or ``trust_on_first_use=True``, which logs the certificate's SHA-256 fingerprint
and pins it for every reconnect); and every message the server sends is bounded
(``max_message_size``, ``max_chunk_count``), whatever the server acknowledges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, TypeVar

from asyncua import Client, ua
from asyncua.common.connection import TransportLimits
from asyncua.common.subscription import (
    DataChangeEvent,
    OverflowPolicy,
    StatusChangeEvent,
    Subscription,
)
from asyncua.crypto import security_policies
from asyncua.ua import uaerrors

from drivers.base import DriverStats, FieldValue, Sink
from schemas.common import Quality
from schemas.plant import MachineSpec, OpcUaAddress

__all__ = [
    "CLIENT_APPLICATION_URI",
    "NAMESPACE_URI",
    "Deadband",
    "OpcUaAuthError",
    "OpcUaDriver",
    "OpcUaError",
    "OpcUaSecurity",
]

_log = logging.getLogger(__name__)


def _nid(identifier: int | str, namespace: int = 0) -> ua.NodeId:
    """``ua.NodeId`` with plain ints/strs (asyncua types its fields as its own int/str
    subclasses, which mypy cannot match to literals)."""
    return ua.NodeId(identifier, namespace)  # type: ignore[arg-type]


NAMESPACE_URI = "urn:twinfleet:plant"
"""The namespace whose browse names are the plant's site, line, machine and sensor ids."""
CLIENT_APPLICATION_URI = "urn:twinfleet:opcua:driver"
"""The application URI the driver declares (its certificate must carry the same URI)."""

Deadband = tuple[Literal["absolute", "percent"], float] | None
SensorKey = tuple[str, str]

_AUTH_ERRORS = (
    uaerrors.BadUserAccessDenied,
    uaerrors.BadIdentityTokenInvalid,
    uaerrors.BadIdentityTokenRejected,
    uaerrors.BadSecurityPolicyRejected,
    uaerrors.BadSecurityModeRejected,
    uaerrors.BadSecurityChecksFailed,
    uaerrors.BadCertificateInvalid,
    uaerrors.BadCertificateUntrusted,
)
_TRIGGERS = {
    "StatusValueTimestamp": ua.DataChangeTrigger.StatusValueTimestamp,
    "StatusValue": ua.DataChangeTrigger.StatusValue,
}
_CHUNK = 1000  # monitored items / nodes per service call
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
"""The largest message (all chunks) the driver accepts from a server by default."""
MAX_CHUNK_COUNT = 4096
"""The most chunks of one message the driver accepts by default (16 MiB in 4 KiB chunks)."""
_BYTES_PER_HISTORY_VALUE = 64
"""A generous size of one DataValue in a HistoryRead answer, to size its calls."""


class OpcUaError(RuntimeError):
    """The OPC UA server cannot be used as configured; the message says why."""


class OpcUaAuthError(OpcUaError):
    """The server refused the login or the security settings (wrong password, unknown
    user, rejected certificate, no matching secure endpoint)."""


@dataclass(frozen=True, slots=True)
class OpcUaSecurity:
    """A secured session: the client's certificate (DER or PEM) and private key (PEM),
    and the server's certificate, pinned. Without one, ``trust_on_first_use=True`` must
    say so: the certificate the server presents first is then trusted (and logged with
    its fingerprint) and pinned for every reconnect; otherwise the driver is refused.

    >>> OpcUaSecurity("c.der", "c.pem")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: security.server_certificate is not set: pin the OPC UA server's ...
    """

    certificate: str | Path
    private_key: str | Path
    server_certificate: str | Path | None = None
    policy: Literal["Basic256Sha256"] = "Basic256Sha256"
    mode: Literal["SignAndEncrypt", "Sign"] = "SignAndEncrypt"
    trust_on_first_use: bool = False

    def __post_init__(self) -> None:
        if self.server_certificate is None and not self.trust_on_first_use:
            raise ValueError(
                "security.server_certificate is not set: pin the OPC UA server's "
                "certificate, or set security.trust_on_first_use to accept the one it "
                "presents (logged)"
            )
        if self.mode not in ("SignAndEncrypt", "Sign"):
            raise ValueError(f"security.mode must be SignAndEncrypt or Sign, got {self.mode!r}")


class _BoundedClient(Client):
    """asyncua's client with its transport limits kept: asyncua sends its limits in the
    Hello but then adopts whatever the server acknowledges (0 is "no limit"); this one
    keeps the smaller of the two for everything the server sends afterwards."""

    async def send_hello(self) -> None:
        await super().send_hello()
        limits: TransportLimits = self.uaclient.protocol._connection._limits  # type: ignore[union-attr]
        for name, ours in (
            ("max_message_size", self.max_messagesize),
            ("max_chunk_count", self.max_chunkcount),
        ):
            theirs = getattr(limits, name)
            setattr(limits, name, ours if theirs <= 0 else min(theirs, ours))


@dataclass(slots=True)
class _Item:
    key: SensorKey
    node_id: ua.NodeId
    range: tuple[float, float] | None = None


def _to_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def _quality(status: ua.StatusCode | None) -> Quality:
    if status is None or status.is_good():
        return Quality.GOOD
    if status.is_uncertain():
        return Quality.UNCERTAIN
    return Quality.BAD


def _value(dv: ua.DataValue) -> float:
    v = dv.Value.Value if dv.Value is not None else None
    if isinstance(v, bool) or not isinstance(v, int | float):
        return math.nan
    return float(v)


def _plain(node_id: ua.NodeId) -> ua.NodeId:
    """A NodeId from an ExpandedNodeId (browse results), so it keys the same dicts."""
    return ua.NodeId(node_id.Identifier, node_id.NamespaceIndex, node_id.NodeIdType)


def _path(*names: tuple[str, int]) -> ua.RelativePath:
    return ua.RelativePath(
        Elements=[
            ua.RelativePathElement(
                ReferenceTypeId=_nid(ua.ObjectIds.HierarchicalReferences),
                IsInverse=False,  # type: ignore[arg-type]
                IncludeSubtypes=True,  # type: ignore[arg-type]
                TargetName=ua.QualifiedName(name, ns),
            )
            for name, ns in names
        ]
    )


_T = TypeVar("_T")


def _chunks(items: Sequence[_T], size: int = _CHUNK) -> Iterable[Sequence[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class OpcUaDriver:
    """Reads a set of machines from one OPC UA server through one subscription.

    Parameters
    ----------
    endpoint
        ``opc.tcp://host:port/path``.
    machines
        The machines (and their sensors) to read.
    sampling_interval_ms, queue_size, publishing_interval_ms
        Monitored item sampling and queue, and the subscription's publishing interval.
    deadband
        ``None``, ``("absolute", x)`` (engineering units) or ``("percent", x)`` (of EURange).
    trigger
        ``"StatusValueTimestamp"`` (a new source time alone is a change) or ``"StatusValue"``.
    security, username, password
        Optional secure channel and user identity; a password needs ``security``.
    max_message_size, max_chunk_count
        The largest message (bytes) and the most chunks of one message the driver accepts
        from the server (both > 0).
    discover
        Browse for machines (True) or use the sensors' ``OpcUaAddress`` node ids (False).
    """

    def __init__(
        self,
        endpoint: str,
        machines: Sequence[MachineSpec],
        *,
        sampling_interval_ms: float = 0.0,
        queue_size: int = 10,
        publishing_interval_ms: float = 100.0,
        deadband: Deadband = None,
        trigger: Literal["StatusValueTimestamp", "StatusValue"] = "StatusValueTimestamp",
        percent_on_server: bool = False,
        security: OpcUaSecurity | None = None,
        username: str | None = None,
        password: str | None = None,
        discover: bool = True,
        namespace_uri: str = NAMESPACE_URI,
        application_uri: str = CLIENT_APPLICATION_URI,
        timeout_s: float = 4.0,
        watchdog_s: float = 1.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        backfill: bool = True,
        max_backfill_per_sensor: int = 10_000,
        max_message_size: int = MAX_MESSAGE_SIZE,
        max_chunk_count: int = MAX_CHUNK_COUNT,
    ) -> None:
        if not endpoint.startswith("opc.tcp://"):
            raise ValueError(f"endpoint must start with opc.tcp://, got {endpoint!r}")
        if not machines:
            raise ValueError("machines: the driver needs at least one machine to read")
        if deadband is not None:
            kind, amount = deadband
            if kind not in ("absolute", "percent"):
                raise ValueError(f"deadband kind must be 'absolute' or 'percent', got {kind!r}")
            if not math.isfinite(amount) or amount < 0 or (kind == "percent" and amount > 100):
                limit = "in [0, 100]" if kind == "percent" else "a finite number >= 0"
                raise ValueError(f"{kind} deadband must be {limit}, got {amount!r}")
        if trigger not in _TRIGGERS:
            raise ValueError(f"trigger must be one of {sorted(_TRIGGERS)}, got {trigger!r}")
        if password is not None and username is None:
            raise ValueError("a password needs a username")
        if password is not None and security is None:
            raise ValueError(
                f"password: refusing to send the OPC UA password for {endpoint} without "
                "channel security; configure security (certificate, private_key and the "
                "server's certificate) or use an anonymous session"
            )
        if max_message_size <= 0 or max_chunk_count <= 0:
            raise ValueError(
                "max_message_size and max_chunk_count must be > 0 (0 would mean no limit), "
                f"got {max_message_size!r} and {max_chunk_count!r}"
            )
        if sampling_interval_ms < 0 or publishing_interval_ms <= 0 or queue_size < 0:
            raise ValueError(
                "sampling_interval_ms and queue_size must be >= 0 and publishing_interval_ms > 0"
            )
        self.endpoint = endpoint
        self.machines = list(machines)
        self.sampling_interval_ms = float(sampling_interval_ms)
        self.queue_size = int(queue_size)
        self.publishing_interval_ms = float(publishing_interval_ms)
        self.deadband = deadband
        self.trigger = trigger
        self.percent_on_server = percent_on_server
        self.security = security
        self.username = username
        self.password = password
        self.discover = discover
        self.namespace_uri = namespace_uri
        self.application_uri = application_uri
        self.timeout_s = timeout_s
        self.watchdog_s = watchdog_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.backfill = backfill
        self.max_backfill_per_sensor = max_backfill_per_sensor
        self.max_message_size = int(max_message_size)
        self.max_chunk_count = int(max_chunk_count)
        self.server_fingerprint: str | None = None
        """SHA-256 of the certificate of the server the secured session trusts."""
        self._first_used: bytes | None = None

        self.stats = DriverStats()
        self.units: dict[SensorKey, str] = {}
        """Unit of each sensor as the server's EngineeringUnits names it."""
        self.problems: list[str] = []
        """Every missing/unknown variable message, once each."""
        self._reported: set[str] = set()
        self._client: Client | None = None
        self._sub: Subscription | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._items: dict[ua.NodeId, _Item] = {}
        self._lost = asyncio.Event()
        self._lost_reason = ""
        self._pending: list[FieldValue] = []
        self._flush_scheduled = False
        self._holding = False
        self._held: list[FieldValue] = []
        self._last_ts: dict[SensorKey, int] = {}
        self._resync: set[SensorKey] = set()
        self._lost_at_ms: int | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None and not self._lost.is_set()

    # -- connection -------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the secure channel and session.

        Raises :class:`OpcUaAuthError` when the server refuses the identity or security,
        :class:`OpcUaError` for other refusals, ``OSError`` when it cannot be reached.
        """
        await self.disconnect()
        client = _BoundedClient(
            self.endpoint, timeout=self.timeout_s, watchdog_intervall=self.watchdog_s
        )
        client.max_messagesize = self.max_message_size
        client.max_chunkcount = self.max_chunk_count
        client.application_uri = self.application_uri
        client.name = client.description = "twinfleet OPC UA driver"
        client.session_timeout = 60_000
        if self.username is not None:
            client.set_user(self.username)
            if self.password is not None:
                client.set_password(self.password)
        self._lost = asyncio.Event()
        client.connection_lost_callback = self._on_connection_lost
        try:
            if self.security is not None:
                await self._set_security(client)
            await client.connect()
        except _AUTH_ERRORS as exc:
            who = f"user {self.username!r}" if self.username else "an anonymous session"
            raise OpcUaAuthError(
                f"OPC UA server {self.endpoint} refused {who}"
                f"{' with ' + self._security_text() if self.security else ''}: "
                f"{type(exc).__name__} ({exc})"
            ) from None
        except uaerrors.UaStatusCodeError as exc:
            raise OpcUaError(
                f"OPC UA server {self.endpoint} refused the connection: {type(exc).__name__}"
            ) from None
        except TimeoutError as exc:
            raise OSError(f"OPC UA server {self.endpoint} did not answer in time") from exc
        except ua.UaError as exc:
            if "certificate mismatch" not in str(exc):
                raise
            with contextlib.suppress(Exception):
                await client.disconnect()
            raise OpcUaAuthError(
                f"OPC UA server {self.endpoint} presented a certificate other than the "
                "trusted one (security.server_certificate or the one first used)"
            ) from None
        if self.security is not None:
            self._trusted(client)
        self._client = client
        self.stats.connects += 1

    async def disconnect(self) -> None:
        """Close the subscription and session (best effort, idempotent)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await consumer
        self._sub = None
        client, self._client = self._client, None
        if client is not None:
            client.connection_lost_callback = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), timeout=2.0)

    def _trusted(self, client: Client) -> None:
        """Note the fingerprint of the server certificate the session trusts; on first
        use, log it and pin it for every reconnect."""
        import hashlib

        peer = client.security_policy.peer_certificate
        if not peer:
            return
        self.server_fingerprint = hashlib.sha256(peer).hexdigest()
        if self.security is not None and self.security.server_certificate is None:
            if self._first_used is None:
                _log.warning(
                    "OPC UA server %s: trusting on first use the certificate it presented "
                    "(SHA-256 %s); pin it with security.server_certificate",
                    self.endpoint,
                    self.server_fingerprint,
                )
            self._first_used = peer

    def _security_text(self) -> str:
        assert self.security is not None
        return f"{self.security.policy} {self.security.mode}"

    async def _set_security(self, client: Client) -> None:
        sec = self.security
        assert sec is not None
        mode = getattr(ua.MessageSecurityMode, sec.mode)
        server_cert: str | bytes | None = (
            str(sec.server_certificate) if sec.server_certificate else self._first_used
        )
        try:
            await client.set_security(
                security_policies.SecurityPolicyBasic256Sha256,
                certificate=str(sec.certificate),
                private_key=str(sec.private_key),
                server_certificate=server_cert,
                mode=mode,
            )
        except ValueError as exc:  # find_endpoint: no such endpoint
            raise OpcUaAuthError(
                f"OPC UA server {self.endpoint} offers no {self._security_text()} endpoint ({exc})"
            ) from None
        except FileNotFoundError as exc:
            raise OpcUaAuthError(
                f"OPC UA security: cannot read {exc.filename} (client certificate or key)"
            ) from None

    async def _on_connection_lost(self, exc: Exception) -> None:
        self._lost_reason = f"{type(exc).__name__}: {exc}"
        self._lost.set()

    # -- discovery --------------------------------------------------------------------

    def _problem(self, reason: str, message: str) -> None:
        if message in self._reported:
            return
        self._reported.add(message)
        self.problems.append(message)
        self.stats.error(reason, message)
        _log.warning("%s", message)

    async def find_variables(self) -> dict[SensorKey, ua.NodeId]:
        """Map every sensor the server has to its variable's node id (after connect)."""
        client = self._require_client()
        found = await (self._browse(client) if self.discover else self._by_address(client))
        self._items = {node_id: _Item(key, node_id) for key, node_id in found.items()}
        await self._read_properties(client)
        return found

    def _require_client(self) -> Client:
        if self._client is None:
            raise OpcUaError(f"not connected to {self.endpoint} (call connect() first)")
        return self._client

    async def _browse(self, client: Client) -> dict[SensorKey, ua.NodeId]:
        try:
            ns = await client.get_namespace_index(self.namespace_uri)
        except ValueError:
            raise OpcUaError(
                f"OPC UA server {self.endpoint} has no namespace {self.namespace_uri!r} "
                "(is it a twinfleet plant server? otherwise use discover=False with node ids)"
            ) from None
        objects = _nid(ua.ObjectIds.ObjectsFolder)
        paths = [_path((m.site, ns), (m.line, ns), (m.id, ns)) for m in self.machines]
        machine_nodes: list[tuple[MachineSpec, ua.NodeId]] = []
        for chunk_start in range(0, len(paths), _CHUNK):
            chunk = paths[chunk_start : chunk_start + _CHUNK]
            results = await client.translate_browsepaths(objects, chunk)
            for machine, result in zip(
                self.machines[chunk_start : chunk_start + _CHUNK], results, strict=True
            ):
                where = f"Objects/{machine.site}/{machine.line}/{machine.id}"
                if not result.StatusCode.is_good() or not result.Targets:
                    for sensor in machine.sensors:
                        self._problem(
                            "missing_variable",
                            f"OPC UA server {self.endpoint} has no machine {machine.id} "
                            f"(browsed {where}): sensor {machine.id}.{sensor.name} not read",
                        )
                    continue
                machine_nodes.append((machine, _plain(result.Targets[0].TargetId)))
        found: dict[SensorKey, ua.NodeId] = {}
        for found_chunk in _chunks(machine_nodes):
            browsed = await client.browse_nodes([client.get_node(n) for _, n in found_chunk])
            for (machine, _), (_, browse) in zip(found_chunk, browsed, strict=True):
                variables = {
                    ref.BrowseName.Name: _plain(ref.NodeId)
                    for ref in browse.References
                    if ref.NodeClass == ua.NodeClass.Variable and ref.IsForward
                }
                names = {s.name for s in machine.sensors}
                for sensor in machine.sensors:
                    node_id = variables.get(sensor.name)
                    if node_id is None:
                        self._problem(
                            "missing_variable",
                            f"OPC UA server {self.endpoint}: machine {machine.id} has no "
                            f"variable {sensor.name!r} for sensor {machine.id}.{sensor.name}",
                        )
                    else:
                        found[(machine.id, sensor.name)] = node_id
                for name in sorted(set(variables) - names):
                    self._problem(
                        "unknown_variable",
                        f"OPC UA server {self.endpoint}: machine {machine.id} has a variable "
                        f"{name!r} that the plant does not list as a sensor (ignored)",
                    )
        return found

    async def _by_address(self, client: Client) -> dict[SensorKey, ua.NodeId]:
        wanted: dict[SensorKey, ua.NodeId] = {}
        for machine in self.machines:
            for sensor in machine.sensors:
                address = sensor.address
                if not isinstance(address, OpcUaAddress):
                    self._problem(
                        "missing_variable",
                        f"sensor {machine.id}.{sensor.name} has no OPC UA address "
                        "(discover=False needs address.node_id)",
                    )
                    continue
                try:
                    wanted[(machine.id, sensor.name)] = ua.NodeId.from_string(address.node_id)
                except (ValueError, uaerrors.UaStringParsingError):
                    self._problem(
                        "missing_variable",
                        f"sensor {machine.id}.{sensor.name}: {address.node_id!r} is not a "
                        "valid OPC UA node id",
                    )
        keys = list(wanted)
        found: dict[SensorKey, ua.NodeId] = {}
        for chunk in _chunks(keys):
            classes = await client.uaclient.read_attributes(
                [wanted[k] for k in chunk], ua.AttributeIds.NodeClass
            )
            for key, dv in zip(chunk, classes, strict=True):
                ok = dv.StatusCode is None or dv.StatusCode.is_good()
                if ok and dv.Value is not None and dv.Value.Value == ua.NodeClass.Variable:
                    found[key] = wanted[key]
                else:
                    self._problem(
                        "missing_variable",
                        f"OPC UA server {self.endpoint} has no variable "
                        f"{wanted[key].to_string()} for sensor {key[0]}.{key[1]}",
                    )
        return found

    async def _read_properties(self, client: Client) -> None:
        """EngineeringUnits (for ``units``) and EURange (for percent deadbands)."""
        items = list(self._items.values())
        eu_path = _path(("EngineeringUnits", 0))
        range_path = _path(("EURange", 0))
        for chunk in _chunks(items, _CHUNK // 2):
            bpaths = []
            for item in chunk:
                for rel in (eu_path, range_path):
                    bpaths.append(ua.BrowsePath(StartingNode=item.node_id, RelativePath=rel))
            results = await client.uaclient.translate_browsepaths_to_nodeids(bpaths)
            targets: list[tuple[int, ua.NodeId]] = []
            for i, result in enumerate(results):
                if result.StatusCode.is_good() and result.Targets:
                    targets.append((i, _plain(result.Targets[0].TargetId)))
            if not targets:
                continue
            values = await client.uaclient.read_attributes(
                [t for _, t in targets], ua.AttributeIds.Value
            )
            for (i, _), dv in zip(targets, values, strict=True):
                item = chunk[i // 2]
                v = dv.Value.Value if dv.Value is not None else None
                if isinstance(v, ua.EUInformation) and v.DisplayName.Text:
                    self.units[item.key] = v.DisplayName.Text
                elif isinstance(v, ua.Range) and v.High > v.Low:
                    item.range = (float(v.Low), float(v.High))

    # -- subscription -----------------------------------------------------------------

    def _filter(self, item: _Item) -> ua.DataChangeFilter:
        flt = ua.DataChangeFilter(Trigger=_TRIGGERS[self.trigger])
        if self.deadband is None:
            return flt
        kind, amount = self.deadband
        if kind == "absolute":
            flt.DeadbandType = ua.DeadbandType.Absolute
            flt.DeadbandValue = amount
        elif self.percent_on_server or item.range is None:
            if item.range is None and not self.percent_on_server:
                self._problem(
                    "no_eu_range",
                    f"sensor {item.key[0]}.{item.key[1]} has no EURange on {self.endpoint}: "
                    "its percent deadband is left to the server",
                )
            flt.DeadbandType = ua.DeadbandType.Percent
            flt.DeadbandValue = amount
        else:
            low, high = item.range
            flt.DeadbandType = ua.DeadbandType.Absolute
            flt.DeadbandValue = amount / 100.0 * (high - low)
        return flt

    async def subscribe(self, sink: Sink) -> int:
        """Create the subscription and its monitored items; returns how many were created."""
        client = self._require_client()
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=self.publishing_interval_ms,
            RequestedLifetimeCount=10_000,
            RequestedMaxKeepAliveCount=client.get_keepalive_count(self.publishing_interval_ms),
            MaxNotificationsPerPublish=10_000,
            PublishingEnabled=True,
            Priority=0,
        )
        # Iterator mode: the subscription queues events without a task per value; the
        # queue must hold at least a whole publish response.
        sub = await client.create_subscription(
            params, None, queue_maxsize=200_000, overflow=OverflowPolicy.WARN
        )
        self._sub = sub
        self._consumer = asyncio.create_task(self._consume(sub, sink), name="opcua-consumer")
        items = list(self._items.values())
        created = 0
        handle = 0
        for chunk in _chunks(items):
            requests = []
            for item in chunk:
                handle += 1
                mparams = ua.MonitoringParameters(
                    ClientHandle=handle,
                    SamplingInterval=self.sampling_interval_ms,
                    Filter=self._filter(item),
                    QueueSize=self.queue_size,
                    DiscardOldest=True,
                )
                requests.append(
                    ua.MonitoredItemCreateRequest(
                        ItemToMonitor=ua.ReadValueId(
                            NodeId=item.node_id, AttributeId=ua.AttributeIds.Value
                        ),
                        MonitoringMode=ua.MonitoringMode.Reporting,
                        RequestedParameters=mparams,
                    )
                )
            results = await sub.create_monitored_items(requests)
            for item, result in zip(chunk, results, strict=True):
                if isinstance(result, ua.StatusCode):
                    self._problem(
                        "monitor_failed",
                        f"OPC UA server {self.endpoint} refused to monitor sensor "
                        f"{item.key[0]}.{item.key[1]}: {result.name}",
                    )
                else:
                    created += 1
        return created

    async def _consume(self, sub: Subscription, sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        items = self._items
        pending = self._pending
        async for event in sub:
            if isinstance(event, DataChangeEvent):
                item = items.get(event.node.nodeid)
                dv = event.data.monitored_item.Value
                if item is None or dv is None:
                    continue
                ts = dv.SourceTimestamp or dv.ServerTimestamp
                pending.append(
                    FieldValue(
                        item.key[0],
                        item.key[1],
                        _value(dv),
                        _to_ms(ts) if ts is not None else int(time.time() * 1000),
                        _quality(dv.StatusCode),
                    )
                )
                if not self._flush_scheduled:
                    # Runs once this burst (a whole publish response) has been queued.
                    self._flush_scheduled = True
                    loop.call_soon(self._flush, sink)
            elif isinstance(event, StatusChangeEvent):
                status = event.notification.Status
                if status is not None and status.is_bad():
                    await self._on_connection_lost(
                        ConnectionError(f"subscription status {status.name}")
                    )

    def _flush(self, sink: Sink) -> None:
        self._flush_scheduled = False
        batch, self._pending[:] = list(self._pending), []
        if self._holding:
            self._held.extend(batch)
            return
        self._deliver(batch, sink)

    def _deliver(self, batch: list[FieldValue], sink: Sink, *, live: bool = True) -> None:
        """Call the sink, remembering each sensor's newest time.

        After a reconnect a new monitored item first re-sends the current value; when the
        driver already has it (live or backfilled) it is dropped, once per sensor.
        """
        last = self._last_ts
        if live and self._resync:
            kept = []
            for v in batch:
                key = (v.machine_id, v.sensor)
                if key in self._resync:
                    self._resync.discard(key)
                    if v.timestamp_ms <= last.get(key, -1):
                        continue
                kept.append(v)
            batch = kept
        if not batch:
            return
        for v in batch:
            key = (v.machine_id, v.sensor)
            if v.timestamp_ms > last.get(key, -1):
                last[key] = v.timestamp_ms
        self.stats.values += len(batch)
        try:
            sink(batch)
        except Exception as exc:
            self.stats.error("sink", f"the sink raised {type(exc).__name__}: {exc}")
            _log.exception("OPC UA driver %s: the sink raised", self.endpoint)

    # -- backfill ---------------------------------------------------------------------

    async def _backfill(self, sink: Sink) -> int:
        """Read the gap since each sensor's last value from the server's history."""
        client = self._require_client()
        now = datetime.now(UTC)
        fallback = self._lost_at_ms or _to_ms(now)
        items = list(self._items.values())
        since = {item.key: self._last_ts.get(item.key, fallback) for item in items}
        if not items:
            return 0
        start_ms = min(since.values())
        total = 0
        unsupported = 0
        per_call = self.max_message_size // (
            _BYTES_PER_HISTORY_VALUE * max(1, self.max_backfill_per_sensor)
        )
        for chunk in _chunks(items, max(1, min(200, per_call))):
            details = ua.ReadRawModifiedDetails(
                IsReadModified=False,
                StartTime=datetime.fromtimestamp(start_ms / 1000, UTC) + timedelta(microseconds=1),
                EndTime=now,
                NumValuesPerNode=self.max_backfill_per_sensor,
                ReturnBounds=False,
            )
            params = ua.HistoryReadParameters(
                HistoryReadDetails=details,
                TimestampsToReturn=ua.TimestampsToReturn.Both,
                ReleaseContinuationPoints=False,
                NodesToRead=[
                    ua.HistoryReadValueId(NodeId=item.node_id, IndexRange="") for item in chunk
                ],
            )
            try:
                results = await client.uaclient.history_read(params)
            except uaerrors.UaStatusCodeError as exc:
                unsupported += len(chunk)
                _log.info("OPC UA server %s refused HistoryRead: %s", self.endpoint, exc)
                continue
            batch: list[FieldValue] = []
            for item, result in zip(chunk, results, strict=True):
                data = result.HistoryData
                if not result.StatusCode.is_good() or not isinstance(data, ua.HistoryData):
                    unsupported += 1
                    continue
                after = since[item.key]
                for dv in data.DataValues or []:
                    ts = dv.SourceTimestamp or dv.ServerTimestamp
                    if ts is None or _to_ms(ts) <= after:
                        continue
                    batch.append(
                        FieldValue(
                            item.key[0],
                            item.key[1],
                            _value(dv),
                            _to_ms(ts),
                            _quality(dv.StatusCode),
                        )
                    )
            if batch:
                batch.sort(key=lambda v: v.timestamp_ms)
                total += len(batch)
                self.stats.backfilled += len(batch)
                self._deliver(batch, sink, live=False)
        if unsupported:
            self.stats.per_reason["history_unsupported"] = (
                self.stats.per_reason.get("history_unsupported", 0) + unsupported
            )
            _log.info(
                "OPC UA server %s keeps no history for %d sensors: their gap is not filled",
                self.endpoint,
                unsupported,
            )
        return total

    # -- the loop ---------------------------------------------------------------------

    async def run(self, sink: Sink) -> None:
        """Read until cancelled, reconnecting (and backfilling) whenever the link drops."""
        delay = self.backoff_initial_s
        try:
            while True:
                try:
                    await self._session(sink)
                    delay = self.backoff_initial_s
                except asyncio.CancelledError:
                    raise
                except OpcUaAuthError as exc:
                    self.stats.error("auth", str(exc))
                    _log.error("%s (retrying in %.1f s)", exc, delay)
                except OpcUaError as exc:
                    self.stats.error("server", str(exc))
                    _log.error("%s (retrying in %.1f s)", exc, delay)
                except Exception as exc:
                    message = f"OPC UA server {self.endpoint}: {type(exc).__name__}: {exc}"
                    self.stats.error("connect", message)
                    _log.warning("%s (retrying in %.1f s)", message, delay)
                if self._lost_at_ms is None:
                    self._lost_at_ms = int(time.time() * 1000)
                await self.disconnect()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max_s)
        finally:
            await self.disconnect()

    async def _session(self, sink: Sink) -> None:
        """One connection's life: connect, find, subscribe, backfill, wait for its loss."""
        await self.connect()
        reconnect = self.stats.connects > 1
        await self.find_variables()
        if reconnect and self.backfill:
            self._holding = True
            self._resync = {item.key for item in self._items.values()}
        try:
            created = await self.subscribe(sink)
            _log.info("OPC UA driver %s: monitoring %d sensors", self.endpoint, created)
            if reconnect and self.backfill:
                await self._backfill(sink)
        finally:
            if self._holding:
                self._holding = False
                held, self._held = self._held, []
                self._deliver(held, sink)
        self._lost_at_ms = None
        await self._lost.wait()
        self._lost_at_ms = int(time.time() * 1000)
        self.stats.disconnects += 1
        _log.warning("OPC UA driver lost %s (%s); reconnecting", self.endpoint, self._lost_reason)
