"""The JetStream resources the machine actors use, created idempotently.

* stream ``TELEMETRY`` on ``tf.telemetry.>`` (file storage; a repeated ``Nats-Msg-Id``
  within ``DUPLICATE_WINDOW_S`` is dropped by the server; made with the default
  retention of :mod:`bus.retention`, 7 days, which ``twinfleet up`` sets as configured);
* key-value bucket ``tf_checkpoints``: per machine, the stream sequence its twin covers
  (8 bytes, big-endian) followed by the twin's snapshot;
* key-value bucket ``tf_twins``: per machine, its latest :class:`~schemas.twin.TwinState`
  as JSON, readable without calling any actor;
* stream ``EVENTS`` on ``tf.event.>``: the anomaly, RUL and work-order events (published on
  core NATS by the actors, kept by the server for ``EVENTS_MAX_AGE_S`` and at most
  ``EVENTS_PER_SUBJECT`` per subject), so an API replica that starts later can replay them;
* key-value bucket ``tf_acks``: acknowledgements of anomalies;
* key-value bucket ``tf_maintenance``: the maintenance service's alerts, work orders,
  latest RUL per machine and consumed event sequences (:mod:`actors.maintenance`).
"""

from __future__ import annotations

import struct
from typing import Any

from bus.retention import DEFAULT as DEFAULT_RETENTION
from bus.retention import stream_config
from schemas.subjects import EVENT_ALL, TELEMETRY_ALL

STREAM = "TELEMETRY"
CHECKPOINTS = "tf_checkpoints"
TWINS = "tf_twins"
ACKS = "tf_acks"
REVOKED = "tf_revoked"
"""Revoked API tokens (api/revocations.py)."""
MAINTENANCE = "tf_maintenance"
EVENTS = "EVENTS"
EVENTS_MAX_AGE_S = 7 * 86_400.0
EVENTS_PER_SUBJECT = 5_000
DUPLICATE_WINDOW_S = 600.0
MAX_CHECKPOINT_BYTES = 8 * 1024 * 1024
_SEQ = struct.Struct(">Q")


async def ensure_jetstream(js: Any) -> tuple[Any, Any]:
    """Create (or find) the stream and buckets; returns the (checkpoints, twins) buckets."""
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    config = StreamConfig(
        name=STREAM,
        subjects=[TELEMETRY_ALL],
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S,
        **stream_config(DEFAULT_RETENTION),
    )
    events = StreamConfig(
        name=EVENTS,
        subjects=[EVENT_ALL],
        storage=StorageType.FILE,
        max_age=EVENTS_MAX_AGE_S,
        max_msgs_per_subject=EVENTS_PER_SUBJECT,
    )
    for stream in (config, events):
        try:
            await js.stream_info(stream.name)
        except NotFoundError:
            await js.add_stream(stream)
    sizes = ((CHECKPOINTS, MAX_CHECKPOINT_BYTES), (TWINS, 1024 * 1024), (ACKS, 4096))
    buckets = await _buckets(js, sizes)
    return buckets[0], buckets[1]


async def ensure_bucket(js: Any, name: str, max_value_size: int = 1024 * 1024) -> Any:
    """One key-value bucket (file storage, latest value only), created if missing."""
    return (await _buckets(js, ((name, max_value_size),)))[0]


async def _buckets(js: Any, sizes: tuple[tuple[str, int], ...]) -> list[Any]:
    from nats.js.api import KeyValueConfig, StorageType
    from nats.js.errors import BucketNotFoundError, NotFoundError

    buckets = []
    for name, size in sizes:
        try:
            buckets.append(await js.key_value(name))
        except (BucketNotFoundError, NotFoundError):
            buckets.append(
                await js.create_key_value(
                    KeyValueConfig(
                        bucket=name, history=1, storage=StorageType.FILE, max_value_size=size
                    )
                )
            )
    return buckets


def pack_checkpoint(seq: int, snapshot: bytes) -> bytes:
    """A checkpoint value: the stream sequence covered, then the twin snapshot."""
    return _SEQ.pack(seq) + snapshot


def unpack_checkpoint(value: bytes) -> tuple[int, bytes]:
    if len(value) < _SEQ.size:
        raise ValueError("checkpoint is too short to hold a stream sequence")
    return _SEQ.unpack_from(value)[0], value[_SEQ.size :]


async def source_gateways(js: Any, gateways: list[Any]) -> None:
    """Make ``TELEMETRY`` source each gateway's edge stream (store-and-forward).

    One source per gateway and site (its stream ``TF_EDGE_<site>``), filtered to that
    site's telemetry (the filter is the hub's: it decides what it takes), read through the
    gateway's JetStream domain across its leaf connection (``gateways``:
    :class:`twinfleet.natsconf.GatewayCredentials`). The hub's source consumer resumes
    from the last sequence it stored after any outage. Idempotent: sources already
    configured are kept, and an unchanged list is not written again.
    """
    from nats.js.api import ExternalStream, StreamSource

    from schemas.subjects import edge_stream

    info = await js.stream_info(STREAM)
    config = info.config
    have = {(s.external.api if s.external else "", s.name) for s in config.sources or []}
    sources = list(config.sources or [])
    for gw in gateways:
        api = f"$JS.{gw.edge_domain}.API"
        for site in gw.sites:
            if (api, edge_stream(site)) not in have:
                sources.append(
                    StreamSource(
                        name=edge_stream(site),
                        filter_subject=gw.telemetry_subject(site),
                        external=ExternalStream(api=api, deliver=""),
                    )
                )
    if len(sources) != len(config.sources or []):
        config.sources = sources
        await js.update_stream(config)
