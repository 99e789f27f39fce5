"""Assets, sensors and technicians from the plant file, written idempotently.

Sensors get an integer key on first registration (``sensors.sensor_key``), which is what
readings, blocks and rollups carry. Registering the same plant again changes nothing but
names, units and specs that were edited; a sensor keeps its key.
"""

from __future__ import annotations

from typing import Any

from schemas.plant import Plant


def register_plant(conn: Any, plant: Plant) -> int:
    """Upsert every machine, its sensors and the technicians; returns sensors registered.
    One transaction (synchronous psycopg connection)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO assets (asset_id, name, type, kind, site_id, line_id, critical, spec) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (asset_id) DO UPDATE SET "
            "name = EXCLUDED.name, type = EXCLUDED.type, kind = EXCLUDED.kind, "
            "site_id = EXCLUDED.site_id, line_id = EXCLUDED.line_id, "
            "critical = EXCLUDED.critical, spec = EXCLUDED.spec, updated_at = now()",
            [
                (
                    m.id,
                    m.name,
                    m.type,
                    m.kind.value,
                    m.site,
                    m.line,
                    m.critical,
                    m.model_dump_json(),
                )
                for m in plant.machines
            ],
        )
        rows = [
            (f"{m.id}.{s.name}", m.id, s.name, s.kind.value, s.unit, s.sample_period_s)
            for m in plant.machines
            for s in m.sensors
        ]
        cur.executemany(
            "INSERT INTO sensors (sensor_id, asset_id, name, kind, unit, sample_period_s) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (sensor_id) DO UPDATE SET "
            "name = EXCLUDED.name, kind = EXCLUDED.kind, unit = EXCLUDED.unit, "
            "sample_period_s = EXCLUDED.sample_period_s",
            rows,
        )
        cur.executemany(
            "INSERT INTO technicians (technician_id, name, skills, site_id, record) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (technician_id) DO UPDATE SET "
            "name = EXCLUDED.name, skills = EXCLUDED.skills, site_id = EXCLUDED.site_id, "
            "record = EXCLUDED.record",
            [(t.id, t.name, t.skills, t.site_id, t.model_dump_json()) for t in plant.technicians],
        )
    return len(rows)


def sensor_keys(conn: Any, sensor_ids: list[str] | None = None) -> dict[str, int]:
    """``sensor_id -> sensor_key``, for all sensors or the given ids."""
    if sensor_ids is None:
        rows = conn.execute("SELECT sensor_id, sensor_key FROM sensors").fetchall()
    else:
        rows = conn.execute(
            "SELECT sensor_id, sensor_key FROM sensors WHERE sensor_id = ANY(%s)", (sensor_ids,)
        ).fetchall()
    return dict(rows)
