"""The edge gateway: drivers -> validate -> edge detection -> forward -> batch -> NATS.

Drivers (OPC UA subscriptions, Modbus polls) hand values to :meth:`Gateway.receive`.
Every ``batch_max_delay_ms`` (or sooner when ``batch_max_readings`` are waiting) the
gateway takes what arrived and:

1. validates each value (known machine and sensor, finite value, timestamp after 2000
   and at most 5 minutes ahead of the gateway's clock). A refused value is counted by
   reason and published with the reason on ``tf.dlq.<gateway>``; it never stops the rest;
2. runs edge detection (:mod:`edge.detection`); each finding is a local alert published
   at once on ``tf.edge.<gateway>.alert.<machine>`` on the gateway's own server (so it
   keeps firing while the hub is unreachable), logged, and sent on with the batch;
3. decides what to forward (:mod:`edge.forwarding`): 1-minute aggregates, and full
   resolution around anomalies (or everything);
4. publishes one :class:`~schemas.telemetry.TelemetryBatch` per machine on
   ``tf.telemetry.<site>.<machine>`` with ``Nats-Msg-Id`` = the batch id
   ``<gateway>:<incarnation>-<secret>-<seq>``. The incarnation is counted on disk, so ids
   never repeat across restarts; the secret (128 random bits drawn at each start) makes
   them impossible for anyone else to compute, so no other gateway can publish one of
   them first and have JetStream drop this gateway's batch as its duplicate. A batch
   keeps its id for good (in the leaf node's stream, or in memory while retried), so a
   resent batch is still recognised.

With ``store: leaf`` the batches go into the gateway's own leaf node
(:mod:`edge.store`), which acknowledges them whether or not the hub is reachable and
forwards them in order when it is. With ``store: direct`` they go to the hub; while it is
unreachable the gateway retries the oldest batch and holds new values in memory up to
``MAX_PENDING`` (then drops the oldest, counted): direct mode has no store-and-forward.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivers.base import FieldValue, reading_columns
from edge.config import GatewayConfig
from edge.detection import EdgeDetection
from edge.forwarding import Aggregate, Forwarded, Forwarder
from edge.store import EdgeStore, StoreStatus
from schemas.common import EARLIEST_TIMESTAMP_MS, Quality
from schemas.plant import Plant
from schemas.subjects import dead_letter, edge_alert, telemetry
from schemas.telemetry import (
    MAX_FUTURE_SKEW_MS,
    EdgeAnomaly,
    TelemetryBatch,
    scoped_message_id,
)
from twinfleet.natsconf import GatewayCredentials

log = logging.getLogger(__name__)

STORED_BYTES_PER_READING = 115
"""Edge-store bytes per forwarded raw reading (113 measured by bench/edge.py)."""

MAX_PENDING = 1_000_000
"""Values held in memory while nothing can take them (direct mode during an outage)."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _next_incarnation(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "incarnation"
    n = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(n))
    return n


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        plant: Plant,
        creds: GatewayCredentials,
        *,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        if creds.gateway_id != config.gateway_id:
            raise ValueError(
                f"credentials are for gateway {creds.gateway_id!r}, "
                f"the configuration is for {config.gateway_id!r}"
            )
        self.config = config
        self.creds = creds
        self.clock = clock
        by_id = {m.id: m for m in plant.machines}
        missing = [m for m in config.machine_ids() if m not in by_id]
        if missing:
            raise ValueError(f"machines not in plant {plant.name!r}: {', '.join(missing)}")
        self.machines = {m: by_id[m] for m in config.machine_ids()}
        foreign = sorted(
            {f"{m.id} ({m.site})" for m in self.machines.values() if m.site not in creds.sites}
        )
        if foreign:
            raise ValueError(
                f"gateway {creds.gateway_id!r} may publish only for sites "
                f"{', '.join(creds.sites)}; not for {', '.join(foreign)}"
            )
        self._sensors = {(m.id, s.name) for m in self.machines.values() for s in m.sensors}
        self.detection = EdgeDetection(
            list(self.machines.values()),
            zscore_threshold=config.detection.zscore_threshold,
            zscore_warmup=config.detection.zscore_warmup,
        )
        fw = config.forward
        self.forwarder = Forwarder(mode=fw.mode, window_s=fw.window_s, context_s=fw.context_s)
        self.drivers: list[Any] = []
        self.store: EdgeStore | None = None
        self._pending: deque[FieldValue] = deque(maxlen=MAX_PENDING)  # drops the oldest
        self._wake = asyncio.Event()
        self._nc: Any = None
        self._js: Any = None
        self._seq = 0
        self._incarnation = 0
        self._id_secret = secrets.token_hex(16)
        self.counts: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.alerts: deque[EdgeAnomaly] = deque(maxlen=100)
        self.detect_ms: deque[float] = deque(maxlen=10_000)
        self.store_status = StoreStatus()
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Future[None]] = set()

    # -- drivers -----------------------------------------------------------------------

    def build_drivers(self) -> list[Any]:
        from drivers.modbus import ModbusDriver, ModbusMachine

        drivers: list[Any] = []
        for dev in self.config.modbus:
            machines = [
                ModbusMachine(self.machines[m], dev.host, dev.port, unit)
                for m, unit in dev.machines.items()
            ]
            drivers.append(
                ModbusDriver(
                    machines, poll_interval_s=dev.poll_interval_s, connections=dev.connections
                )
            )
        if self.config.opcua:
            from drivers.opcua import OpcUaDriver, OpcUaSecurity

            for ep in self.config.opcua:
                sec = ep.security
                drivers.append(
                    OpcUaDriver(
                        ep.endpoint,
                        [self.machines[m] for m in ep.machines],
                        sampling_interval_ms=ep.sampling_interval_ms,
                        queue_size=ep.queue_size,
                        deadband=ep.deadband,
                        security=(
                            OpcUaSecurity(
                                sec.certificate,
                                sec.private_key,
                                sec.server_certificate,
                                trust_on_first_use=sec.trust_on_first_use,
                            )
                            if sec
                            else None
                        ),
                        username=sec.username if sec else None,
                        password=sec.password if sec else None,
                    )
                )
        return drivers

    def receive(self, values: list[FieldValue]) -> None:
        """The drivers' sink: queue values for the next batch."""
        before = len(self._pending)
        self._pending.extend(values)
        self.counts["received"] += len(values)
        overflow = before + len(values) - len(self._pending)
        if overflow > 0:
            self.counts["dropped_pending"] += overflow
            log.error("gateway: %d values dropped: nothing took them in time", overflow)
        if len(self._pending) >= self.config.forward.batch_max_readings:
            self._wake.set()

    # -- life cycle --------------------------------------------------------------------

    async def run(
        self,
        stop: asyncio.Event | None = None,
        drivers: list[Any] | None = None,
    ) -> None:
        """Run until ``stop`` is set (or the task is cancelled); then stop reading, store
        what was read, and close. What the hub has not taken yet stays in the leaf
        node's streams on disk and goes at the next start."""
        import nats

        stop = stop or asyncio.Event()
        cfg = self.config
        self._incarnation = _next_incarnation(cfg.store.dir)
        self._id_secret = secrets.token_hex(16)  # this start's ids: nobody can guess them
        if cfg.store.mode == "leaf":
            self.store = EdgeStore(
                self.creds,
                cfg.store.dir / "nats",
                hub_leaf_url=cfg.hub.leaf_url,
                max_bytes=cfg.store.max_bytes,
                port=cfg.store.port,
            )
            await asyncio.to_thread(self.store.start)
            url = self.store.url
            tls: dict[str, Any] = {}
        else:
            url, tls = self._direct_connection()
        self._tasks = []
        try:
            self._nc = await nats.connect(
                url,
                **tls,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=self._nats_error,
                name=f"twinfleet-edge-{cfg.gateway_id}",
                inbox_prefix=self.creds.inbox_prefix,  # the only replies it may read
            )
            self._js = self._nc.jetstream()
            if self.store is not None:
                await self.store.ensure_stream(self._js)
            self._check_budget()
            self.drivers = self.build_drivers() if drivers is None else drivers
            self._tasks = [asyncio.create_task(d.run(self.receive)) for d in self.drivers]
            log.info(
                "gateway %s: %d machines, %d drivers, store %s, forwarding %s",
                cfg.gateway_id,
                len(self.machines),
                len(self.drivers),
                cfg.store.mode,
                cfg.forward.mode,
            )
            self.ready.set()
            delay = cfg.forward.batch_max_delay_ms / 1000.0
            last_status = 0.0
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                self._wake.clear()
                try:
                    await self.step()
                except Exception:  # a bug must not stop the collection; say so loudly
                    self.counts["failed_steps"] += 1
                    log.exception("gateway %s: a step failed; its values are lost", cfg.gateway_id)
                if time.monotonic() - last_status > 5.0:
                    last_status = time.monotonic()
                    await self.write_status()
        finally:
            await self._stop_drivers()
            if self._nc is not None and self._nc.is_connected:
                with contextlib.suppress(Exception):
                    await self.stop_reading()
                    await self.write_status()
                with contextlib.suppress(Exception):
                    await self._nc.drain()
            if self.store is not None:
                await asyncio.to_thread(self.store.stop)

    def _direct_connection(self) -> tuple[str, dict[str, Any]]:
        """The hub's URL with the gateway's direct user, and the TLS options of
        ``nats.connect``. With the hub's CA in the credentials (``twinfleet pki init``) the
        connection is TLS from its first byte (``tls_handshake_first``: the hub's client
        port accepts that), trusting that CA only and checking that the hub's certificate
        names the URL's host; nothing, the password included, is sent before the hub has
        proved it. A hub without TLS, or a server pretending to be it, gets no connection.
        Without the CA the connection is as before (plain, or nats-py's default trust)."""
        from bus.connect import tls_context

        host = self.config.hub.url.partition("://")[2].rpartition("@")[2]
        user = f"{self.creds.direct_user}:{self.creds.direct_password}"
        if self.creds.hub_ca is None:
            return f"nats://{user}@{host}", {}
        context = tls_context(ca_pem=self.creds.hub_ca)
        return f"tls://{user}@{host}", {"tls": context, "tls_handshake_first": True}

    async def stop_reading(self) -> None:
        """Stop the drivers and store everything read so far, including the open
        aggregate windows (the gateway keeps running; used before a planned stop)."""
        await self._stop_drivers()
        await self.step()
        await self._publish(self.forwarder.close_all(), [])

    async def _stop_drivers(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def _check_budget(self) -> None:
        """Say at start whether the disk budget holds 24 h at the expected rate."""
        cfg = self.config.store
        if cfg.mode != "leaf":
            return
        need = 24 * 3600 * cfg.expected_rate * STORED_BYTES_PER_READING
        if self.config.forward.mode == "aggregates":
            # one row per sensor-minute and raw data only around anomalies: an assumed
            # twentieth of forwarding everything, not a measured one
            need /= 20
        hours = 24 * cfg.max_bytes / need
        if hours < 24:
            log.warning(
                "gateway %s: disk budget %d bytes holds about %.1f h at %g readings/s; "
                "beyond that the oldest data is dropped (counted as discarded_by_budget)",
                self.config.gateway_id,
                cfg.max_bytes,
                hours,
                cfg.expected_rate,
            )
        self.counts["budget_hours"] = int(hours)

    async def _nats_error(self, exc: Exception) -> None:
        self.counts["nats_errors"] += 1
        log.warning("gateway %s: NATS: %s", self.config.gateway_id, exc)

    # -- one step ----------------------------------------------------------------------

    async def step(self) -> None:
        """Process what has arrived: validate, detect, forward, publish."""
        values = list(self._pending)
        self._pending.clear()
        now = self.clock()
        accepted = self.validate(values, now) if values else []
        anomalies: list[EdgeAnomaly] = []
        if accepted:
            t0 = time.perf_counter()
            anomalies = self.detection.process(accepted)
            self.detect_ms.append((time.perf_counter() - t0) * 1000.0)
        for a in anomalies:
            await self._alert(a)
        out = self.forwarder.add(accepted, anomalies)
        late = self.forwarder.flush(now)
        out.aggregates.extend(late.aggregates)
        await self._publish(out, anomalies)  # retries until stored (see _send)

    def validate(self, values: list[FieldValue], now: int) -> list[FieldValue]:
        limit = now + MAX_FUTURE_SKEW_MS
        good: list[FieldValue] = []
        refused: list[tuple[FieldValue, str, str]] = []  # value, counter key, message
        for v in values:
            if (v.machine_id, v.sensor) not in self._sensors:
                message = f"unknown sensor {v.machine_id}.{v.sensor} for this gateway"
                refused.append((v, "unknown sensor", message))
            elif not isinstance(v.value, (int, float)) or not math.isfinite(v.value):
                if v.quality is Quality.BAD:
                    # A device saying "no measurement" (OPC UA Bad status, null value):
                    # not bad input, nothing to forward; counted.
                    self.counts["bad_quality_without_value"] += 1
                    continue
                refused.append((v, "value", f"value {v.value!r} is not a finite number"))
            elif not EARLIEST_TIMESTAMP_MS <= v.timestamp_ms <= limit:
                message = (
                    f"timestamp {v.timestamp_ms} is before 2000 or more than "
                    f"{MAX_FUTURE_SKEW_MS // 1000} s ahead of the gateway clock"
                )
                refused.append((v, "timestamp", message))
            else:
                good.append(v)
        if refused:
            self._refuse(refused)
        self.counts["accepted"] += len(good)
        return good

    def _refuse(self, refused: list[tuple[FieldValue, str, str]]) -> None:
        for v, key, reason in refused:
            self.rejected[key] += 1
            log.warning(
                "gateway %s refused %s.%s: %s",
                self.config.gateway_id,
                v.machine_id,
                v.sensor,
                reason,
            )
        self.counts["rejected"] += len(refused)
        if self._nc is None:
            return
        body = json.dumps(
            {
                "source": f"edge:{self.config.gateway_id}",
                "rejected": [
                    {
                        "machine_id": v.machine_id,
                        "sensor": v.sensor,
                        "value": repr(v.value),
                        "timestamp": v.timestamp_ms,
                        "reason": reason,
                    }
                    for v, _, reason in refused
                ],
            }
        ).encode()
        subject = dead_letter(self.config.gateway_id)
        task = asyncio.ensure_future(self._nc.publish(subject, body))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _alert(self, a: EdgeAnomaly) -> None:
        self.alerts.append(a)
        self.counts["alerts"] += 1
        log.warning(
            "gateway %s ALERT %s at %d: %s",
            self.config.gateway_id,
            a.sensor_id,
            a.timestamp,
            a.reason,
        )
        if self.store is not None and self._nc is not None:
            subject = edge_alert(self.config.gateway_id, a.machine_id)
            await self._nc.publish(subject, a.model_dump_json().encode())

    async def _publish(self, out: Forwarded, anomalies: list[EdgeAnomaly]) -> None:
        per_machine: dict[str, tuple[list[FieldValue], list[EdgeAnomaly], list[Aggregate]]] = {}
        for v in out.readings:
            per_machine.setdefault(v.machine_id, ([], [], []))[0].append(v)
        for a in anomalies:
            per_machine.setdefault(a.machine_id, ([], [], []))[1].append(a)
        for g in out.aggregates:
            per_machine.setdefault(g.machine_id, ([], [], []))[2].append(g)
        if not per_machine:
            return
        sent_at = self.clock()
        messages: list[tuple[str, str, bytes]] = []
        for machine, (readings, found, aggs) in per_machine.items():
            self._seq += 1
            batch_id = self._batch_id()
            batch = self._batch(machine, batch_id, sent_at, readings, found, aggs)
            if batch is None:
                continue
            subject = telemetry(self.machines[machine].site, machine)
            messages.append((subject, batch_id, batch.model_dump_json().encode()))
            self.counts["readings_forwarded"] += len(readings)
            self.counts["aggregates_forwarded"] += len(aggs)
        await self._send(messages)

    def _batch_id(self) -> str:
        """The next batch id, also its ``Nats-Msg-Id`` (see the module)."""
        local = f"{self._incarnation}-{self._id_secret}-{self._seq:010d}"
        return scoped_message_id(self.config.gateway_id, local)

    def _batch(
        self,
        machine: str,
        batch_id: str,
        sent_at: int,
        readings: list[FieldValue],
        found: list[EdgeAnomaly],
        aggs: list[Aggregate],
    ) -> TelemetryBatch | None:
        data: dict[str, Any] = {
            "gateway_id": self.config.gateway_id,
            "site_id": self.machines[machine].site,
            "batch_id": batch_id,
            "sent_at": sent_at,
            "readings": reading_columns(machine, readings),
            "anomalies": [a.model_dump() for a in found],
        }
        if aggs:
            data["aggregates"] = {
                "machine_id": [machine] * len(aggs),
                "sensor_id": [g.sensor_id for g in aggs],
                "window_start": [g.window_start for g in aggs],
                "window_ms": self.forwarder.window_ms,
                "avg": [g.avg for g in aggs],
                "min": [g.min for g in aggs],
                "max": [g.max for g in aggs],
                "std": [g.std for g in aggs],
                "count": [g.count for g in aggs],
            }
        try:
            return TelemetryBatch.model_validate(data, context={"now_ms": self.clock()})
        except Exception as exc:  # the schema refuses what validate() let through: a bug
            self.rejected["batch"] += 1
            log.error(
                "gateway %s: batch %s refused by the schema: %s",
                self.config.gateway_id,
                batch_id,
                exc,
            )
            return None

    async def _send(self, messages: list[tuple[str, str, bytes]]) -> None:
        """Publish in order; each batch is retried until its store acknowledges it (the
        message id makes a retry of an already stored batch harmless)."""
        backoff = 0.2
        pending = messages
        while pending:
            futures = [
                await self._js.publish_async(subject, body, headers={"Nats-Msg-Id": batch_id})
                for subject, batch_id, body in pending
            ]
            results = await asyncio.gather(
                *(asyncio.wait_for(f, timeout=5.0) for f in futures), return_exceptions=True
            )
            failed = [
                m for m, r in zip(pending, results, strict=True) if isinstance(r, BaseException)
            ]
            stored = len(pending) - len(failed)
            self.counts["batches"] += stored
            if not failed:
                return
            self.counts["publish_retries"] += len(failed)
            log.warning(
                "gateway %s: %d batches not acknowledged (%s); retrying in %.1f s",
                self.config.gateway_id,
                len(failed),
                next(r for r in results if isinstance(r, BaseException)),
                backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            pending = failed
            if self.store is not None and await asyncio.to_thread(self.store.revive):
                self.counts["store_restarts"] += 1

    # -- status ------------------------------------------------------------------------

    async def write_status(self) -> dict[str, Any]:
        if self.store is not None and self._js is not None:
            with contextlib.suppress(Exception):
                self.store_status = await self.store.status(self._js)
        status = self.status()
        path = self.config.store.dir / "status.json"
        path.write_text(json.dumps(status, indent=2))
        return status

    def status(self) -> dict[str, Any]:
        import numpy as np

        lat = np.asarray(self.detect_ms) if self.detect_ms else np.zeros(1)
        st = self.store_status
        return {
            "gateway_id": self.config.gateway_id,
            "counts": dict(self.counts),
            "rejected": dict(self.rejected),
            "detection_ms": {
                "p50": float(np.percentile(lat, 50)),
                "p99": float(np.percentile(lat, 99)),
            },
            "store": {
                "mode": self.config.store.mode,
                "messages": st.messages,
                "bytes": st.bytes,
                "stored": st.stored,
                "discarded_by_budget": st.discarded_by_budget,
            },
            "drivers": [
                {"kind": type(d).__name__, **dataclasses.asdict(d.stats)}
                if dataclasses.is_dataclass(getattr(d, "stats", None))
                else {"kind": type(d).__name__}
                for d in self.drivers
            ],
            "recent_alerts": [a.model_dump() for a in list(self.alerts)[-10:]],
        }
