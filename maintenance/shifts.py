"""A technician's on-shift intervals over a planning horizon, in hours from its start.

A :class:`schemas.maintenance.Shift` is written in the local wall-clock time of the site
(``"06:00"`` to ``"14:00"`` on the listed days, 0 = Monday). A shift whose end is not
after its start (``"22:00"`` to ``"06:00"``, or ``"06:00"`` to ``"06:00"`` for 24 hours)
ends on the next day; the day listed is the day it starts. Wall-clock times become
instants through :mod:`zoneinfo`, so a night shift across the spring DST change is an
hour shorter and one across the autumn change an hour longer. A start inside the spring
gap (02:30 on the changeover night in Europe) is read with the offset in force before the
gap (it starts at 03:30 summer time); an ambiguous time in the autumn is the first one.

>>> from datetime import UTC, datetime
>>> from schemas.maintenance import Shift
>>> monday = datetime(2026, 3, 23, tzinfo=UTC)  # Berlin is at +01:00 until Sunday the 29th
>>> shift_intervals(Shift(start="06:00", end="14:00", days=[0, 1]), "Europe/Berlin", monday, 48)
((5.0, 13.0), (29.0, 37.0))

The night from Saturday 28 to Sunday 29 March 2026 loses an hour in Berlin: the shift
from 22:00 (21:00 UTC) to 06:00 (04:00 UTC) lasts 7 hours.

>>> shift_intervals(Shift(start="22:00", end="06:00", days=[5]), "Europe/Berlin", monday, 168)
((141.0, 148.0),)
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schemas.maintenance import Shift

__all__ = ["shift_hours", "shift_intervals"]


def _wall_time(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def shift_hours(shift: Shift) -> float:
    """How long one of its shifts lasts (hours; one that ends when it starts lasts 24).

    >>> night, all_day = Shift(start="22:00", end="06:00"), Shift(start="00:00", end="00:00")
    >>> shift_hours(night), shift_hours(all_day)
    (8.0, 24.0)
    """
    on, off = (_wall_time(t) for t in (shift.start, shift.end))
    minutes = (off.hour * 60 + off.minute - on.hour * 60 - on.minute) % 1440
    return (minutes or 1440) / 60


def shift_intervals(
    shift: Shift, timezone: str, start: datetime, horizon_h: float
) -> tuple[tuple[float, float], ...]:
    """The on-shift intervals within ``[start, start + horizon_h)``, in hours from ``start``.

    ``start`` must be timezone-aware; ``timezone`` is the site's IANA zone name. Intervals
    are clipped to the horizon (a shift that began before ``start`` contributes its
    remainder), empty ones are dropped, and the result is sorted.
    """
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError("start must be a timezone-aware datetime")
    if not math.isfinite(horizon_h) or horizon_h < 0:
        raise ValueError(f"horizon_h must be a finite number >= 0, got {horizon_h!r}")
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {timezone!r}") from None
    begin = start.astimezone(UTC)
    finish = begin + timedelta(hours=horizon_h)
    on, off = _wall_time(shift.start), _wall_time(shift.end)
    crosses_midnight = off <= on
    days = set(shift.days)

    out: list[tuple[float, float]] = []
    day = begin.astimezone(zone).date() - timedelta(days=1)  # a shift from the day before
    last = finish.astimezone(zone).date()
    while day <= last:
        if day.weekday() in days:
            local_on = datetime.combine(day, on, tzinfo=zone)
            end_day = day + timedelta(days=1) if crosses_midnight else day
            local_off = datetime.combine(end_day, off, tzinfo=zone)
            # Aware datetimes subtract in absolute time, so DST changes are respected.
            a = max((local_on.astimezone(UTC) - begin).total_seconds() / 3600, 0.0)
            b = min((local_off.astimezone(UTC) - begin).total_seconds() / 3600, horizon_h)
            if b > a:
                out.append((a, b))
        day += timedelta(days=1)
    return tuple(sorted(out))
