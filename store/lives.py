"""Machine lives recorded in the history, for training the survival model.

Completed work orders cut each machine's record into lives: a life runs from the
machine's first hour of data (or the previous completed repair) to the next completed
repair, or to its latest data (still running). A life that ended in a **corrective**
order naming a failure mode ended in that failure; one that ended in a predictive,
preventive or inspection order was repaired before it failed, and counts, like the life
still running, as censored (it had not failed when observation stopped).

The result has the columns of ``twinfleet train --histories`` (:mod:`twinfleet.histories`):
``unit`` (``<machine>#<n>``), ``hours`` (operating hours since the part was new:
the machine's ``installed_hours`` in its first life), ``failure_mode`` (empty when
censored) and one column per sensor: its hourly mean from ``rollup_1h``. So::

    twinfleet lives --type pump-75kw --out pumps.csv
    twinfleet train --type pump-75kw --histories pumps.csv

trains on what the plant itself recorded, repairs included.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd

from schemas.plant import MachineSpec

_HOURLY = """
SELECT s.name, r.bucket, r.mean
FROM rollup_1h r JOIN sensors s USING (sensor_key)
WHERE s.asset_id = %s AND r.mean IS NOT NULL
ORDER BY r.bucket
"""
_REPAIRS = """
SELECT completed_at, type, failure_mode FROM work_orders
WHERE asset_id = %s AND status = 'completed' AND completed_at IS NOT NULL
ORDER BY completed_at
"""


async def recorded_lives(conn: Any, machines: list[MachineSpec]) -> pd.DataFrame:
    """The lives of ``machines`` (one machine type: the same sensors) as a frame."""
    names = sorted({s.name for m in machines for s in m.sensors})
    frames = []
    for spec in machines:
        async with conn.cursor() as cur:
            await cur.execute(_HOURLY, (spec.id,))
            hourly = await cur.fetchall()
            await cur.execute(_REPAIRS, (spec.id,))
            repairs = await cur.fetchall()
        if not hourly:
            continue
        wide = (
            pd.DataFrame(hourly, columns=["name", "bucket", "mean"])
            .pivot_table(index="bucket", columns="name", values="mean")
            .reindex(columns=names)
        )
        frames.extend(_cut(spec, wide, repairs))
    columns = ["unit", "hours", "failure_mode", *names]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


def _cut(
    spec: MachineSpec, wide: pd.DataFrame, repairs: list[tuple[datetime, str, str | None]]
) -> list[pd.DataFrame]:
    out = []
    start = wide.index[0]
    base = spec.installed_hours
    ends: list[tuple[datetime | None, str]] = [
        (at, (mode or "") if kind == "corrective" else "") for at, kind, mode in repairs
    ]
    ends.append((None, ""))  # the life still running
    for n, (end, failed) in enumerate(ends):
        rows = wide[(wide.index >= start) & ((wide.index < end) if end is not None else True)]
        if len(rows):
            hours = base + (rows.index - start).total_seconds() / 3600 + 1  # the hour's end
            life = rows.reset_index(drop=True)
            life.insert(0, "failure_mode", failed)
            life.insert(0, "hours", hours.to_numpy())
            life.insert(0, "unit", f"{spec.id}#{n}")
            out.append(life)
        if end is not None:
            start, base = end, 0.0
    return out
