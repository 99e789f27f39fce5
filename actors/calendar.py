"""The calendar the planner works within, in UTC: every technician's shifts and every
line's maintenance windows over a horizon (each in its site's time zone, through
:func:`maintenance.shifts.shift_intervals`). The maintenance service answers it on
``tf.maintenance.calendar``; the dashboard draws it behind the plan's Gantt chart.

>>> from datetime import UTC, datetime
>>> from schemas.plant import load_plant
>>> from twinfleet.cli import _example_plant_path
>>> plant = load_plant(_example_plant_path())
>>> monday = datetime(2026, 3, 23, tzinfo=UTC)
>>> calendar = plan_calendar(plant, monday, 48)
>>> ana = calendar.technicians[0]
>>> ana.technician.name, [(p.start.hour, p.end.hour) for p in ana.on_shift]
('Ana Silva', [(6, 14), (6, 14)])
>>> sorted({line.windows is None for line in calendar.lines})
[False, True]
"""

from __future__ import annotations

from datetime import datetime, timedelta

from maintenance.shifts import shift_intervals
from schemas.maintenance import Shift
from schemas.maintenance_api import LineCalendar, Period, PlanCalendar, TechnicianCalendar
from schemas.plant import Plant

__all__ = ["plan_calendar"]


def _periods(shifts: list[Shift], timezone: str, start: datetime, horizon_h: float) -> list[Period]:
    hours = sorted(
        h for shift in shifts for h in shift_intervals(shift, timezone, start, horizon_h)
    )
    return [
        Period(start=start + timedelta(hours=a), end=start + timedelta(hours=b)) for a, b in hours
    ]


def plan_calendar(plant: Plant, start: datetime, horizon_h: float) -> PlanCalendar:
    """Shifts and windows within ``[start, start + horizon_h)``; ``start`` is aware."""
    zones = {site.id: site.timezone for site in plant.sites}
    technicians = [
        TechnicianCalendar(
            technician=t,
            on_shift=_periods([t.shift], zones.get(t.site_id or "", "UTC"), start, horizon_h),
        )
        for t in plant.technicians
    ]
    lines = [
        LineCalendar(
            site_id=site.id,
            line_id=line.id,
            windows=_periods(line.maintenance_windows, site.timezone, start, horizon_h)
            if line.maintenance_windows
            else None,
        )
        for site in plant.sites
        for line in site.lines
    ]
    return PlanCalendar(start=start, horizon_hours=horizon_h, technicians=technicians, lines=lines)
