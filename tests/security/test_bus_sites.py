"""Issue 18, findings 2 and 8 at the hub: telemetry is accepted only within the site
its subject names, for machines of that site, and under message ids of the gateway the
batch names.

NATS permissions already hold a gateway to ``tf.telemetry.<its sites>.>``; what they
cannot see is the message: the machine named in the subject may belong to another site,
and the batch may claim another site or another gateway's message ids. The machine
actors (real Ray, real nats-server) and the history writer (real PostgreSQL) refuse
those, each with a reason on the dead-letter subject, and apply or store the rest.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from schemas import subjects
from schemas.plant import MachineSpec, Plant, load_plant
from twinfleet.cli import _example_plant_path
from twinfleet.natsconf import GatewayCredentials, gateways_dir, hub_server
from twinfleet.services import NatsServer, free_port

NORTH, SOUTH = "plant-north", "plant-south"
NOW_MS = int(time.time() * 1000) - 3_600_000  # an hour ago: recent, never "future"


@pytest.fixture(scope="module")
def plant() -> Plant:
    return load_plant(_example_plant_path())


def machine(plant: Plant, machine_id: str) -> MachineSpec:
    return next(m for m in plant.machines if m.id == machine_id)


def batch(
    spec: MachineSpec,
    batch_id: str,
    *,
    site: str | None = None,
    gateway: str = "gw-north",
    readings_of: MachineSpec | None = None,
    at_ms: int = NOW_MS,
) -> bytes:
    """One reading of every sensor of ``readings_of`` (default ``spec``)."""
    of = readings_of or spec
    sensors = of.sensors
    return json.dumps(
        {
            "gateway_id": gateway,
            "site_id": site or spec.site,
            "batch_id": batch_id,
            "sent_at": at_ms,
            "readings": {
                "machine_id": [of.id] * len(sensors),
                "sensor_id": [f"{of.id}.{s.name}" for s in sensors],
                "timestamp": [at_ms] * len(sensors),
                "value": [float(s.rated or (s.normal_high or 100.0) * 0.6) for s in sensors],
            },
        }
    ).encode()


def attacks(plant: Plant) -> list[tuple[str, bytes, str, str]]:
    """(subject, body, Nats-Msg-Id, what the refusal must say) of what a plant-north
    gateway may publish as far as NATS permissions go, but must not get applied."""
    m101, p207 = machine(plant, "M-101"), machine(plant, "P-207")
    return [
        # the reported case: a plant-south machine on a plant-north subject
        (subjects.telemetry(NORTH, p207.id), batch(p207, "a-1", site=NORTH), "gw-north:a-1", SOUTH),
        # a plant-north machine, but the batch claims another site
        (subjects.telemetry(NORTH, m101.id), batch(m101, "a-2", site=SOUTH), "gw-north:a-2", SOUTH),
        # finding 8: a message id in another gateway's namespace
        (subjects.telemetry(NORTH, m101.id), batch(m101, "a-3"), "gw-south:1-a-3", "gw-south"),
    ]


# -- the machine actors ------------------------------------------------------------------


@dataclass
class Hub:
    server: NatsServer
    north: GatewayCredentials

    @property
    def north_url(self) -> str:
        c = self.north
        return f"nats://{c.direct_user}:{c.direct_password}@127.0.0.1:{self.server.port}"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    data_dir = tmp_path / "hub"
    north = GatewayCredentials.new("gw-north", [NORTH])
    north.save(gateways_dir(data_dir))
    GatewayCredentials.new("gw-south", [SOUTH]).save(gateways_dir(data_dir))
    with hub_server(data_dir, port=free_port(), leaf_port=free_port()) as server:
        yield Hub(server, north)


async def _publish_as_gateway(hub: Hub, messages: list[tuple[str, bytes, str]]) -> list[int]:
    """JetStream-publish as the plant-north gateway's own NATS user; the sequences."""
    import nats

    nc = await nats.connect(hub.north_url, inbox_prefix=f"_INBOX.{hub.north.direct_user}")
    js = nc.jetstream()
    acks = [await js.publish(s, d, headers={"Nats-Msg-Id": i}) for s, d, i in messages]
    await nc.close()
    return [a.seq for a in acks]


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.usefixtures("local_ray")
def test_the_twins_refuse_telemetry_outside_the_subjects_site(hub: Hub, plant: Plant) -> None:
    import nats

    from actors.bus import ensure_jetstream
    from actors.fleet import Fleet

    m101, p207 = machine(plant, "M-101"), machine(plant, "P-207")
    bad = attacks(plant)
    good = (subjects.telemetry(NORTH, m101.id), batch(m101, "ok-1", at_ms=NOW_MS + 1000))
    fleet = Fleet([m101, p207], hub.server.url, config={"zscore_warmup": 20}, name="sites").start()
    try:
        fleet.wait_ready()

        async def scenario() -> tuple[list[dict[str, Any]], list[str], int]:
            nc = await nats.connect(hub.server.url)
            await ensure_jetstream(nc.jetstream())
            letters: list[dict[str, Any]] = []
            changed: list[str] = []
            seen: list[int] = []

            async def on_letter(msg: Any) -> None:
                letters.append(json.loads(msg.data))

            async def on_twin(msg: Any) -> None:
                event = json.loads(msg.data)
                changed.append(event["machine_id"])
                seen.append(event["seq"])

            await nc.subscribe(subjects.dead_letter("gw-north"), cb=on_letter)
            await nc.subscribe(subjects.TWIN_ALL, cb=on_twin)
            await nc.flush()
            seqs = await _publish_as_gateway(
                hub, [(s, d, i) for s, d, i, _ in bad] + [(*good, "gw-north:ok-1")]
            )
            # the host publishes in stream order, on one connection: once the last
            # message's event is here, the dead letters and events of the others are too
            deadline = time.monotonic() + 60
            while seqs[-1] not in seen:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no outcome: letters={letters} changed={changed}")
                await asyncio.sleep(0.1)
            await nc.close()
            return letters, changed, seqs[-1]

        letters, changed, last = asyncio.run(scenario())
        _wait(lambda: all(s["last_seq"] >= last for s in fleet.stats()), "the host")
        stats = fleet.stats()
    finally:
        fleet.stop()
    assert changed == [m101.id], "a refused message changed a twin"
    whole = [letter for letter in letters if letter["reading"] is None]
    assert len(whole) == len(bad), letters
    for (_, _, msg_id, says), letter in zip(bad, whole, strict=True):
        assert letter["msg_id"] == msg_id
        assert says in letter["reason"], letter
    assert sum(s["rejected_by_gateway"].get("gw-north", 0) for s in stats) == len(bad)


# -- the history writer ------------------------------------------------------------------


def test_the_history_refuses_telemetry_outside_the_subjects_site(
    nats_server: NatsServer, database: str, plant: Plant
) -> None:
    from store.registry import register_plant
    from tests.store.conftest import run_writer, stored

    m101, m102 = machine(plant, "M-101"), machine(plant, "M-102")
    with psycopg.connect(database) as conn:
        register_plant(conn, plant)
    bad = [
        *attacks(plant),
        # readings of another machine on M-101's subject
        (
            subjects.telemetry(NORTH, m101.id),
            batch(m101, "a-4", readings_of=m102),
            "gw-north:a-4",
            m102.id,
        ),
    ]
    good = (subjects.telemetry(NORTH, m101.id), batch(m101, "ok-1"), "gw-north:ok-1")

    async def publish() -> None:
        import nats

        from actors.bus import ensure_jetstream

        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await ensure_jetstream(js)
        for subject, body, msg_id in [(s, d, i) for s, d, i, _ in bad] + [good]:
            await js.publish(subject, body, headers={"Nats-Msg-Id": msg_id})
        await nc.close()

    asyncio.run(publish())
    run_writer(nats_server.url, database, stored(len(bad) + 1))
    with psycopg.connect(database) as conn:
        machines = conn.execute(
            "SELECT DISTINCT s.asset_id FROM readings r JOIN sensors s USING (sensor_key)"
        ).fetchall()
        count = conn.execute("SELECT count(*) FROM readings").fetchone()
        reasons = [
            r[0] for r in conn.execute("SELECT reason FROM rejected ORDER BY seq").fetchall()
        ]
    assert machines == [(m101.id,)]
    assert count == (len(m101.sensors),), "refused readings were stored"
    assert len(reasons) == len(bad), reasons
    for (_, _, _, says), reason in zip(bad, reasons, strict=True):
        assert says in reason, reasons


def test_a_registered_gateway_is_held_to_its_own_sites(plant: Plant) -> None:
    """With the registered gateways known (``gateway_sites``), a batch naming one of
    them is applied only on its sites' subjects, whoever published it."""
    from actors.host import MachineHost
    from actors.ingest import Delivery, StreamIngest

    m101 = machine(plant, "M-101")
    ingest = StreamIngest(
        MachineHost([m101]), gateway_sites={"gw-north": [NORTH], "gw-south": [SOUTH]}
    )
    subject = subjects.telemetry(NORTH, m101.id)
    claims_south = batch(m101, "b-1", gateway="gw-south")
    refused = ingest.process(Delivery(1, subject, claims_south, NOW_MS, "gw-south:b-1"))
    assert refused.result is None
    assert "'gw-south' is not registered for site 'plant-north'" in refused.dead_letters[0].reason
    own = batch(m101, "b-2", at_ms=NOW_MS + 1000)
    applied = ingest.process(Delivery(2, subject, own, NOW_MS + 1000, "gw-north:b-2"))
    assert applied.result is not None and applied.result.applied == len(m101.sensors)
    assert not applied.dead_letters
