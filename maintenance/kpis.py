"""Alarm-management KPIs (ISA-18.2, EEMUA 191) from an alert log (pure).

Over a period ``[start, end)``, from the alerts raised in it (``first_raised_at``):

* alerts raised per site per hour (the average over the period) and for the plant;
* the peak: most alerts raised in any 10 minutes (the window slides; per site and plant);
* the share by priority (severity) of the alerts raised;
* standing alerts: open at ``end`` (not closed, or closed after ``end``) and raised more
  than 24 hours before it, whenever that was (per site and plant);
* the top bad actors: sources by alerts raised, then by the repeats those counted. A
  source is ``machine.sensor`` for an anomaly or threshold alert on a sensor, else
  ``machine/subject`` (the failure mode, the work order; the rule when it has none).

EEMUA 191's benchmarks, printed beside the figures by :meth:`AlarmKpis.lines`: about one
alert per 10 minutes (6 per hour) per operator is manageable, and no more than 10 in the 10
minutes after an upset.

>>> from datetime import UTC, datetime, timedelta
>>> from schemas.alerts import Alert
>>> t0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
>>> def alert(i, minutes, severity="low"):
...     at = t0 + timedelta(minutes=minutes)
...     return Alert(alert_id=f"AL-{i:016x}", machine_id="P-201", rule_id="anomaly",
...         kind="anomaly", subject="vibration", severity=severity, message="m",
...         first_raised_at=at, last_raised_at=at)
>>> k = alarm_kpis([alert(1, 0), alert(2, 5, "high"), alert(3, 30)], {"P-201": "north"},
...     t0, t0 + timedelta(hours=1))
>>> k.raised, k.per_hour, k.peak_10min, [b.source for b in k.bad_actors]
(3, 3.0, 2, ['P-201.vibration'])
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from schemas.alerts import Alert, RuleKind
from schemas.anomaly import Severity
from schemas.maintenance_api import (
    AlarmKpis,
    BadActor,
    SeverityShare,
    SiteAlarmKpis,
)

PEAK_WINDOW = timedelta(minutes=10)
STANDING_AFTER = timedelta(hours=24)
TOP_BAD_ACTORS = 10
UNKNOWN_SITE = "unknown"
_SENSOR_KINDS = (RuleKind.ANOMALY, RuleKind.THRESHOLD)


def source(alert: Alert) -> str:
    """Where an alert comes from: ``machine.sensor`` or ``machine/subject``."""
    if alert.kind in _SENSOR_KINDS and alert.subject and alert.subject != "machine":
        return f"{alert.machine_id}.{alert.subject}"
    return f"{alert.machine_id}/{alert.subject or alert.rule_id}"


def peak(times: list[datetime], window: timedelta = PEAK_WINDOW) -> tuple[int, datetime | None]:
    """The most ``times`` in any ``[t, t + window)``, and the earliest such ``t`` (one of
    the times: a window holding the most always starts at one)."""
    ordered = sorted(times)
    best, at, lo = 0, None, 0
    for hi, t in enumerate(ordered):
        while t - ordered[lo] >= window:
            lo += 1
        if hi - lo + 1 > best:
            best, at = hi - lo + 1, ordered[lo]
    return best, at


def standing(alert: Alert, end: datetime, older_than: timedelta = STANDING_AFTER) -> bool:
    """Open at ``end`` and raised more than ``older_than`` before it."""
    open_at_end = not alert.status.closed or (
        alert.resolved_at is not None and alert.resolved_at > end
    )
    return open_at_end and alert.first_raised_at < end - older_than


def alarm_kpis(
    alerts: Iterable[Alert],
    site_of: Mapping[str, str],
    start: datetime,
    end: datetime,
    *,
    top: int = TOP_BAD_ACTORS,
) -> AlarmKpis:
    """The KPIs of the alerts raised in ``[start, end)`` (``site_of``: machine -> site;
    a machine it does not know counts under ``unknown``)."""
    if not start < end:
        raise ValueError(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")
    log = list(alerts)
    raised = [a for a in log if start <= a.first_raised_at < end]
    hours = (end - start).total_seconds() / 3600

    def site(a: Alert) -> str:
        return site_of.get(a.machine_id, UNKNOWN_SITE)

    by_site: dict[str, list[Alert]] = defaultdict(list)
    for a in raised:
        by_site[site(a)].append(a)
    standing_by_site = Counter(site(a) for a in log if standing(a, end))
    sites = []
    for site_id in sorted(set(site_of.values()) | set(by_site) | set(standing_by_site)):
        mine = by_site.get(site_id, [])
        site_peak, site_peak_at = peak([a.first_raised_at for a in mine])
        sites.append(
            SiteAlarmKpis(
                site_id=site_id,
                raised=len(mine),
                per_hour=len(mine) / hours,
                peak_10min=site_peak,
                peak_10min_at=site_peak_at,
                standing_24h=standing_by_site[site_id],
            )
        )
    severities = Counter(a.severity for a in raised)
    order = sorted(Severity, key=lambda s: s.rank, reverse=True)
    shares = [
        SeverityShare(
            severity=s, raised=severities[s], share=severities[s] / len(raised) if raised else 0.0
        )
        for s in order
    ]
    actors: dict[str, list[Alert]] = defaultdict(list)
    for a in raised:
        actors[source(a)].append(a)
    ranked = sorted(
        actors.items(),
        key=lambda item: (-len(item[1]), -sum(a.count - 1 for a in item[1]), item[0]),
    )
    bad = [
        BadActor(
            source=name,
            machine_id=items[0].machine_id,
            site_id=site(items[0]),
            raised=len(items),
            repeats=sum(a.count - 1 for a in items),
        )
        for name, items in ranked[:top]
    ]
    plant_peak, plant_peak_at = peak([a.first_raised_at for a in raised])
    return AlarmKpis(
        start=start,
        end=end,
        hours=hours,
        raised=len(raised),
        per_hour=len(raised) / hours,
        peak_10min=plant_peak,
        peak_10min_at=plant_peak_at,
        by_severity=shares,
        sites=sites,
        standing_24h=sum(standing_by_site.values()),
        bad_actors=bad,
    )
