"""The history routes and fields against a real PostgreSQL: the API (``create_app`` over
``start_services``, no Ray) runs under uvicorn in a thread of its own, next to a real
nats-server, and is asked over HTTP. The database is filled by plain SQL with values
whose statistics numpy computes for reference."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import psycopg
import pytest

from api.app import Settings
from api.auth import Role
from api.history import NO_DATABASE
from schemas.plant import MachineSpec, Plant, load_plant
from store import blocks
from store.partitions import Partitions
from store.registry import register_plant, sensor_keys
from tests.api.conftest import LiveApi
from twinfleet.cli import _example_plant_path
from twinfleet.services import NatsServer, free_port

SECRET = "history-secret-" + "x" * 32
T0 = datetime(2026, 11, 2, tzinfo=UTC)
MINUTES = 180  # of 1-minute rollups from T0 (three 1-hour rollups)
PER_MINUTE = 6  # values per minute, every 10 s
EMPTY_MINUTE = 42  # every value of this minute is bad: a bucket with count 0
HOT_MINUTES = range(0, 30)  # raw readings in the day partition
BLOCK_MINUTES = range(60, 120)  # raw readings compacted into the block of hour T0 + 1 h


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- the API under uvicorn --------------------------------------------------------------------
def settings(nats_url: str, database_url: str | None) -> Settings:
    return Settings(
        nats_url, SECRET, rate_per_s=1000.0, rate_burst=1000.0, database_url=database_url
    )


# -- what the database holds ------------------------------------------------------------------
@dataclass
class Seeded:
    """The machines and what was written about them, with the values for reference."""

    machine: MachineSpec
    other: MachineSpec
    sensor_id: str
    unit: str
    values: np.ndarray  # (MINUTES, PER_MINUTE) float32-exact float64
    quality: np.ndarray  # (MINUTES, PER_MINUTE) int
    anomalies: dict[str, datetime] = field(default_factory=dict)

    def minute(self, i: int) -> datetime:
        return T0 + timedelta(minutes=i)

    def reference(self, minutes: Any) -> dict[str, Any]:
        """numpy's statistics of the good and uncertain values of those minutes (min and
        max at float32 precision: rollups keep them as ``real``, which psycopg reads
        through their shortest decimal text)."""
        rows = list(minutes)
        x = self.values[rows][self.quality[rows] < 2]
        return {
            "overall_avg": pytest.approx(float(x.mean()), rel=1e-12),
            "overall_min": pytest.approx(float(x.min()), rel=1e-7),
            "overall_max": pytest.approx(float(x.max()), rel=1e-7),
            "overall_stddev": pytest.approx(float(x.std()), rel=1e-9),
            "count": len(x),
        }

    def readings(self, minutes: Any) -> list[dict[str, Any]]:
        names = ("good", "uncertain", "bad")
        return [
            {
                "timestamp": iso(self.minute(i) + timedelta(seconds=10 * j)),
                "value": float(self.values[i, j]),
                "quality": names[int(self.quality[i, j])],
            }
            for i in minutes
            for j in range(PER_MINUTE)
        ]


def small_plant() -> Plant:
    plant = load_plant(_example_plant_path())
    return plant.model_copy(update={"machines": plant.machines[:2]})


def bucket(x: np.ndarray, q: np.ndarray) -> tuple[Any, ...]:
    ok = x[q < 2]
    if not len(ok):
        return (0, None, None, None, None, int((q == 1).sum()), int((q == 2).sum()))
    mean = float(ok.mean())
    m2 = float(((ok - mean) ** 2).sum())
    return (
        len(ok),
        mean,
        m2,
        float(ok.min()),
        float(ok.max()),
        int((q == 1).sum()),
        int((q == 2).sum()),
    )


def seed(url: str) -> Seeded:
    plant = small_plant()
    machine, other = plant.machines
    sensor = machine.sensors[0]
    sensor_id = f"{machine.id}.{sensor.name}"
    rng = np.random.default_rng(7)
    values = rng.normal(50.0, 3.0, (MINUTES, PER_MINUTE)).astype(np.float32).astype(np.float64)
    values += np.arange(MINUTES)[:, None] * 0.25  # a drift, so that buckets differ
    values = values.astype(np.float32).astype(np.float64)
    quality = rng.choice([0, 0, 0, 0, 1, 2], size=(MINUTES, PER_MINUTE))
    quality[EMPTY_MINUTE] = 2
    seeded = Seeded(machine, other, sensor_id, sensor.unit, values, quality)
    partitions = Partitions()
    with psycopg.connect(url) as conn:
        register_plant(conn, plant)
        key = sensor_keys(conn, [sensor_id])[sensor_id]
        with conn.transaction(), conn.cursor() as cur:
            for table in ("readings", "reading_blocks", "rollup_1m", "rollup_1h"):
                partitions.ensure(conn, table, [T0])
            cur.executemany(
                "INSERT INTO rollup_1m (sensor_key, bucket, count, mean, m2, vmin, vmax, "
                "n_uncertain, n_bad) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [(key, seeded.minute(i), *bucket(values[i], quality[i])) for i in range(MINUTES)],
            )
            cur.executemany(
                "INSERT INTO rollup_1h (sensor_key, bucket, count, mean, m2, vmin, vmax, "
                "n_uncertain, n_bad) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        key,
                        T0 + timedelta(hours=h),
                        *bucket(values[60 * h : 60 * h + 60], quality[60 * h : 60 * h + 60]),
                    )
                    for h in range(MINUTES // 60)
                ],
            )
            cur.executemany(
                "INSERT INTO readings (ts, sensor_key, value, quality) VALUES (%s, %s, %s, %s)",
                [
                    (
                        seeded.minute(i) + timedelta(seconds=10 * j),
                        key,
                        float(values[i, j]),
                        int(quality[i, j]),
                    )
                    for i in HOT_MINUTES
                    for j in range(PER_MINUTE)
                ],
            )
            first = int(seeded.minute(BLOCK_MINUTES[0]).timestamp() * 1000)
            ts = first + 10_000 * np.arange(len(BLOCK_MINUTES) * PER_MINUTE, dtype=np.int64)
            v = values[BLOCK_MINUTES].ravel().astype(np.float32)
            q = quality[BLOCK_MINUTES].ravel().astype(np.int8)
            cur.execute(
                "INSERT INTO reading_blocks (sensor_key, hour, n, first_ts, last_ts, vmin, vmax, "
                "data) VALUES (%s, %s, %s, to_timestamp(%s / 1000.0), to_timestamp(%s / 1000.0), "
                "%s, %s, %s)",
                (
                    key,
                    T0 + timedelta(hours=1),
                    len(ts),
                    int(ts[0]),
                    int(ts[-1]),
                    float(v.min()),
                    float(v.max()),
                    blocks.encode(ts, v, q),
                ),
            )
            other_sensor = f"{machine.id}.{machine.sensors[1].name}"
            anomalies = [
                ("A-before", machine.id, sensor_id, T0 - timedelta(minutes=1)),
                ("A-inside", machine.id, sensor_id, T0 + timedelta(minutes=10)),
                ("A-other-sensor", machine.id, other_sensor, T0 + timedelta(minutes=20)),
                ("A-last", machine.id, sensor_id, T0 + timedelta(minutes=MINUTES - 1)),
                ("A-at-end", machine.id, sensor_id, T0 + timedelta(minutes=MINUTES)),
                ("A-other-machine", other.id, None, T0 + timedelta(minutes=5)),
            ]
            cur.executemany(
                "INSERT INTO anomalies (anomaly_id, asset_id, sensor_id, ts, type, severity, "
                "score, value, reason, detector, record) "
                "VALUES (%s, %s, %s, %s, 'threshold', 'high', 0.9, 7.5, 'above normal', "
                "'rules', '{}')",
                anomalies,
            )
            seeded.anomalies = {a[0]: a[3] for a in anomalies}
            cur.executemany(
                "INSERT INTO twin_snapshots (asset_id, ts, version, status, health_score, "
                "active_anomalies, state) VALUES (%s, %s, %s, %s, %s, %s, '{}')",
                [
                    (machine.id, T0 + timedelta(minutes=30 * k), k, status, 90.0 - 5 * k, k)
                    for k, status in enumerate(["running", "running", "warning", "critical"])
                ]
                + [(machine.id, T0 - timedelta(hours=1), 99, "running", 99.0, 0)],
            )
            cur.executemany(
                "INSERT INTO rul_predictions (asset_id, predicted_at, component, failure_mode, "
                "median_hours, lower_hours, upper_hours, p_fail_7d, model_version, record) "
                "VALUES (%s, %s, 'bearing', 'bearing_wear', %s, %s, %s, %s, 'cox-1', '{}')",
                [
                    (machine.id, T0 + timedelta(minutes=15), 400.0, 250.0, 600.0, 0.02),
                    (machine.id, T0 + timedelta(minutes=75), 300.0, 180.0, 450.0, None),
                    (machine.id, T0 + timedelta(days=1), 10.0, 5.0, 20.0, 0.9),
                ],
            )
    return seeded


@pytest.fixture
def seeded(database: str) -> Seeded:
    return seed(database)


@pytest.fixture
def api(nats_server: NatsServer, database: str, seeded: Seeded) -> Iterator[LiveApi]:
    with LiveApi(settings(nats_server.url, database), [seeded.machine, seeded.other]) as live:
        yield live
    assert live.services is not None and live.services.history is not None
    assert live.services.history.pool.closed  # stopping the services closed the pool


def timeseries(api: LiveApi, sensor_id: str, **params: str) -> dict[str, Any]:
    status, body = api.get(f"/api/v1/sensors/{sensor_id}/timeseries", **params)
    assert status == 200, body
    return body


# -- time series ------------------------------------------------------------------------------
TIMESERIES_QUERY = """
query ($id: ID!, $sensor: String!, $start: DateTime, $end: DateTime, $agg: String!) {
  asset(id: $id) {
    sensor(name: $sensor) {
      id unit
      timeseries(start: $start, end: $end, aggregation: $agg) {
        sensorId unit aggregation start end dataPoints
        data { timestamp value quality avg min max stddev count uncertain bad }
        anomalies { timestamp value anomalyScore severity type reason }
        statistics { overallAvg overallMin overallMax overallStddev count }
      }
    }
  }
}"""


def snake(doc: Any) -> Any:
    """GraphQL's camelCase names in the REST answer's snake_case."""
    if isinstance(doc, list):
        return [snake(x) for x in doc]
    if not isinstance(doc, dict):
        return doc
    out = {}
    for k, v in doc.items():
        name = re.sub(r"([A-Z]|(?<![0-9])[0-9])", lambda m: "_" + m.group(1).lower(), k)
        out[name] = snake(v)
    return out


def without_nulls(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in p.items() if v is not None} for p in points]


def test_rollups_give_the_buckets_and_the_statistics_of_their_values(
    api: LiveApi, seeded: Seeded
) -> None:
    start, end = T0, T0 + timedelta(minutes=MINUTES)
    body = timeseries(api, seeded.sensor_id, start=iso(start), end=iso(end), aggregation="1m")
    assert body["sensor_id"] == seeded.sensor_id and body["unit"] == seeded.unit
    assert body["aggregation"] == "1m" and (body["start"], body["end"]) == (iso(start), iso(end))
    assert body["data_points"] == len(body["data"]) == MINUTES
    assert [p["timestamp"] for p in body["data"]] == [iso(seeded.minute(i)) for i in range(MINUTES)]
    assert body["statistics"] == seeded.reference(range(MINUTES))
    for i in (0, 17, 179):
        x = seeded.values[i][seeded.quality[i] < 2]
        assert body["data"][i] == {
            "timestamp": iso(seeded.minute(i)),
            "avg": pytest.approx(x.mean(), rel=1e-12),
            "min": pytest.approx(float(x.min()), rel=1e-7),
            "max": pytest.approx(float(x.max()), rel=1e-7),
            "stddev": pytest.approx(x.std(), rel=1e-9),
            "count": len(x),
            "uncertain": int((seeded.quality[i] == 1).sum()),
            "bad": int((seeded.quality[i] == 2).sum()),
        }
    empty = body["data"][EMPTY_MINUTE]
    assert empty["count"] == 0 and empty["bad"] == PER_MINUTE
    assert empty["avg"] is None and empty["stddev"] is None

    # a part of the range: the buckets that start inside it, and their statistics
    part = timeseries(
        api,
        seeded.sensor_id,
        start=iso(T0 + timedelta(minutes=30)),
        end=iso(T0 + timedelta(minutes=90, seconds=30)),
        aggregation="1m",
    )
    assert part["data_points"] == 61
    assert part["statistics"] == seeded.reference(range(30, 91))

    hours = timeseries(api, seeded.sensor_id, start=iso(start), end=iso(end), aggregation="1h")
    assert hours["aggregation"] == "1h" and hours["data_points"] == 3
    assert hours["statistics"] == seeded.reference(range(MINUTES))
    for h, point in enumerate(hours["data"]):
        rows = range(60 * h, 60 * h + 60)
        assert point["count"] == seeded.reference(rows)["count"]
        assert point["stddev"] == seeded.reference(rows)["overall_stddev"]

    # GraphQL answers the same
    answer = api.graphql(
        TIMESERIES_QUERY,
        {
            "id": seeded.machine.id,
            "sensor": seeded.machine.sensors[0].name,
            "start": iso(start),
            "end": iso(end),
            "agg": "1m",
        },
    )
    assert "errors" not in answer, answer
    sensor = answer["data"]["asset"]["sensor"]
    assert sensor["id"] == seeded.sensor_id and sensor["unit"] == seeded.unit
    got = snake(sensor["timeseries"])
    assert without_nulls(got.pop("data")) == without_nulls(body.pop("data"))
    assert got == body


def test_raw_readings_come_with_their_quality_from_partitions_and_blocks(
    api: LiveApi, seeded: Seeded
) -> None:
    hot = (T0, T0 + timedelta(minutes=len(HOT_MINUTES)))
    body = timeseries(api, seeded.sensor_id, start=iso(hot[0]), end=iso(hot[1]), aggregation="raw")
    assert body["aggregation"] == "raw"
    assert body["data"] == seeded.readings(HOT_MINUTES)
    assert {p["quality"] for p in body["data"]} == {"good", "uncertain", "bad"}
    assert body["statistics"] == seeded.reference(HOT_MINUTES)

    # from the compacted block, asked in a zone half an hour off UTC: [01:45Z, 02:00Z)
    india = timezone(timedelta(hours=5, minutes=30))
    start = (T0 + timedelta(minutes=105)).astimezone(india)
    end = (T0 + timedelta(minutes=120)).astimezone(india)
    body = timeseries(
        api, seeded.sensor_id, start=start.isoformat(), end=end.isoformat(), aggregation="raw"
    )
    assert body["start"] == iso(start)
    assert body["data"] == seeded.readings(range(105, 120))
    assert body["statistics"] == seeded.reference(range(105, 120))

    # GraphQL: the same readings
    answer = api.graphql(
        TIMESERIES_QUERY,
        {
            "id": seeded.machine.id,
            "sensor": seeded.machine.sensors[0].name,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "agg": "raw",
        },
    )
    points = answer["data"]["asset"]["sensor"]["timeseries"]["data"]
    assert without_nulls(points) == seeded.readings(range(105, 120))


def test_auto_takes_raw_up_to_two_hours_then_minutes_then_hours(
    api: LiveApi, seeded: Seeded
) -> None:
    def auto(span: timedelta) -> dict[str, Any]:
        return timeseries(api, seeded.sensor_id, start=iso(T0), end=iso(T0 + span))

    two_hours = auto(timedelta(hours=2))
    assert two_hours["aggregation"] == "raw"
    assert two_hours["data"] == seeded.readings([*HOT_MINUTES, *BLOCK_MINUTES])
    assert two_hours["statistics"] == seeded.reference([*HOT_MINUTES, *BLOCK_MINUTES])
    day = auto(timedelta(days=1))
    assert day["aggregation"] == "1m" and day["data_points"] == MINUTES
    week = auto(timedelta(days=7))
    assert week["aggregation"] == "1h" and week["data_points"] == 3
    assert day["statistics"] == week["statistics"] == seeded.reference(range(MINUTES))


def test_only_the_anomalies_inside_the_range_come_with_the_series(
    api: LiveApi, seeded: Seeded
) -> None:
    end = T0 + timedelta(minutes=MINUTES)
    body = timeseries(api, seeded.sensor_id, start=iso(T0), end=iso(end), aggregation="1h")
    assert body["anomalies"] == [
        {
            "timestamp": iso(seeded.anomalies[name]),
            "value": 7.5,
            "anomaly_score": 0.9,
            "severity": "high",
            "type": "threshold",
            "reason": "above normal",
        }
        for name in ("A-inside", "A-last")  # not before, not at the end, not other sensors'
    ]


def test_the_default_range_is_the_last_24_hours(
    nats_server: NatsServer, database: str, seeded: Seeded
) -> None:
    now = datetime.now(UTC)
    recent = now.replace(second=0, microsecond=0) - timedelta(hours=2)
    old = recent - timedelta(hours=23)
    with psycopg.connect(database) as conn, conn.transaction():
        key = sensor_keys(conn, [seeded.sensor_id])[seeded.sensor_id]
        Partitions().ensure(conn, "rollup_1m", [recent, old])
        conn.cursor().executemany(
            "INSERT INTO rollup_1m (sensor_key, bucket, count, mean, m2, vmin, vmax) "
            "VALUES (%s, %s, 2, %s, 2.0, %s, %s)",
            [(key, recent, 10.0, 9.0, 11.0), (key, old, 20.0, 19.0, 21.0)],
        )
    with LiveApi(settings(nats_server.url, database), [seeded.machine]) as api:
        body = timeseries(api, seeded.sensor_id)
        assert body["aggregation"] == "1m"
        assert [p["avg"] for p in body["data"]] == [10.0]
        end = datetime.fromisoformat(body["end"])
        assert abs(end - now) < timedelta(minutes=1)
        assert datetime.fromisoformat(body["start"]) == end - timedelta(hours=24)
        # only an end: the day before it
        body = timeseries(api, seeded.sensor_id, end=iso(T0 + timedelta(hours=3)))
        assert body["start"] == iso(T0 - timedelta(hours=21))
        assert body["aggregation"] == "1m" and body["data_points"] == MINUTES


# -- machine history --------------------------------------------------------------------------
HISTORY_QUERY = """
query ($id: ID!, $start: DateTime, $end: DateTime) {
  asset(id: $id) {
    history(start: $start, end: $end) {
      assetId start end
      states { timestamp status healthScore activeAnomalies }
      rul { timestamp component failureMode medianHours lowerHours upperHours
            failureProbability7d modelVersion }
      anomalies { anomalyId timestamp sensorId type severity anomalyScore value reason source }
    }
  }
}"""


def test_a_machines_history_holds_its_states_rul_and_anomalies_in_the_range(
    api: LiveApi, seeded: Seeded
) -> None:
    machine = seeded.machine.id
    start, end = iso(T0), iso(T0 + timedelta(hours=3))
    status, body = api.get(f"/api/v1/assets/{machine}/history", start=start, end=end)
    assert status == 200, body
    assert (body["asset_id"], body["start"], body["end"]) == (machine, start, end)
    assert body["states"] == [
        {
            "timestamp": iso(T0 + timedelta(minutes=30 * k)),
            "status": s,
            "health_score": 90.0 - 5 * k,
            "active_anomalies": k,
        }
        for k, s in enumerate(["running", "running", "warning", "critical"])
    ]
    assert [
        (r["timestamp"], r["median_hours"], r["failure_probability_7d"]) for r in body["rul"]
    ] == [
        (iso(T0 + timedelta(minutes=15)), 400.0, 0.02),
        (iso(T0 + timedelta(minutes=75)), 300.0, None),
    ]
    assert body["rul"][0] == {
        "timestamp": iso(T0 + timedelta(minutes=15)),
        "component": "bearing",
        "failure_mode": "bearing_wear",
        "median_hours": 400.0,
        "lower_hours": 250.0,
        "upper_hours": 600.0,
        "failure_probability_7d": 0.02,
        "model_version": "cox-1",
    }
    assert [a["anomaly_id"] for a in body["anomalies"]] == ["A-inside", "A-other-sensor", "A-last"]
    assert body["anomalies"][0] == {
        "anomaly_id": "A-inside",
        "timestamp": iso(seeded.anomalies["A-inside"]),
        "sensor_id": seeded.sensor_id,
        "type": "threshold",
        "severity": "high",
        "anomaly_score": 0.9,
        "value": 7.5,
        "reason": "above normal",
        "source": "twin",
    }

    answer = api.graphql(HISTORY_QUERY, {"id": machine, "start": start, "end": end})
    assert "errors" not in answer, answer
    assert snake(answer["data"]["asset"]["history"]) == body

    # the other machine has its own anomaly only
    status, other = api.get(f"/api/v1/assets/{seeded.other.id}/history", start=start, end=end)
    assert status == 200
    assert [a["anomaly_id"] for a in other["anomalies"]] == ["A-other-machine"]
    assert other["states"] == other["rul"] == []


def test_a_machines_sensors_are_listed_with_their_units(api: LiveApi, seeded: Seeded) -> None:
    answer = api.graphql(
        "query ($id: ID!) { asset(id: $id) { sensors { id name type unit samplePeriodS } "
        'sensor(name: "no-such") { id } } }',
        {"id": seeded.machine.id},
    )
    asset = answer["data"]["asset"]
    assert asset["sensor"] is None
    assert asset["sensors"] == [
        {
            "id": f"{seeded.machine.id}.{s.name}",
            "name": s.name,
            "type": s.kind.value,
            "unit": s.unit,
            "samplePeriodS": s.sample_period_s,
        }
        for s in seeded.machine.sensors
    ]


# -- refusals ---------------------------------------------------------------------------------
def error_of(api: LiveApi, path: str, token: str | None = "viewer", **params: str) -> Any:
    status, body = api.get(path, token, **params)
    return status, body["error"].get("code"), body["error"].get("field"), body["error"]["message"]


def test_bad_requests_are_refused_with_the_field_at_fault(api: LiveApi, seeded: Seeded) -> None:
    series = f"/api/v1/sensors/{seeded.sensor_id}/timeseries"
    history = f"/api/v1/assets/{seeded.machine.id}/history"
    start, end = iso(T0), iso(T0 + timedelta(hours=1))

    status, code, where, message = error_of(api, "/api/v1/sensors/M-nope.rpm/timeseries")
    assert (status, code, where) == (404, "not_found", "sensor_id") and "M-nope.rpm" in message
    assert error_of(api, "/api/v1/assets/M-nope/history")[:3] == (404, "not_found", "asset_id")

    assert error_of(api, series, start=end, end=start)[:3] == (422, "invalid_request", "end")
    assert error_of(api, series, start=start, end=start)[:3] == (422, "invalid_request", "end")
    assert error_of(api, history, start=end, end=start)[:3] == (422, "invalid_request", "end")
    status, code, where, message = error_of(api, series, aggregation="5m")
    assert (status, where) == (422, "aggregation") and "raw, 1m, 1h, auto" in message
    status, code, where, message = error_of(api, series, start="2026-11-02T00:00:00")
    assert (status, where) == (422, "start") and "no time zone" in message
    assert error_of(api, history, end="2026-11-02T00:00:00")[:3] == (422, "invalid_request", "end")
    status, code, where, message = error_of(api, series, start="yesterday")
    assert (status, where) == (422, "start") and "not an ISO 8601 time" in message
    # a '+' left unencoded in a URL arrives as a space: the message says how to write it
    status, body = api.get(series + "?start=2026-11-02T00:00:00+01:00")
    assert status == 422 and "%2B" in body["error"]["message"]

    assert error_of(api, series, token=None)[:2] == (401, "unauthorized")
    assert error_of(api, history, token="not-a-jwt")[:2] == (401, "unauthorized")
    gateway = api.token(Role.GATEWAY, gateway_id="gw-1", sites=[seeded.machine.site])
    assert error_of(api, series, token=gateway)[:2] == (403, "forbidden")
    assert error_of(api, history, token=gateway)[:2] == (403, "forbidden")

    # GraphQL: the same refusals, as errors with the message
    name = seeded.machine.sensors[0].name

    def gql_errors(args: str, on_asset: bool = False) -> list[Any]:
        field = (
            f"history({args}) {{ start }}"
            if on_asset
            else f'sensor(name: "{name}") {{ timeseries({args}) {{ dataPoints }} }}'
        )
        return api.graphql(f'{{ asset(id: "{seeded.machine.id}") {{ {field} }} }}')["errors"]

    [error] = gql_errors(f'start: "{end}", end: "{start}"')
    assert error["extensions"] == {"code": "invalid_request", "field": "end"}
    assert "must be after start" in error["message"]
    [error] = gql_errors('aggregation: "5m"')
    assert error["extensions"]["field"] == "aggregation"
    [error] = gql_errors('start: "2026-11-02T00:00:00"')
    assert error["extensions"]["field"] == "start" and "no time zone" in error["message"]
    [error] = gql_errors('start: "yesterday"')
    assert "DateTime" in error["message"]
    [error] = gql_errors(f'start: "{end}", end: "{start}"', on_asset=True)
    assert error["extensions"]["field"] == "end"
    status, body = api._request(
        "POST", "/graphql", {"query": '{ asset(id: "x") { id } }'}, token=None
    )
    assert status == 401


def test_a_raw_range_over_the_limit_is_413(api: LiveApi, database: str, seeded: Seeded) -> None:
    from store.queries import MAX_RAW_POINTS

    day = T0 + timedelta(days=1)
    with psycopg.connect(database) as conn, conn.transaction():
        key = sensor_keys(conn, [seeded.sensor_id])[seeded.sensor_id]
        Partitions().ensure(conn, "readings", [day])
        conn.execute(
            "INSERT INTO readings (ts, sensor_key, value, quality) SELECT t, %s, 1.0, 0 "
            "FROM generate_series(%s::timestamptz, %s::timestamptz - interval '1 ms', "
            "interval '20 ms') AS t",
            (key, day, day + timedelta(hours=2)),
        )
    assert MAX_RAW_POINTS < 2 * 3600 * 50  # one every 20 ms
    status, code, where, message = error_of(
        api,
        f"/api/v1/sensors/{seeded.sensor_id}/timeseries",
        start=iso(day),
        end=iso(day + timedelta(hours=2)),
    )
    assert (status, code, where) == (413, "range_too_large", "aggregation")
    assert "1m, 1h or auto" in message
    # a rollup of the same range is fine
    body = timeseries(
        api, seeded.sensor_id, start=iso(day), end=iso(day + timedelta(hours=2)), aggregation="1m"
    )
    assert body["data_points"] == 0 and body["statistics"]["count"] == 0


def test_without_a_database_the_history_is_503(nats_server: NatsServer) -> None:
    machine = small_plant().machines[0]
    with LiveApi(settings(nats_server.url, None), [machine]) as api:
        sensor = f"{machine.id}.{machine.sensors[0].name}"
        for path in (
            f"/api/v1/sensors/{sensor}/timeseries",
            f"/api/v1/assets/{machine.id}/history",
        ):
            assert error_of(api, path) == (503, "unavailable", None, NO_DATABASE)
        answer = api.graphql(
            "query ($id: ID!) { asset(id: $id) { history { start } "
            "sensors { timeseries { dataPoints } } } }",
            {"id": machine.id},
        )
        assert {e["message"] for e in answer["errors"]} == {NO_DATABASE}
        assert api.get("/api/v1/health", token=None)[1]["history_database"] is False


def test_a_start_in_a_half_hour_zone_reads_the_whole_compacted_hour(
    database: str, seeded: Seeded
) -> None:
    """store.queries itself, called with a zone that is not whole hours off UTC (the API
    hands it UTC times). Compacted blocks are keyed by UTC hour: 07:15+05:30 is 01:45Z,
    in the block of 01:00Z. (This belongs with the store's tests.)"""
    from store import queries

    india = timezone(timedelta(hours=5, minutes=30))
    start = (T0 + timedelta(minutes=105)).astimezone(india)
    end = (T0 + timedelta(minutes=120)).astimezone(india)

    async def ask() -> dict[str, Any]:
        async with await psycopg.AsyncConnection.connect(database) as conn:
            return await queries.timeseries(conn, seeded.sensor_id, start, end, "raw")

    assert asyncio.run(ask())["data"] == seeded.readings(range(105, 120))


def test_a_database_that_does_not_answer_is_503(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api import history

    monkeypatch.setattr(history, "WAIT_S", 0.5)
    machine = small_plant().machines[0]
    nowhere = f"postgresql://twinfleet@127.0.0.1:{free_port()}/history?connect_timeout=1"
    with LiveApi(settings(nats_server.url, nowhere), [machine]) as api:
        status, code, _, message = error_of(api, f"/api/v1/assets/{machine.id}/history")
        assert (status, code) == (503, "unavailable") and "not answering" in message
        assert api.get("/api/v1/health", token=None)[0] == 200  # the rest of the API is up


MODEL_ACCURACY = """query($days: Float) { modelAccuracy(days: $days) { modelVersion machineType
  predictions failures intervalCoverage medianAbsErrorHours concordance
  brier { horizonHours brier knownOutcomes }
  calibration { horizonHours low high count meanPredicted observedRate }
  weekAhead { machineId failedAt pFail7d } } }"""


def test_model_accuracy_is_served_from_the_recorded_outcomes(
    api: LiveApi, database: str, seeded: Seeded
) -> None:
    from tests.store.test_accuracy_store import seed as seed_outcomes

    seed_outcomes(database)  # P-1 fails at 1,000 h; predictions of model v1 around it
    body = api.graphql(MODEL_ACCURACY)
    assert "errors" not in body, body
    [v1] = [m for m in body["data"]["modelAccuracy"] if m["modelVersion"] == "v1"]
    assert (v1["machineType"], v1["predictions"], v1["failures"]) == ("pump-75kw", 4, 1)
    assert v1["intervalCoverage"] == 0.5 and v1["medianAbsErrorHours"] == 125.0
    assert {
        "horizonHours": 168,
        "brier": pytest.approx((0.04 + 0.81 + 0.0025) / 3),
        "knownOutcomes": 3,
    } in v1["brier"]
    assert v1["weekAhead"] == [
        {"machineId": "P-1", "failedAt": "2026-02-11T16:00:00.000Z", "pFail7d": 0.2}
    ]
    # a bad window is refused with a clear message; a viewer may read, nobody unauthenticated
    refused = api.graphql(MODEL_ACCURACY, {"days": -1})
    assert refused["errors"][0]["message"] == "days: must be above 0 and at most 3650"
    status, _ = api._request("POST", "/graphql", {"query": MODEL_ACCURACY}, None)
    assert status == 401
