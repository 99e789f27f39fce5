"""Read what live accuracy needs from the history: stored RUL predictions and the lives
they were made in (:mod:`twins.accuracy` scores them).

A machine's lives are cut at its completed work orders. A **corrective** order ends a
life in a failure at the time the failure was reported (the order's ``created_at``); any
other completed order (predictive, preventive, inspection) ends it censored, the machine
repaired before it failed. The next life starts when the work was completed. The life
still running is censored at the machine's last data (its last hourly rollup or its last
prediction, whichever is later).
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from typing import Any

from twins.accuracy import Accuracy, Life, Prediction, pair, summarise

_PREDICTIONS = """
SELECT p.asset_id, a.type, p.model_version, p.predicted_at, p.median_hours, p.lower_hours,
       p.upper_hours, p.p_fail_7d, p.record -> 'failure_probability'
FROM rul_predictions p JOIN assets a USING (asset_id)
WHERE p.predicted_at >= %(since)s
ORDER BY p.asset_id, p.predicted_at
"""
_ORDERS = """
SELECT asset_id, type, failure_mode, created_at, completed_at FROM work_orders
WHERE status = 'completed' AND completed_at IS NOT NULL
ORDER BY asset_id, completed_at
"""
_LAST_DATA = """
SELECT asset_id, max(at) FROM (
    SELECT s.asset_id, max(r.bucket) + interval '1 hour' AS at
    FROM rollup_1h r JOIN sensors s USING (sensor_key) GROUP BY s.asset_id
    UNION ALL
    SELECT asset_id, max(predicted_at) FROM rul_predictions GROUP BY asset_id
) seen GROUP BY asset_id
"""
_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


def _ms(at: datetime) -> int:
    return round(at.timestamp() * 1000)


def lives(
    orders: list[tuple[str, str, str | None, datetime, datetime]],
    last_data: dict[str, datetime],
) -> list[Life]:
    """Cut each machine's time at its completed orders (rows of ``_ORDERS``)."""
    by_machine: dict[str, list[tuple[str, str | None, datetime, datetime]]] = defaultdict(list)
    for machine, kind, mode, created, completed in orders:
        by_machine[machine].append((kind, mode, created, completed))
    out = []
    for machine in sorted(set(by_machine) | set(last_data)):
        start = 0
        for kind, mode, created, completed in by_machine.get(machine, []):
            failed = kind == "corrective"
            end = _ms(created if failed else completed)
            if end >= start:
                out.append(Life(machine, start, end, failed=failed, failure_mode=mode))
            start = max(start, _ms(completed))
        seen = last_data.get(machine)
        if seen is not None and _ms(seen) > start:
            out.append(Life(machine, start, _ms(seen), failed=False))
    return out


async def live_accuracy(conn: Any, since: datetime | None = None) -> list[Accuracy]:
    """Accuracy of every model version on every machine type, from predictions made at or
    after ``since`` (all when None)."""
    async with conn.cursor() as cur:
        await cur.execute(_PREDICTIONS, {"since": since or _EPOCH})
        rows = await cur.fetchall()
        await cur.execute(_ORDERS)
        orders = await cur.fetchall()
        await cur.execute(_LAST_DATA)
        last_data = dict(await cur.fetchall())
    predictions = []
    for machine, mtype, version, at, median, lower, upper, p7, probs in rows:
        if isinstance(probs, str):
            probs = json.loads(probs)
        curve = {int(h): float(p) for h, p in (probs or {}).items()}
        if p7 is not None:
            curve.setdefault(168, float(p7))
        predictions.append(
            Prediction(machine, mtype, version, _ms(at), median, lower, upper, curve)
        )
    return summarise(pair(predictions, lives(orders, last_data)))
