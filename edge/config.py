"""The gateway's configuration file (YAML), validated.

A gateway serves some machines of one plant, read through OPC UA servers and Modbus
devices, and forwards to the hub either through its own leaf node (``store: leaf``,
store-and-forward on local disk) or straight to the hub (``store: direct``, nothing kept
through an outage). A minimal file::

    gateway_id: gw-north
    plant: twinfleet/plants/example.yaml
    hub: {leaf_url: "nats-leaf://hub.example:7422", credentials: gw-north.json}
    modbus:
      - {host: 10.0.0.5, port: 502, machines: {P-201: 1, P-202: 2}}
    opcua:
      - {endpoint: "opc.tcp://10.0.0.6:4840/twinfleet/", machines: [M-101, M-102]}

>>> cfg = GatewayConfig.model_validate({"gateway_id": "gw-1", "plant": "p.yaml",
...     "hub": {"credentials": "gw-1.json"}, "modbus": [{"port": 5020, "machines": {"P-1": 1}}]})
>>> cfg.forward.mode, cfg.store.mode, cfg.modbus[0].host
('aggregates', 'leaf', '127.0.0.1')
>>> GatewayConfig.model_validate({"gateway_id": "gw 1", "plant": "p.yaml",
...     "hub": {"credentials": "c.json"}})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for GatewayConfig
gateway_id
...
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.common import Identifier

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HubLink(_Strict):
    """Where the hub is and who this gateway is there (``twinfleet gateway add`` writes
    the credentials file)."""

    leaf_url: str = "nats-leaf://127.0.0.1:7422"
    url: str = Field(default="nats://127.0.0.1:4222", description="for store: direct")
    credentials: Path


class StoreConfig(_Strict):
    """Store-and-forward: the gateway's leaf node keeps everything on local disk."""

    mode: Literal["leaf", "direct"] = "leaf"
    dir: Path = Path("edge-data")
    port: Annotated[int, Field(ge=0, le=65535)] = 0  # 0: any free port
    max_bytes: Annotated[int, Field(ge=1 << 20)] = 2 << 30
    """Disk budget. When it is used up the oldest stored messages are dropped (counted)."""
    expected_rate: Positive = 1000.0
    """Readings/s the gateway is sized for; the budget is checked against 24 h of it."""


class ForwardConfig(_Strict):
    """What goes to the hub: aggregates of normal data, raw data around anomalies."""

    mode: Literal["aggregates", "everything"] = "aggregates"
    window_s: Annotated[float, Field(ge=1, le=3600)] = 60.0
    context_s: Annotated[float, Field(ge=0, le=3600)] = 60.0
    """Full-resolution data kept before and sent after each edge anomaly."""
    batch_max_readings: Annotated[int, Field(ge=1, le=10_000)] = 1000
    batch_max_delay_ms: Annotated[int, Field(ge=1, le=60_000)] = 200


class DetectionConfig(_Strict):
    zscore_threshold: Positive = 6.0
    zscore_warmup: Annotated[int, Field(ge=3)] = 30


class ModbusDevice(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    machines: dict[Identifier, Annotated[int, Field(ge=0, le=247)]] = Field(
        description="machine id -> its unit id on this device"
    )
    poll_interval_s: Positive | None = None
    connections: Annotated[int, Field(ge=1, le=16)] = 1


class OpcUaSecurity(_Strict):
    """Basic256Sha256 SignAndEncrypt with the gateway's certificate and key. The server's
    certificate is pinned (``server_certificate``) or, by an explicit and logged
    decision, trusted on first use (``trust_on_first_use: true``); a password is only
    configurable here, so it never travels over an unsecured channel.

    >>> OpcUaSecurity.model_validate({"certificate": "gw.der", "private_key": "gw.pem"})
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for OpcUaSecurity
    ...
    """

    certificate: Path
    private_key: Path
    server_certificate: Path | None = None
    trust_on_first_use: bool = False
    username: str | None = None
    password: str | None = None

    @model_validator(mode="after")
    def _trust_is_explicit(self) -> Self:
        if self.server_certificate is None and not self.trust_on_first_use:
            raise ValueError(
                "security.server_certificate is not set: pin the OPC UA server's "
                "certificate, or set security.trust_on_first_use: true to accept the one it "
                "presents (logged)"
            )
        if self.password is not None and self.username is None:
            raise ValueError("security.password needs security.username")
        return self


class OpcUaEndpoint(_Strict):
    endpoint: Annotated[str, Field(pattern=r"^opc\.tcp://")]
    machines: list[Identifier]
    sampling_interval_ms: Annotated[float, Field(ge=0)] = 1000.0
    queue_size: Annotated[int, Field(ge=1, le=10_000)] = 10
    deadband: tuple[Literal["absolute", "percent"], Annotated[float, Field(ge=0)]] | None = None
    security: OpcUaSecurity | None = None


class GatewayConfig(_Strict):
    gateway_id: Identifier
    plant: Path
    hub: HubLink
    store: StoreConfig = StoreConfig()
    forward: ForwardConfig = ForwardConfig()
    detection: DetectionConfig = DetectionConfig()
    modbus: list[ModbusDevice] = Field(default_factory=list)
    opcua: list[OpcUaEndpoint] = Field(default_factory=list)

    @model_validator(mode="after")
    def _machines_once(self) -> Self:
        seen: dict[str, str] = {}
        places = [(f"modbus[{i}]", list(d.machines)) for i, d in enumerate(self.modbus)]
        places += [(f"opcua[{i}]", e.machines) for i, e in enumerate(self.opcua)]
        for where, machines in places:
            for m in machines:
                if m in seen:
                    raise ValueError(f"{where}: machine {m!r} is already read by {seen[m]}")
                seen[m] = where
        return self

    def machine_ids(self) -> list[str]:
        ids = [m for d in self.modbus for m in d.machines]
        return ids + [m for e in self.opcua for m in e.machines]


class GatewayConfigError(ValueError):
    """The configuration file is unreadable or invalid; the message names the field."""


def load_gateway_config(path: str | Path) -> GatewayConfig:
    """Read and validate a gateway configuration; relative paths are taken from the
    file's own directory."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise GatewayConfigError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise GatewayConfigError(f"{path}: expected a mapping at the top level")
    try:
        cfg = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise GatewayConfigError(f"{path}: {problems}") from None
    base = path.parent
    store = cfg.store.model_copy(update={"dir": base / cfg.store.dir})
    hub = cfg.hub.model_copy(update={"credentials": base / cfg.hub.credentials})
    return cfg.model_copy(update={"plant": base / cfg.plant, "store": store, "hub": hub})
