"""Machine actors on a real local Ray, fed by a real nats-server with JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from actors.fleet import Fleet
from actors.host import MachineHost
from schemas import subjects
from schemas.common import iso_utc
from schemas.plant import MachineSpec, load_plant
from schemas.telemetry import TelemetryBatch
from twinfleet.cli import _example_plant_path
from twinfleet.services import NatsServer
from twins.machine import TwinConfig

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]

CONFIG = {"pca_fit_scans": 50, "zscore_warmup": 20}
T0 = int(time.time() * 1000) - 10 * 86_400_000  # ten days ago: nothing is "in the future"


def machines(n: int = 3) -> list[MachineSpec]:
    return load_plant(_example_plant_path()).machines[:n]


def batch_json(spec: MachineSpec, start_scan: int, scans: int, seed: int = 0) -> bytes:
    """``scans`` scans of every sensor of ``spec``, one minute apart, plausible values."""
    rng = np.random.default_rng(seed * 100_003 + start_scan)
    ids, ts, values = [], [], []
    for k in range(start_scan, start_scan + scans):
        for s in spec.sensors:
            ids.append(f"{spec.id}.{s.name}")
            ts.append(T0 + k * 60_000)
            base = s.rated or (s.normal_high or 100.0) * 0.6
            values.append(float(base * (1 + 0.02 * rng.normal())))
    return json.dumps(
        {
            "gateway_id": "gw-1",
            "site_id": spec.site,
            "batch_id": f"{spec.id}-{start_scan}",
            "sent_at": T0 + (start_scan + scans) * 60_000,
            "readings": {
                "machine_id": [spec.id] * len(ids),
                "sensor_id": ids,
                "timestamp": ts,
                "value": values,
            },
        }
    ).encode()


async def publish(url: str, messages: list[tuple[str, bytes, str]]) -> list[Any]:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    from actors.bus import ensure_jetstream

    await ensure_jetstream(js)
    acks = [await js.publish(s, d, headers={"Nats-Msg-Id": i}) for s, d, i in messages]
    await nc.drain()
    return acks


def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def processed(fleet: Fleet, seq: int) -> bool:
    return all(s["last_seq"] >= seq for s in fleet.stats())


def test_publish_updates_the_twin_and_announces_it(nats_server: NatsServer) -> None:
    import nats

    spec = machines(1)[0]
    fleet = Fleet([spec], nats_server.url, config=CONFIG, name="t1").start()
    try:

        async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
            nc = await nats.connect(nats_server.url)
            events = await nc.subscribe(subjects.twin(spec.id))
            await publish(
                nats_server.url,
                [(subjects.telemetry(spec.site, spec.id), batch_json(spec, 0, 5), "m-1")],
            )
            event = json.loads((await events.next_msg(timeout=30)).data)
            kv = await nc.jetstream().key_value("tf_twins")
            entry = await kv.get(spec.id)
            await nc.drain()
            return event, json.loads(entry.value)

        event, state = asyncio.run(scenario())
        assert event["machine_id"] == spec.id
        assert event["applied"] == 5 * len(spec.sensors)
        assert sorted(event["changed_sensors"]) == sorted(spec.sensor_ids())
        # the latest state is readable without calling the actor
        assert state["machine_id"] == spec.id
        assert state["version"] == event["version"]
        assert state["last_update"] == iso_utc(T0 + 4 * 60_000)
    finally:
        fleet.stop()


def test_a_republished_message_is_not_applied_twice(nats_server: NatsServer) -> None:
    spec = machines(1)[0]
    fleet = Fleet([spec], nats_server.url, config=CONFIG, name="t2").start()
    try:
        body = batch_json(spec, 0, 3)
        subject = subjects.telemetry(spec.site, spec.id)
        acks = asyncio.run(
            publish(nats_server.url, [(subject, body, "same-id"), (subject, body, "same-id")])
        )
        assert not acks[0].duplicate
        assert acks[1].duplicate  # JetStream dropped the resend
        wait_for(lambda: processed(fleet, 1), what="the message")
        reference = MachineHost([spec], config=TwinConfig(**CONFIG))
        reference.twins[spec.id].apply(TelemetryBatch.model_validate_json(body))
        assert fleet.snapshot(spec.id) == reference.twins[spec.id].snapshot()
        assert fleet.stats()[0]["messages"] == 1
    finally:
        fleet.stop()


def test_kill_9_mid_stream_ends_in_the_uninterrupted_state(nats_server: NatsServer) -> None:
    """~100K readings in flight; a host process is killed; Ray restarts it, it restores
    from its checkpoints and replays: every twin equals an uninterrupted reference run."""
    specs = machines(3)
    fleet = Fleet(
        specs,
        nats_server.url,
        machines_per_host=2,
        config=CONFIG,
        checkpoint_every_s=0.3,
        name="t3",
    ).start()
    try:
        scans_per_message = 20
        messages: list[tuple[str, bytes, str]] = []
        readings = 0
        k = 0
        while readings < 100_000:
            for spec in specs:
                body = batch_json(spec, k * scans_per_message, scans_per_message, seed=3)
                messages.append((subjects.telemetry(spec.site, spec.id), body, f"{spec.id}-{k}"))
                readings += scans_per_message * len(spec.sensors)
            k += 1
        victim = fleet.hosts["t3-0"]
        import ray

        pid = ray.get(victim.pid.remote())

        async def publish_and_kill() -> None:
            half = len(messages) // 2
            await publish(nats_server.url, messages[:half])
            deadline = time.monotonic() + 60
            while True:  # mid-stream, after at least one checkpoint
                stats = ray.get(victim.stats.remote())
                if stats["last_seq"] >= half // 2 and stats["checkpoints_written"] > 0:
                    break
                assert time.monotonic() < deadline, "the host did not start consuming"
                await asyncio.sleep(0.05)
            os.kill(pid, signal.SIGKILL)  # mid-stream: more is being published
            await publish(nats_server.url, messages[half:])

        asyncio.run(publish_and_kill())
        wait_for(lambda: processed(fleet, len(messages)), timeout_s=180, what="the replay")
        assert ray.get(victim.pid.remote()) != pid  # a new process
        assert ray.get(victim.stats.remote())["restored"] >= 1  # from checkpoints

        reference = MachineHost(specs, config=TwinConfig(**CONFIG))
        for _, body, _ in messages:
            batch = TelemetryBatch.model_validate_json(body)
            reference.apply(batch)
        for spec in specs:
            assert fleet.snapshot(spec.id) == reference.twins[spec.id].snapshot(), spec.id
    finally:
        fleet.stop()


def test_bad_input_goes_to_the_dead_letter_subject_with_its_reason(
    nats_server: NatsServer,
) -> None:
    import nats

    spec = machines(1)[0]
    fleet = Fleet([spec], nats_server.url, config=CONFIG, name="t4").start()
    subject = subjects.telemetry(spec.site, spec.id)
    good = json.loads(batch_json(spec, 0, 2))
    sensor = spec.sensor_ids()[0]

    def variant(**readings: Any) -> bytes:
        doc = json.loads(json.dumps(good))
        doc["readings"].update(readings)
        return json.dumps(doc).encode()

    one = {"machine_id": [spec.id], "sensor_id": [sensor]}
    future = int(time.time() * 1000) + 3_600_000
    cases: list[tuple[str, str, bytes, str]] = [
        ("malformed", subject, b"{not json", "not a telemetry batch"),
        ("nan", subject, variant(**one, timestamp=[T0], value=[math.nan]), "finite"),
        ("future", subject, variant(**one, timestamp=[future], value=[1.0]), "future"),
        (
            "oversized",
            subject,
            variant(
                machine_id=[spec.id] * 10_001,
                sensor_id=[sensor] * 10_001,
                timestamp=list(range(T0, T0 + 10_001)),
                value=[1.0] * 10_001,
            ),
            "10000",
        ),
        (
            "unknown-sensor",
            subject,
            variant(
                **{**one, "sensor_id": [f"{spec.id}.no_such_sensor"]}, timestamp=[T0], value=[1.0]
            ),
            "no_such_sensor",
        ),
        (
            "unknown-machine",
            subjects.telemetry(spec.site, "M-999"),
            variant(machine_id=["M-999"], sensor_id=["M-999.x"], timestamp=[T0], value=[1.0]),
            "unknown machine 'M-999'",
        ),
        ("good", subject, batch_json(spec, 10, 1), ""),
        ("late", subject, variant(**one, timestamp=[T0], value=[5.0]), "late"),
        ("duplicate", subject, batch_json(spec, 10, 1), "duplicate"),
    ]
    try:

        async def scenario() -> list[dict[str, Any]]:
            nc = await nats.connect(nats_server.url)
            dlq = await nc.subscribe(f"{subjects.PREFIX}.dlq.>")
            await publish(nats_server.url, [(s, d, name) for name, s, d, _ in cases])
            letters = []
            deadline = time.monotonic() + 30
            while len({d["msg_id"] for d in letters}) < len(cases) - 1:
                assert time.monotonic() < deadline, letters
                with contextlib.suppress(nats.errors.TimeoutError):
                    letters.append(json.loads((await dlq.next_msg(timeout=1)).data))
            await nc.drain()
            return letters

        letters = asyncio.run(scenario())
        by_id: dict[str, list[str]] = {}
        for letter in letters:
            by_id.setdefault(letter["msg_id"], []).append(letter["reason"])
        for name, _, _, expected in cases:
            if not expected:
                assert name not in by_id
                continue
            assert any(expected in reason for reason in by_id[name]), (name, by_id.get(name))
        stats = fleet.stats()[0]
        assert stats["rejected_by_machine"][spec.id] >= 6
        assert stats["rejected_by_machine"]["M-999"] == 1
        assert stats["rejected_by_gateway"]["gw-1"] >= 4
        assert stats["messages"] == len(cases)  # the host never stopped
    finally:
        fleet.stop()
