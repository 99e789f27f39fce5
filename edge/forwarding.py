"""What the gateway forwards: aggregates of normal data, full resolution around anomalies.

In ``aggregates`` mode every value goes into its sensor's current window (1 minute by
default) and the hub gets one row per sensor and window (avg, min, max, population std,
count) when the window closes. Raw values are forwarded only around edge anomalies: the
gateway keeps the last ``context_s`` of each machine's values, and an anomaly on a machine
sends those and every value of that machine for ``context_s`` after it. In ``everything``
mode every value is forwarded raw (aggregates are still made: they are cheap and give the
hub its rollups).

A window closes when a later value of the same sensor arrives past its end, or at
:meth:`Forwarder.flush` once the clock is past its end plus ``grace_ms`` (a sensor that
went quiet). Pure: no clock of its own, no I/O.

>>> from drivers.base import FieldValue
>>> fw = Forwarder(mode="aggregates", window_s=60, context_s=10)
>>> out = fw.add([FieldValue("M-1", "t", float(v), 60_000 * 1000 + i * 1000)
...               for i, v in enumerate([1, 2, 3])], [])
>>> out.readings, out.aggregates
([], [])
>>> out = fw.flush(now_ms=60_000 * 1000 + 200_000)
>>> [(a.sensor_id, a.avg, a.min, a.max, a.count) for a in out.aggregates]
[('M-1.t', 2.0, 1.0, 3.0, 3)]
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from drivers.base import FieldValue
from schemas.common import Quality
from schemas.telemetry import EdgeAnomaly


@dataclass(frozen=True, slots=True)
class Aggregate:
    machine_id: str
    sensor_id: str
    window_start: int
    avg: float
    min: float
    max: float
    std: float
    count: int


@dataclass(slots=True)
class _Window:
    start: int
    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    def add(self, x: float) -> None:  # Welford: one pass, numerically stable
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)
        self.low = min(self.low, x)
        self.high = max(self.high, x)


@dataclass(slots=True)
class Forwarded:
    readings: list[FieldValue] = field(default_factory=list)
    aggregates: list[Aggregate] = field(default_factory=list)


class Forwarder:
    def __init__(
        self,
        mode: Literal["aggregates", "everything"] = "aggregates",
        window_s: float = 60.0,
        context_s: float = 60.0,
        grace_ms: int = 5_000,
    ) -> None:
        if mode not in ("aggregates", "everything"):
            raise ValueError(f"mode must be 'aggregates' or 'everything', got {mode!r}")
        self.mode = mode
        self.window_ms = int(window_s * 1000)
        self.context_ms = int(context_s * 1000)
        self.grace_ms = grace_ms
        self._windows: dict[tuple[str, str], _Window] = {}
        self._recent: dict[str, deque[FieldValue]] = {}
        self._raw_until: dict[str, int] = {}

    def add(self, values: list[FieldValue], anomalies: list[EdgeAnomaly]) -> Forwarded:
        """Take validated values (in arrival order) and the anomalies found in them."""
        out = Forwarded()
        self._aggregate(values, out.aggregates)
        if self.mode == "everything":
            out.readings = list(values)
        else:
            self._around_anomalies(values, anomalies, out.readings)
        return out

    def flush(self, now_ms: int) -> Forwarded:
        """Close every window whose end (plus the grace) is before ``now_ms``."""
        out = Forwarded()
        for key in [
            k
            for k, w in self._windows.items()
            if w.start + self.window_ms + self.grace_ms <= now_ms
        ]:
            out.aggregates.append(self._close(key, self._windows.pop(key)))
        return out

    def close_all(self) -> Forwarded:
        """Close every open window (the gateway is stopping)."""
        out = Forwarded(aggregates=[self._close(k, w) for k, w in self._windows.items()])
        self._windows.clear()
        return out

    def _aggregate(self, values: list[FieldValue], closed: list[Aggregate]) -> None:
        width = self.window_ms
        for v in values:
            if v.quality is Quality.BAD:  # not a measurement: forwarded raw, not averaged
                continue
            key = (v.machine_id, v.sensor)
            start = v.timestamp_ms - v.timestamp_ms % width
            w = self._windows.get(key)
            if w is None or w.start != start:
                if w is not None:
                    if start < w.start:  # late value for a closed window: count it in
                        start = w.start  # the open one rather than reopen the past
                    else:
                        closed.append(self._close(key, w))
                        w = None
                if w is None:
                    w = self._windows[key] = _Window(start)
            w.add(v.value)

    def _close(self, key: tuple[str, str], w: _Window) -> Aggregate:
        machine_id, sensor = key
        std = math.sqrt(w.m2 / w.count) if w.count else 0.0
        mean = min(max(w.mean, w.low), w.high)  # rounding may step just outside
        return Aggregate(
            machine_id, f"{machine_id}.{sensor}", w.start, mean, w.low, w.high, std, w.count
        )

    def _around_anomalies(
        self, values: list[FieldValue], anomalies: list[EdgeAnomaly], raw: list[FieldValue]
    ) -> None:
        keep = self.context_ms
        first_alarm: dict[str, int] = {}
        for a in anomalies:
            t = first_alarm.get(a.machine_id)
            first_alarm[a.machine_id] = a.timestamp if t is None else min(t, a.timestamp)
        for machine, t in first_alarm.items():
            recent = self._recent.get(machine)
            already = self._raw_until.get(machine, -1)
            if recent:  # the context before the anomaly, not sent yet
                raw.extend(
                    r for r in recent if r.timestamp_ms >= t - keep and r.timestamp_ms > already
                )
                recent.clear()
            self._raw_until[machine] = max(already, t + keep)
        for v in values:
            until = self._raw_until.get(v.machine_id)
            if until is not None and v.timestamp_ms <= until:
                alarm = first_alarm.get(v.machine_id)  # this batch's, if any
                if alarm is None or v.timestamp_ms >= alarm - keep:
                    raw.append(v)
                continue
            recent = self._recent.get(v.machine_id)
            if recent is None:
                recent = self._recent[v.machine_id] = deque()
            recent.append(v)
            while recent and recent[0].timestamp_ms < v.timestamp_ms - keep:
                recent.popleft()
