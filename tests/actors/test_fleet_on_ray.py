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
from schemas.whatif import WhatIfRequest
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
    fleet = Fleet([spec], nats_server.url, config=CONFIG, state_every_s=0.1, name="t1").start()
    try:
        # The first test of the session also starts Ray's workers: wait until the host
        # consumes (up to 120 s on a loaded machine), so the 30 s below time the event only.
        fleet.wait_ready()

        async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
            nc = await nats.connect(nats_server.url)
            events = await nc.subscribe(subjects.twin(spec.id))
            await publish(
                nats_server.url,
                [(subjects.telemetry(spec.site, spec.id), batch_json(spec, 0, 5), "m-1")],
            )
            event = json.loads((await events.next_msg(timeout=30)).data)
            kv = await nc.jetstream().key_value("tf_twins")
            deadline = time.monotonic() + 10  # states are written every state_every_s
            while True:
                try:
                    entry = await kv.get(spec.id)
                    break
                except nats.js.errors.KeyNotFoundError:
                    assert time.monotonic() < deadline, "no state in the bucket"
                    await asyncio.sleep(0.05)
            await nc.drain()
            return event, json.loads(entry.value)

        event, state = asyncio.run(scenario())
        assert event["machine_id"] == spec.id
        assert event["applied"] == 5 * len(spec.sensors)
        assert sorted(event["sensors"]) == sorted(spec.sensor_ids())  # the changed ones
        # each with its latest reading: [value, timestamp, quality], as the state has it
        assert event["last_update"] == T0 + 4 * 60_000
        for sensor, (value, stamp, quality) in event["sensors"].items():
            assert state["sensors"][sensor]["value"] == value
            assert stamp == T0 + 4 * 60_000 and quality == 0
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


def test_clone_and_what_if_leave_the_live_twin_alone(nats_server: NatsServer) -> None:
    spec = machines(1)[0]
    fleet = Fleet([spec], nats_server.url, config=CONFIG, name="t5").start()
    try:
        subject = subjects.telemetry(spec.site, spec.id)
        asyncio.run(publish(nats_server.url, [(subject, batch_json(spec, 0, 30), "a")]))
        wait_for(lambda: processed(fleet, 1), what="the message")
        before = fleet.snapshot(spec.id)
        clone_id = fleet.clone(spec.id, ttl_s=600)
        calm = fleet.what_if(clone_id, WhatIfRequest(horizon_days=30).model_dump_json())
        hard = fleet.what_if(
            clone_id, WhatIfRequest(horizon_days=30, load_factor=1.2).model_dump_json()
        )
        fixed = fleet.what_if(
            clone_id,
            WhatIfRequest(
                horizon_days=30, load_factor=1.2, maintenance=[{"delay_days": 10}]
            ).model_dump_json(),
        )
        # a trajectory, step by step (daily), for 30 days
        assert calm["hours"][0] == 0.0 and calm["hours"][-1] == 720.0
        assert len(calm["health"]) == len(calm["failure_probability"]) == 31
        assert calm["failure_probability"] == sorted(calm["failure_probability"])
        assert set(calm["failure_probability_by"]) == {24, 72, 168, 336, 720}
        assert hard["failure_probability"][-1] > fixed["failure_probability"][-1]
        # more load wears faster; an overhaul after 10 days leaves less wear than none
        assert sum(hard["mean_wear"][m][-1] for m in hard["mean_wear"]) > sum(
            calm["mean_wear"][m][-1] for m in calm["mean_wear"]
        )
        assert sum(fixed["mean_wear"][m][-1] for m in fixed["mean_wear"]) < sum(
            hard["mean_wear"][m][-1] for m in hard["mean_wear"]
        )
        assert calm["seconds"] < 5
        # the live twin did not move, and goes on with live data
        assert fleet.snapshot(spec.id) == before
        fleet.retire_clone(clone_id)
        with pytest.raises(KeyError, match="no clone"):
            fleet.what_if(clone_id, WhatIfRequest().model_dump_json())
        # clones expire after their time to live
        short = fleet.clone(spec.id, ttl_s=0.5)
        wait_for(lambda: short in fleet.expire_clones(), timeout_s=10, what="the expiry")
        assert short not in fleet.clone_ids()
    finally:
        fleet.stop()


def test_machines_and_models_change_at_runtime(
    nats_server: NatsServer, toy_model: Callable[[MachineSpec, float], bytes]
) -> None:
    import nats

    first, second = machines(2)
    model_a, model_b = toy_model(first, 0.1), toy_model(first, 0.5)
    config = {**CONFIG, "rul_min_hours": 2.0, "rul_every_hours": 1.0}
    fleet = Fleet(
        [first], nats_server.url, config=config, models={first.type: model_a}, name="t6"
    ).start()
    try:
        fleet.wait_ready()  # the host consumes before the events are awaited (3 s each)

        async def rul_versions(messages: list[tuple[str, bytes, str]]) -> set[str]:
            nc = await nats.connect(nats_server.url)
            sub = await nc.subscribe(subjects.rul(first.id))
            await publish(nats_server.url, messages)
            versions = set()
            with contextlib.suppress(nats.errors.TimeoutError):
                while True:
                    versions.add(json.loads((await sub.next_msg(timeout=3)).data)["model_version"])
            await nc.drain()
            return versions

        subject = subjects.telemetry(first.site, first.id)
        hours = [(subject, batch_json(first, k * 60, 60), f"h{k}") for k in range(4)]
        version_a = json.loads(model_a)["version"]
        version_b = json.loads(model_b)["version"]
        assert asyncio.run(rul_versions(hours)) == {version_a}
        assert fleet.set_model(first.type, model_b) == 1  # no restart
        later = [(subject, batch_json(first, k * 60, 60), f"h{k}") for k in range(4, 6)]
        assert asyncio.run(rul_versions(later)) == {version_b}

        # a machine added at runtime takes its telemetry; a removed one is unknown again
        fleet.add_machine(second)
        other = subjects.telemetry(second.site, second.id)
        asyncio.run(publish(nats_server.url, [(other, batch_json(second, 0, 3), "s1")]))
        wait_for(lambda: processed(fleet, 7), what="the new machine's message")
        assert fleet.snapshot(second.id)  # it has a twin
        assert ray_stats_applied(fleet, second.id) == 3 * len(second.sensors)
        fleet.remove_machine(second.id)
        with pytest.raises(KeyError, match="not in the fleet"):
            fleet.snapshot(second.id)
        asyncio.run(publish(nats_server.url, [(other, batch_json(second, 3, 3), "s2")]))
        wait_for(
            lambda: fleet.stats()[0]["rejected_by_machine"].get(second.id, 0) == 1,
            what="the removed machine's message refused",
        )
    finally:
        fleet.stop()


def ray_stats_applied(fleet: Fleet, machine_id: str) -> int:
    from twins.machine import MachineTwin

    spec = fleet.specs[machine_id]
    twin = MachineTwin(spec, config=TwinConfig(**fleet.config))
    twin.restore(fleet.snapshot(machine_id))
    return int(twin.counters["applied"])


def test_every_machine_its_own_ray_actor(nats_server: NatsServer) -> None:
    specs = machines(3)
    fleet = Fleet(specs, nats_server.url, machines_per_host=1, config=CONFIG, name="t7").start()
    try:
        assert len(fleet.hosts) == 3
        fleet.wait_ready()  # three actors start on two cores: time the messages, not that
        msgs = [(subjects.telemetry(s.site, s.id), batch_json(s, 0, 2), f"{s.id}-0") for s in specs]
        asyncio.run(publish(nats_server.url, msgs))
        wait_for(lambda: processed(fleet, 3), what="three messages")
        for spec in specs:
            assert ray_stats_applied(fleet, spec.id) == 2 * len(spec.sensors)
        assert sum(s["messages"] for s in fleet.stats()) == 3  # each applied by one host
    finally:
        fleet.stop()


def test_hosts_ride_out_a_nats_server_restart(nats_server: NatsServer) -> None:
    spec = machines(1)[0]
    fleet = Fleet([spec], nats_server.url, config=CONFIG, name="t8").start()
    try:
        fleet.wait_ready()
        subject = subjects.telemetry(spec.site, spec.id)
        asyncio.run(publish(nats_server.url, [(subject, batch_json(spec, 0, 2), "r0")]))
        wait_for(lambda: processed(fleet, 1), what="the first message")
        nats_server.stop()
        nats_server.start()  # same port, same JetStream directory
        asyncio.run(publish(nats_server.url, [(subject, batch_json(spec, 2, 2), "r1")]))
        wait_for(lambda: processed(fleet, 2), timeout_s=60, what="the message after the restart")
        assert ray_stats_applied(fleet, spec.id) == 4 * len(spec.sensors)  # nothing twice
        stats = fleet.stats()[0]
        assert stats["phase"] == "consuming"
    finally:
        fleet.stop()


def test_a_machine_added_at_runtime_survives_a_host_restart(nats_server: NatsServer) -> None:
    import ray

    first, second = machines(2)
    fleet = Fleet([first], nats_server.url, config=CONFIG, name="t9").start()
    try:
        fleet.wait_ready()
        fleet.add_machine(second)
        subject = subjects.telemetry(second.site, second.id)
        before = [(subject, batch_json(second, 0, 3), "a0")]
        asyncio.run(publish(nats_server.url, before))
        wait_for(lambda: processed(fleet, 1), what="the new machine's first message")
        host = fleet.hosts["t9-0"]
        os.kill(ray.get(host.pid.remote()), signal.SIGKILL)  # no checkpoint of it yet
        after = [(subject, batch_json(second, 3, 3), "a1")]
        asyncio.run(publish(nats_server.url, after))
        wait_for(lambda: processed(fleet, 2), timeout_s=120, what="the replay")
        reference = MachineHost([second], config=TwinConfig(**CONFIG))
        for _, body, _ in before + after:
            reference.apply(TelemetryBatch.model_validate_json(body))
        assert fleet.snapshot(second.id) == reference.twins[second.id].snapshot()
    finally:
        fleet.stop()
