"""Store-and-forward through NATS itself: the gateway's own leaf node.

The gateway runs a nats-server next to it with JetStream in its own domain
(``edge-<gateway>``), connected to the hub as a leaf node. The gateway publishes every
telemetry batch into a local stream ``TF_EDGE_<site>`` (file storage, so it survives a restart
of the gateway or its server) and gets the local server's acknowledgement at once,
whether or not the hub is reachable. The hub's ``TELEMETRY`` stream *sources* them
across the leaf connection (:func:`actors.bus.source_gateways`): after an outage the hub
resumes from the last sequence it has, so everything arrives in order and once (the
``Nats-Msg-Id`` of each batch also travels with it and the hub drops a repeat).

Disk budget: the streams together are limited to ``max_bytes`` and discard the *oldest*
messages when full (recent data matters most for a machine that is failing now); the
number discarded is counted (the stream's first sequence minus one, since nothing else
removes messages). Whether a discarded batch had reached the hub is not visible here: the
hub's source consumer is internal to the server (2.9 does not list it) and the leaf user
may not call the hub's JetStream API. A gateway that is stopped keeps its backlog on disk
and the hub takes it after the next start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.subjects import edge_stream
from twinfleet.natsconf import GatewayCredentials, edge_config
from twinfleet.services import NatsServer, free_port

log = logging.getLogger(__name__)

DUPLICATE_WINDOW_S = 600.0


@dataclass(slots=True)
class StoreStatus:
    messages: int = 0
    bytes: int = 0
    stored: int = 0
    """Batches ever stored (the streams' last sequences)."""
    discarded_by_budget: int = 0
    """Oldest batches removed because the disk budget was full (the streams hold
    nothing else that removes messages: no age limit, no acks)."""


class EdgeStore:
    """The gateway's leaf node and its stream."""

    def __init__(
        self,
        creds: GatewayCredentials,
        data_dir: Path,
        *,
        hub_leaf_url: str | None,
        max_bytes: int,
        port: int = 0,
    ) -> None:
        self.creds = creds
        self.data_dir = Path(data_dir)
        self.hub_leaf_url = hub_leaf_url
        self.max_bytes = int(max_bytes)
        self.port = port or free_port()
        self.password = creds.direct_password  # the gateway's user on its own server
        self.server: NatsServer | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.creds.direct_user}:{self.password}@127.0.0.1:{self.port}"

    def start(self) -> EdgeStore:
        hub_ca_file = None
        if self.creds.hub_ca is not None and self.hub_leaf_url is not None:
            # the hub has TLS (its CA came in the credentials file): the leaf link uses it
            hub_ca_file = (self.data_dir / "hub-ca.pem").resolve()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            hub_ca_file.write_text(self.creds.hub_ca)
        config = edge_config(
            creds=self.creds,
            port=self.port,
            store_dir=self.data_dir / "jetstream",
            gateway_password=self.password,
            hub_leaf_url=self.hub_leaf_url,
            max_store_bytes=self.max_bytes,
            hub_ca_file=hub_ca_file,
        )
        self.server = NatsServer(self.data_dir, port=self.port, config=config).start()
        return self

    def revive(self) -> bool:
        """Start the leaf node again if its process died (its files are intact: JetStream
        recovers the streams). True when it had to."""
        server = self.server
        if server is None or server.process is None or server.process.poll() is None:
            return False
        log.error(
            "edge store: nats-server exited (code %s); starting it again", server.process.returncode
        )
        server.start()
        return True

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    async def ensure_stream(self, js: Any) -> None:
        from nats.js.api import DiscardPolicy, StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        share = self.max_bytes // len(self.creds.sites)
        for site in self.creds.sites:
            config = StreamConfig(
                name=edge_stream(site),
                subjects=[self.creds.telemetry_subject(site)],
                storage=StorageType.FILE,
                max_bytes=share,
                discard=DiscardPolicy.OLD,
                duplicate_window=DUPLICATE_WINDOW_S,
            )
            try:
                await js.stream_info(config.name)
                await js.update_stream(config)
            except NotFoundError:
                await js.add_stream(config)

    async def status(self, js: Any) -> StoreStatus:
        """What the streams hold and what the budget discarded."""
        total = StoreStatus()
        for site in self.creds.sites:
            state = (await js.stream_info(edge_stream(site))).state
            total.messages += state.messages
            total.bytes += state.bytes
            total.stored += state.last_seq
            total.discarded_by_budget += max(0, state.first_seq - 1) if state.last_seq else 0
        return total
